"""Time site calibration and the monitor on large inputs (issue 13).

Targets: the calibration tables (every threshold of the grid, sensitivity/specificity and the
programme figures with 95% CIs, WHO rows, the chosen point on a check part) over 100,000
scores with 1,000 bootstrap resamples in seconds; `cxrkit monitor` reading 1,000,000 logged
requests (PSI/KS drift, rates over time, report) in seconds.

    python benchmarks/bench_calibrate.py [--scores 100000] [--resamples 1000]
                                         [--requests 1000000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path


def synthetic_scores(n: int, seed: int = 0):
    """25% positives; scores that separate them (AUC about 0.85)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.25
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * positive - 1)))
    return positive, scores


def timed(function, *args, **kwargs) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def calibration_tables(n: int, resamples: int) -> None:
    from cxrkit.deployment.calibrate import check_point, choose_site_threshold
    from cxrkit.deployment.tables import threshold_grid, threshold_table, who_rows

    positive, scores = synthetic_scores(n)
    half = n // 2
    point = choose_site_threshold(positive[:half], scores[:half], "sensitivity", 0.9)
    table, _ = threshold_table(positive[:half], scores[:half],
                               threshold_grid(scores[:half], [point["threshold"]]),
                               prevalence=0.05, cost_test=10, n_resamples=resamples)
    who_rows(table)
    check_point(positive[half:], scores[half:], point["threshold"], resamples, 0)


def write_log(path: Path, n: int) -> None:
    """A request log of `n` rows through the server's own schema (RequestLog), bulk-filled."""
    import numpy as np

    from cxrkit.deployment.request_log import RequestLog

    RequestLog(str(path))  # creates the table and indexes
    positive, scores = synthetic_scores(n, seed=1)
    start = 1_700_000_000.0
    times = start + np.sort(np.random.default_rng(2).uniform(0, 30 * 86400, n))
    rows = ((float(t), "tb-fast@0123456789ab", "site:clinic", 0.4, "Tuberculosis", float(s),
             json.dumps({"Normal": 1 - float(s), "Tuberculosis": float(s)}),
             "Tuberculosis" if s >= 0.4 else "Normal", None, None, f"{i:064x}")
            for i, (t, s) in enumerate(zip(times, scores, strict=True)))
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "insert into cxrkit_requests (time, model_id, operating_point, threshold, "
            "positive_class, score, probabilities, decision, ood_flag, ood_score, image_sha256)"
            " values (?,?,?,?,?,?,?,?,?,?,?)", rows)


def write_reference(folder: Path, n: int = 2000) -> Path:
    import pandas as pd

    positive, scores = synthetic_scores(n, seed=3)
    folder.mkdir(parents=True)
    pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "score": scores,
                  "positive": positive, "part": "calibration"}).to_csv(folder / "scores.csv",
                                                                     index=False)
    (folder / "calibration.json").write_text(json.dumps({"site": "clinic"}))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads (cores)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    from cxrkit.deployment.monitor import monitor_log, read_log

    with threadpool_limits(args.threads), tempfile.TemporaryDirectory() as tmp:
        calibration = timed(calibration_tables, args.scores, args.resamples)
        database = Path(tmp) / "requests.sqlite"
        filled = timed(write_log, database, args.requests)
        reading = timed(read_log, str(database))
        reference = write_reference(Path(tmp) / "calibration")
        monitoring = timed(monitor_log, str(database), reference=reference,
                           out_dir=Path(tmp) / "monitor")
    print(f"site calibration and monitor, {args.threads} thread(s), {os.cpu_count()} CPU(s) "
          f"visible, load average {os.getloadavg()[0]:.1f} (wall time inflates with load)")
    print("| what | size | wall s | CPU s |")
    print("|---|---|---|---|")
    for what, size, (wall, cpu, _) in (
            ("calibration tables + WHO rows + check point",
             f"{args.scores:,} scores x {args.resamples:,} resamples", calibration),
            ("monitor: read the log", f"{args.requests:,} requests", reading),
            ("monitor: whole run (read, drift, rates, monitor.html)",
             f"{args.requests:,} requests", monitoring)):
        print(f"| {what} | {size} | {wall:.2f} | {cpu:.2f} |")
    print(f"(filling the log, not a target: {filled[0]:.1f} s; PSI of the synthetic log against "
          f"its reference {monitoring[2]['drift']['psi']:.3f})")
    print("command: python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
