"""Accuracy and wall time of the fast CPU recipes on the real shared data, through the CLI.

Targets (2-core CPU): tb-fast < 15 min with test ROC-AUC >= 0.99; pneumonia-fast < 20 min with
test accuracy >= 0.90 and ROC-AUC >= 0.96 (official Kermany test split).

Run: .venv/bin/python benchmarks/bench_fast_recipes.py [--only tb-fast] [--output-dir runs/bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RECIPES = {
    "tb-fast": (DATA / "tb", {"roc_auc": 0.99}, 15 * 60),
    "pneumonia-fast": (DATA / "pneumonia", {"accuracy": 0.90, "roc_auc": 0.96}, 20 * 60),
    "chest3-fast": (DATA / "chest3.csv", {}, None),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(RECIPES))
    parser.add_argument("--output-dir", default="runs/bench")
    args = parser.parse_args()
    rows = []
    for recipe in args.only or ["tb-fast", "pneumonia-fast"]:
        data, targets, limit = RECIPES[recipe]
        started = time.perf_counter()
        command = [sys.executable, "-m", "cxrkit", "train", "--recipe", recipe, "--data", str(data),
                   "--output-dir", args.output_dir, "--name", recipe, "--overwrite"]
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode:
            print(result.stderr[-2000:], file=sys.stderr)
            return result.returncode
        metrics = json.loads((Path(args.output_dir) / recipe / "test_metrics.json").read_text())
        passed = all(metrics[k] >= v for k, v in targets.items()) and (limit is None or wall < limit)
        rows.append((recipe, wall, metrics, targets, limit, passed))
    print("| recipe | wall time | test accuracy | test ROC-AUC | test balanced acc | target | met |")
    print("|---|---|---|---|---|---|---|")
    for recipe, wall, metrics, targets, limit, passed in rows:
        target = ", ".join(f"{k} >= {v}" for k, v in targets.items())
        target += f", < {limit // 60} min" if limit else ""
        print(f"| {recipe} | {wall / 60:.1f} min | {metrics['accuracy']:.4f} | {metrics['roc_auc']:.4f} | "
              f"{metrics['balanced_accuracy']:.4f} | {target} | {'yes' if passed else 'NO'} |")
    print("reproduce: .venv/bin/python benchmarks/bench_fast_recipes.py " + " ".join(sys.argv[1:]))
    return 0 if all(row[-1] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
