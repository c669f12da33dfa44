"""ONNX Runtime vs PyTorch eager, fp32 on CPU: throughput on the same model, batch and images.

For each model, exports it with `cxrkit.export.export_model`, prepares one batch of real X-rays
(../shared/data) with the preprocessing contract, and times the forward pass only (the same
prepared uint8 array for both runtimes, normalised by the same `Normaliser` inside each):
PyTorch eager under `torch.inference_mode()`, and onnxruntime at each
graph optimisation level, plus a session loading the graph saved already optimised. Prints
images/s, the speed-up over PyTorch and the max abs difference in probabilities.

    python benchmarks/bench_onnx.py                          # tb-fast CNN, ResNet-18, DenseNet-121
    python benchmarks/bench_onnx.py --models resnet18 --batch 32 --threads 1 2
    python benchmarks/bench_onnx.py --run runs/tb-fast       # a trained run instead
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import cxrkit
from cxrkit.data.preprocess import Preprocessing
from cxrkit.export import export_model
from cxrkit.models import build_model
from cxrkit.run import CHECKPOINT_FORMAT

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# name -> (build_model kwargs, image size, channels); baseline_cnn is the tb-fast recipe's network
MODELS = {
    "baseline_cnn": ({"width": 16, "depth": 5, "dropout": 0.2}, 128, 1),
    "resnet18": ({}, 224, 3),
    "densenet121": ({}, 224, 3),
}
LEVELS = {
    "disabled": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def make_run(folder: Path, name: str, images: list[Path]) -> Path:
    """A run folder for `name` with random weights and BatchNorm statistics from real X-rays."""
    options, size, channels = MODELS[name]
    spec = {"name": name, "num_classes": 2, "in_channels": channels, **options}
    torch.manual_seed(0)
    model = build_model(**spec)
    preprocessing = Preprocessing(image_size=size, channels=channels, resize="stretch",
                                  mean=(0.5,) * channels, std=(0.25,) * channels)
    run = folder / name
    run.mkdir()
    checkpoint = {"format": CHECKPOINT_FORMAT, "state_dict": model.state_dict(), "model": spec,
                  "classes": ["Normal", "Tuberculosis"], "single_logit": False,
                  "preprocessing": preprocessing.to_dict(), "info": {"model_name": name}}
    torch.save(checkpoint, run / "model.ckpt")
    predictor = cxrkit.load(run)
    with torch.no_grad():
        predictor.model.train()(predictor.to_tensor(images[:16]))
    checkpoint["state_dict"] = predictor.model.state_dict()
    torch.save(checkpoint, run / "model.ckpt")
    return run


def timed(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds after a warm-up.

    Interleaving spreads any load from other programs on the machine over all runtimes alike.
    """
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(repeats + 1):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if round_index:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def onnx_session(path: Path, level: str, threads: int, save_to: Path | None = None):
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # saving an NCHWc-optimised graph warns it is CPU-specific
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_model(run: Path, images: list[Path], batch_size: int, threads: int, repeats: int,
                folder: Path) -> list[tuple]:
    """Rows (runtime, seconds per batch, images/s, max abs diff) for one run and thread count."""
    onnx_path = folder / f"{run.name}.onnx"
    if not onnx_path.exists():
        export_model(run, out=onnx_path)
    predictor = cxrkit.load(run)
    batch_files = (images * (batch_size // len(images) + 1))[:batch_size]
    array = np.stack([predictor.prepare(path) for path in batch_files])[:, None]
    batch = torch.from_numpy(array)
    model = torch.nn.Sequential(predictor.normaliser, predictor.model.eval())
    torch.set_num_threads(threads)
    optimised = folder / f"{run.name}.optimised.onnx"
    onnx_session(onnx_path, "all", threads, save_to=optimised)
    sessions = {f"onnxruntime {level}": onnx_session(onnx_path, level, threads) for level in LEVELS}
    sessions["onnxruntime saved optimised graph"] = onnx_session(optimised, "disabled", threads)
    feeds = {name: {session.get_inputs()[0].name: array} for name, session in sessions.items()}

    def eager():
        with torch.inference_mode():
            return torch.softmax(model(batch), dim=1).numpy()

    runners = {"pytorch eager fp32": eager}
    runners |= {name: (lambda s=session, f=feeds[name]: s.run(None, f)[0])
                for name, session in sessions.items()}
    reference = eager()
    seconds = timed(runners, repeats)
    return [(name, seconds[name], batch_size / seconds[name],
             float(np.abs(run_once() - reference).max())) for name, run_once in runners.items()]


def real_images(count: int = 64) -> list[Path]:
    folders = [SHARED_DATA / "tb" / "Normal", SHARED_DATA / "tb" / "Tuberculosis"]
    files = [p for folder in folders if folder.is_dir() for p in sorted(folder.glob("*.png"))[:32]]
    if not files:
        raise SystemExit(f"no real images under {SHARED_DATA}")
    return files[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--run", help="a trained run folder to benchmark instead of --models")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="intra-op threads for both runtimes (default: all cores)")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches (default 10)")
    args = parser.parse_args()
    images = real_images()
    print(f"CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch "
          f"{torch.__version__}, onnxruntime {onnxruntime.__version__}; batch {args.batch}, "
          f"median of {args.repeats}")
    header = (f"{'model':<14}{'threads':>8}  {'runtime':<34}{'ms/batch':>10}{'images/s':>10}"
              f"{'speed-up':>10}{'max|diff|':>11}")
    print(header)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        runs = [Path(args.run)] if args.run else [make_run(folder, name, images)
                                                  for name in args.models]
        for run in runs:
            for threads in args.threads:
                rows = bench_model(run, images, args.batch, threads, args.repeats, folder)
                eager = rows[0][2]
                for runtime, seconds, rate, diff in rows:
                    print(f"{run.name:<14}{threads:>8}  {runtime:<34}{seconds * 1000:>10.1f}"
                          f"{rate:>10.1f}{rate / eager:>9.2f}x{diff:>11.1e}")
    print("reproduce: python benchmarks/bench_onnx.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
