"""Time the stratified bootstrap behind the report's 95% confidence intervals.

Target (issue 3): 1,000 resamples over 5,000 predictions in under 5 s on 2 cores.
Compared with the obvious loop that calls scikit-learn once per resample.

    python benchmarks/bench_bootstrap.py [--resamples 1000] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def synthetic(n: int, n_classes: int, seed: int = 0):
    """Labels (25% disease for binary), probabilities that separate them, argmax decisions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int) if n_classes == 2 else rng.integers(0, n_classes, n)
    logits = rng.normal(0, 1, (n, n_classes))
    logits[np.arange(n), y] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probabilities, probabilities.argmax(axis=1)


def sklearn_loop(y, probabilities, y_pred, resamples: int, seed: int = 0) -> None:
    """The baseline: draw indices per class, call sklearn for every resample."""
    import numpy as np
    from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(y == label) for label in np.unique(y)]
    for _ in range(resamples):
        index = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
        accuracy_score(y[index], y_pred[index])
        recall_score(y[index], y_pred[index], pos_label=1)
        recall_score(y[index], y_pred[index], pos_label=0)
        roc_auc_score(y[index], probabilities[index, 1])


def best_of(repeats: int, function, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads (cores)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    from cxrkit.evaluation.bootstrap import bootstrap_intervals

    rows = []
    with threadpool_limits(args.threads):
        for n, n_classes in ((1000, 2), (5000, 2), (20000, 2), (5000, 3)):
            y, probabilities, y_pred = synthetic(n, n_classes)
            positive = 1 if n_classes == 2 else None
            classes = [f"c{i}" for i in range(n_classes)]
            seconds = best_of(args.repeats, bootstrap_intervals, y, probabilities, y_pred,
                              classes, positive, args.resamples)
            baseline = ""
            if n_classes == 2 and n <= 5000:
                sample = max(50, args.resamples // 10)
                loop = best_of(1, sklearn_loop, y, probabilities, y_pred, sample)
                baseline = f"{loop * args.resamples / sample:.2f}"
            rows.append((n, n_classes, args.resamples, f"{seconds:.2f}", baseline,
                         "yes" if seconds < 5 else "NO"))
    header = ("predictions", "classes", "resamples", "cxrkit s (best of "
              f"{args.repeats})", "sklearn loop s*", "< 5 s")
    print(f"stratified bootstrap, {args.threads} thread(s), {os.cpu_count()} CPU(s) visible")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print("* sklearn loop: accuracy, sensitivity, specificity and roc_auc_score per resample, "
          f"timed on {max(50, args.resamples // 10)} resamples and scaled to {args.resamples}")
    print("command: python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
