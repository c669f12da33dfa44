"""Scale benchmark: N synthetic chest-like PNGs through `cxrkit train`, twice.

Makes N images once (256 px by default, kept in --data for later runs), then runs
`cxrkit train` on them two times with a fresh image cache:

- run 1 hashes, fingerprints (near-duplicate grouping), splits and decodes every image into
  the cache: reports the cache fill rate (images/s), peak memory and time to the first step;
- run 2 finds everything cached: reports the start-up time (from `train()` to the first
  training step) and peak memory again.

The dataset, hashing, split and cache are the full N images; the training part is bounded
(a tiny CNN, `--steps` optimizer steps) because an epoch over 100,000 images on a CPU takes
hours and is not what this measures. Each run also evaluates the test split (as
`cxrkit train` does). Peak RSS is reported two ways: the largest single process (the
training process; from getrusage) and the sum over the process tree, sampled every 0.5 s
(shared pages counted once per process, so an upper bound).

Reproduce (on a shared machine, in the background):
    nice -n 5 python benchmarks/bench_scale.py --n 100000 --data /tmp/cxrkit-scale-100k > scale.log 2>&1 &
Targets (issue 11): at 100,000 images, 224 px: peak RSS <= 4 GB; run 2 reaches its first
training step within 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cxrkit.data.synthetic import CLASSES, make_synthetic_dataset

PART = 500  # images of one class per generation task


def generate(root: Path, count: int, size: int, workers: int) -> float:
    """Write `count` PNGs (half per class) under root once; return seconds spent (0 if present)."""
    marker = root / f".complete-{count}-{size}"
    if marker.is_file():
        return 0.0
    started = time.perf_counter()
    per_class = count // len(CLASSES)
    parts = [(part, min(PART, per_class - part * PART)) for part in range(-(-per_class // PART))]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_generate_part, [root] * len(parts), parts, [size] * len(parts)))
    marker.write_text("")
    return time.perf_counter() - started


def _generate_part(root: Path, part: tuple[int, int], size: int) -> None:
    number, per_class = part
    last = f"p{number:04d}_{{}}_{per_class - 1:03d}.png"
    if all((root / label / last.format(label.lower())).is_file() for label in CLASSES):
        return  # made by an earlier (possibly smaller) run: parts are deterministic
    make_synthetic_dataset(root, per_class=per_class, size=size, seed=1000 + number, prefix=f"p{number:04d}_")


def _tree_rss(root_pid: int) -> int:
    """Sum of VmRSS (bytes) over root_pid and its descendants, read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid and child not in tree]
        tree.update(children)
        frontier += children
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_training(name: str, data: Path, cache: Path, out: Path, args: argparse.Namespace) -> dict:
    """`cxrkit train` in a child process; its training.json plus wall time and peak memory."""
    command = [sys.executable, "-m", "cxrkit", "train", "--recipe", "tb-fast", "--data", str(data),
               "--name", name, "--output-dir", str(out), "--image-size", str(args.image_size),
               "--epochs", "1", "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--set", "model.width=4", "--set", "model.depth=3", "--set", f"data.cache_dir={cache}",
               "--overwrite"]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    child = subprocess.Popen(command)
    peak_tree = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not stop.wait(0.5):
            peak_tree = max(peak_tree, _tree_rss(child.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak (and its waited children's)
    child.returncode = code = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"error: {name} failed with exit code {code}")
    peak_process = usage.ru_maxrss * 1024
    info = json.loads((out / name / "training.json").read_text())
    info.update(wall_s=round(wall, 1), peak_rss_largest_process_gb=round(peak_process / 1e9, 2),
                peak_rss_tree_sum_gb=round(peak_tree / 1e9, 2))
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="images to generate (default 100,000)")
    parser.add_argument("--size", type=int, default=256, help="generated image side in px (default 256)")
    parser.add_argument("--image-size", type=int, default=224, help="training input size (default 224)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, help="image folder, made once and reused "
                        "(default: a folder in the temp dir named after N and size)")
    parser.add_argument("--out", type=Path, help="work folder for caches and runs (default: temp dir)")
    parser.add_argument("--generate-only", action="store_true", help="make the images and stop")
    args = parser.parse_args()

    data = args.data or Path(tempfile.gettempdir()) / f"cxrkit-scale-{args.n}-{args.size}"
    workers = len(os.sched_getaffinity(0))
    made = generate(data, args.n, args.size, workers)
    print(f"images: {args.n:,} at {args.size} px in {data}"
          + (f" (generated in {made:.0f} s, {args.n / made:,.0f} images/s)" if made else " (already there)"),
          flush=True)
    if args.generate_only:
        return 0
    work = args.out or Path(tempfile.mkdtemp(prefix="cxrkit-bench-scale-"))
    cache, runs = work / "cache", work / "runs"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["CXRKIT_CACHE_DIR"] = str(cache)  # file index and fingerprints start empty too
    first = run_training("run1", data, cache / "images", runs, args)
    second = run_training("run2", data, cache / "images", runs, args)
    fill = first["image_cache"]
    print(f"\n== cxrkit scale benchmark: {args.n:,} images, {args.image_size} px, {workers} cores ==")
    print(f"cache fill (run 1): {fill['decoded']:,} images decoded in {fill['decode_s']:.0f} s "
          f"({fill['decoded'] / max(fill['decode_s'], 1e-9):,.0f} images/s); hashing {fill['hash_s']:.0f} s")
    for label, info in (("run 1 (cold)", first), ("run 2 (warm)", second)):
        print(f"{label}: first training step after {info['startup_s']:.1f} s; training "
              f"{info['images_per_s']} images/s; peak RSS {info['peak_rss_largest_process_gb']} GB "
              f"(largest process), {info['peak_rss_tree_sum_gb']} GB (process tree); "
              f"wall {info['wall_s']:.0f} s incl. test evaluation; decoded {info['image_cache']['decoded']:,}")
    print(json.dumps({"n": args.n, "image_size": args.image_size, "run1": first, "run2": second}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
