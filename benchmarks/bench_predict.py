"""`cxrkit predict` images/s: this checkout against the code of an earlier commit, same images, same model.

The earlier code is taken from git (`git archive COMMIT src`, into a temporary folder) and runs
from the same virtual environment with PYTHONPATH pointing at it; this checkout's `src` runs
the same way. Both run the real command (`python -m cxrkit predict RUN IMAGES --out CSV`) in
a child process; a figure is the images it wrote over the command's whole wall time (start-up,
model load, decoding, prediction, writing), with the CPU seconds of the command and its worker
processes beside it (steadier than wall time on a shared, busy machine). The two alternate,
`--repeats` times each.

Same outputs: both CSVs are joined on the image path; the benchmark prints the largest
difference of any class probability and the share of identical `predicted` labels, and fails
(exit 1) when a probability differs by more than `--tolerance` or any label differs.

The model is `--run` (a run folder), or a tb-fast run trained here for one short epoch (the
weights do not change the speed). The earlier code reads a copy of its model.ckpt holding only
what that code knew (its preprocessing fields; no OOD reference, no segmenter): the run must not
use the lungs. Today's side reads the run as users have it (with its OOD reference, if any).

"Today" for issue 11 is 2eed703, main when the issue was filed (the scale work branched there).
Run:
  python benchmarks/bench_predict.py --data ../shared/data/tb --images 2000
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "tb"
TODAY_OF_ISSUE_11 = "2eed7039172558ca3975b2319099044aa251a3ad"
OLD_PREPROCESSING = ("image_size", "resize", "channels", "enhancement", "clahe_clip_limit",
                     "clahe_tile_grid", "mean", "std")


def pick_images(data: Path, count: int, folder: Path) -> int:
    """Symlink a seeded random `count` of the images under data into folder/<class>/."""
    paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    for index in chosen:
        link = folder / paths[index].parent.name / paths[index].name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(paths[index].resolve())
    return len(chosen)


def export_source(commit: str, folder: Path) -> Path:
    """The `src` tree of `commit`, unpacked into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def train_model(data: Path, out: Path) -> Path:
    """A tb-fast run trained briefly with this checkout (one epoch, 40 steps)."""
    command = [sys.executable, "-m", "cxrkit", "train", "--recipe", "tb-fast", "--data", str(data),
               "--epochs", "1", "--max-steps", "40", "--name", "bench-predict",
               "--output-dir", str(out), "--overwrite"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=child_env(REPO / "src"), stdout=subprocess.DEVNULL)
    return out / "bench-predict"


def old_run_folder(run: Path, folder: Path) -> Path:
    """A copy of the run's model.ckpt with only what the earlier code reads."""
    checkpoint = torch.load(run / "model.ckpt", map_location="cpu", weights_only=True)
    card = checkpoint.pop("card", None) or {}  # today's checkpoints keep the run's facts in the card
    checkpoint.update({key: card[key] for key in ("classes", "preprocessing", "model", "single_logit", "info")
                       if key in card})
    preprocessing = checkpoint["preprocessing"]
    if preprocessing.get("lung_crop") or preprocessing.get("lung_mask_outside"):
        raise SystemExit("error: --run uses the lung segmenter, which the earlier code cannot run; "
                         "pick a run without lung_crop/lung_mask_outside")
    checkpoint["preprocessing"] = {key: preprocessing[key] for key in OLD_PREPROCESSING}
    for key in ("ood", "segmenter"):
        checkpoint.pop(key, None)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, folder / "model.ckpt")
    return folder


def child_env(source: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source)
    return env


def run_predict(source: Path, run: Path, images: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children) of one `cxrkit predict`."""
    command = [sys.executable, "-m", "cxrkit", "predict", str(run), str(images), "--out", str(out),
               "--overwrite", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=child_env(source), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def read_predictions(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [name for name in rows[0] if name.startswith("prob_")]
    label = "predicted" if "predicted" in rows[0] else "decision"  # the column's name before and after issue 12
    return {row["path"]: (row[label], np.array([float(row[c]) for c in columns])) for row in rows}


def compare(old: Path, new: Path) -> tuple[int, float, float]:
    """(images in both, largest probability difference, share of identical labels)."""
    before, after = read_predictions(old), read_predictions(new)
    if set(before) != set(after):
        raise SystemExit(f"error: the two CSVs list different images ({len(before)} vs {len(after)})")
    difference = max(float(np.abs(before[p][1] - after[p][1]).max()) for p in before)
    same = sum(before[p][0] == after[p][0] for p in before) / len(before)
    return len(before), difference, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="images to draw from (default ../shared/data/tb)")
    parser.add_argument("--images", type=int, default=2000, help="images predicted (default 2,000)")
    parser.add_argument("--run", type=Path, help="run folder (default: a tb-fast run trained here briefly)")
    parser.add_argument("--baseline", default=TODAY_OF_ISSUE_11,
                        help="commit whose code is the baseline (default: main when issue 11 was filed)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each side")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed probability difference (default 1e-4)")
    parser.add_argument("--batch-size", type=int, help="--batch-size for both commands (default: theirs)")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"data folder {args.data} not found; pass --data", file=sys.stderr)
        return 2
    extra = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    with tempfile.TemporaryDirectory(prefix="cxrkit-bench-predict-") as scratch:
        scratch = Path(scratch)
        os.environ["CXRKIT_CACHE_DIR"] = str(scratch / "cache")
        count = pick_images(args.data, args.images, scratch / "images")
        run = args.run or train_model(args.data, scratch / "runs")
        old_run = old_run_folder(run, scratch / "old-run")
        old_source = export_source(args.baseline, scratch / "baseline")
        sides = {"baseline": (old_source, old_run), "this checkout": (REPO / "src", run)}
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, (source, model) in sides.items():
                wall, cpu = run_predict(source, model, scratch / "images", scratch / f"{name}.csv", extra)
                figures[name].append((wall, cpu))
                print(f"  {name}: {count / wall:.1f} images/s ({count / cpu:.1f} per CPU-s), "
                      f"{wall:.1f} s", flush=True)
        compared, difference, same = compare(scratch / "baseline.csv", scratch / "this checkout.csv")
    rates = {name: (count / np.median([w for w, _ in rows]), count / np.median([c for _, c in rows]))
             for name, rows in figures.items()}
    old, new = rates["baseline"], rates["this checkout"]
    print(f"\n{count} images from {args.data}, model {run}, baseline {args.baseline[:10]}, "
          f"median of {args.repeats} alternating run(s), {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| code | images/s | images per CPU-s |")
    print("|---|---|---|")
    print(f"| baseline {args.baseline[:10]} | {old[0]:.1f} | {old[1]:.1f} |")
    print(f"| this checkout | {new[0]:.1f} | {new[1]:.1f} |")
    print(f"| speed-up | {new[0] / old[0]:.2f}x | {new[1] / old[1]:.2f}x |")
    print(f"same outputs: {compared} images, largest probability difference {difference:.2e} "
          f"(tolerance {args.tolerance:g}), identical predicted labels {same:.2%}")
    print("reproduce: python benchmarks/bench_predict.py " + " ".join(sys.argv[1:]))
    return 0 if difference <= args.tolerance and same == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
