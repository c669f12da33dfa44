"""Seconds per explanation of one image, per method, on a fixed number of CPU threads.

Target (issue 5): Grad-CAM of one 224 px image under 1 s on 2 cores. Speed does not depend on
the weights, so by default this times an untrained ResNet-18 at 224 px (3 channels, the
heaviest common setting) and, with --run, a trained run as well.

    .venv/bin/python benchmarks/bench_explain.py [--run runs/tb-fast] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cxrkit
from cxrkit.data.preprocess import Preprocessing
from cxrkit.explain import METHODS, explain
from cxrkit.inference import Predictor
from cxrkit.models import build_model

SHARED_TB = Path(__file__).resolve().parents[2] / "shared" / "data" / "tb" / "Tuberculosis"
GRADCAM_TARGET_S = 1.0


def sample_images(count: int) -> list:
    """Real TB radiographs when ../shared/data is there, else synthetic 256 px images."""
    if SHARED_TB.is_dir():
        return sorted(SHARED_TB.glob("*.png"))[:count]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (256, 256)).astype(np.uint8) for _ in range(count)]


def time_method(predictor, image, method: str, repeats: int, background) -> tuple[float, ...]:
    """(first call, median wall and median CPU seconds of the following calls).

    CPU seconds (all threads) show when the machine was shared: wall >> CPU / threads.
    """
    options = {"background": background} if method == "shap" and background is not None else {}
    wall, cpu = [], []
    for _ in range(repeats + 1):
        started, started_cpu = time.perf_counter(), time.process_time()
        explain(predictor, image, method, **options)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall[0], statistics.median(wall[1:]), statistics.median(cpu[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="also time this trained run folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up call")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    image, *background = sample_images(9)

    torch.manual_seed(0)
    resnet = Predictor(
        build_model("resnet18", 2, in_channels=3),
        ["Normal", "Tuberculosis"],
        Preprocessing(image_size=224),
        info={"model_name": "resnet18"},
    )
    predictors = [("resnet18 (untrained), 224 px", resnet, background)]
    if args.run:
        trained = cxrkit.load(args.run)
        size = trained.preprocessing.image_size
        label = f"{trained.info.get('model_name')} ({Path(args.run).name}), {size} px"
        predictors.append((label, trained, None))

    rows = []
    for label, predictor, shap_background in predictors:
        for method in args.methods:
            first, median, cpu = time_method(predictor, image, method, args.repeats, shap_background)
            rows.append((label, method, first, median, cpu))
            print(f"  {label:<40} {method:<22} {median:7.3f} s", file=sys.stderr)

    print(
        f"\nexplanation time per image, {args.threads} torch thread(s), median of {args.repeats} "
        "calls after a warm-up call"
    )
    print(f"load average at start: {load_before:.1f} on {os.cpu_count()} cores")
    print(f"{'model':<40} {'method':<22} {'first call s':>12} {'median s':>9} {'CPU s':>7}")
    for label, method, first, median, cpu in rows:
        print(f"{label:<40} {method:<22} {first:12.3f} {median:9.3f} {cpu:7.3f}")
    gradcam = [row[3] for row in rows if row[1] == "gradcam" and "224" in row[0]]
    if gradcam:
        verdict = "meets" if gradcam[0] < GRADCAM_TARGET_S else "MISSES"
        print(f"\nGrad-CAM at 224 px: {gradcam[0]:.3f} s -> {verdict} the {GRADCAM_TARGET_S:.0f} s target")
    run_flag = f" --run {args.run}" if args.run else ""
    print(
        f"reproduce: .venv/bin/python benchmarks/bench_explain.py --threads {args.threads} "
        f"--repeats {args.repeats}{run_flag}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
