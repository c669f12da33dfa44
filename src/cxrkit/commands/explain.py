"""`cxrkit explain`: heatmaps, overlays and panels for images, or a faithfulness benchmark."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from cxrkit.errors import CxrkitError

METHOD_HELP = "gradcam (default), gradcam++, lime, shap, occlusion or integrated-gradients; repeat for several"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="heatmaps of where the model looked, and how faithful they are",
        description="Explain predictions with heatmaps. Examples: "
        "cxrkit explain runs/tb-fast xray.png --method gradcam --method lime; "
        "cxrkit explain runs/tb-fast --data ../shared/data/tb --n 50 --benchmark",
    )
    parser.add_argument("run", metavar="RUN", help="run folder (or its model.ckpt)")
    parser.add_argument("images", metavar="IMAGE", nargs="*", help="image files or folders of images")
    parser.add_argument("--method", dest="methods", action="append", metavar="METHOD", help=METHOD_HELP)
    parser.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="class to explain (default: the predicted class)",
    )
    parser.add_argument(
        "--layer",
        metavar="LAYER",
        help="Grad-CAM layer, e.g. layer4 (default: the model's last convolutional block)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="perturbation samples for lime (default 300) and shap (default 32)",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default: RUN/explanations)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="measure deletion/insertion AUC, model-randomisation correlation and speed per method on --data images",
    )
    parser.add_argument("--data", metavar="DIR|CSV", help="images for --benchmark (class folders or a manifest)")
    parser.add_argument("--n", type=int, default=50, metavar="N", help="images drawn for --benchmark (50)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and perturbations")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrkit.explain.methods import CAM_METHODS, METHODS
    from cxrkit.extras import require

    require("captum")

    methods = args.methods or (list(METHODS) if args.benchmark else ["gradcam"])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CxrkitError(f"--method {unknown[0]!r}: choose one of {', '.join(METHODS)}")
    if args.layer and not set(methods) & set(CAM_METHODS):
        raise CxrkitError(f"--layer applies to {' and '.join(CAM_METHODS)} only; add --method gradcam")
    if args.samples is not None and args.samples < 1:
        raise CxrkitError(f"--samples {args.samples}: must be at least 1")
    options = {method: {} for method in methods}
    for method in set(methods) & {"lime", "shap"}:
        options[method]["seed"] = args.seed
        if args.samples:
            options[method]["n_samples"] = args.samples
    for method in set(methods) & set(CAM_METHODS):
        options[method]["layer"] = args.layer
    if args.benchmark:
        return run_benchmark(args, methods, options)
    return write_explanations(args, methods, options)


def image_files(inputs: list[str]) -> list[Path]:
    """The image files named, with folders expanded to the images inside them."""
    from cxrkit.data.io import is_image_file

    files = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise CxrkitError(f"{path}: folder has no image files (.png, .jpg, .dcm, ...)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CxrkitError(f"{path}: no such image file or folder")
    return files


def write_explanations(args: argparse.Namespace, methods: list[str], options: dict) -> int:
    from cxrkit.explain import explain, save_overlay
    from cxrkit.explain.overlay import output_paths
    from cxrkit.loader import load

    if args.data:
        raise CxrkitError("--data is for --benchmark; to explain images, list them after RUN")
    if not args.images:
        raise CxrkitError("no IMAGE given; usage: cxrkit explain RUN IMAGE... (or --data DIR --benchmark)")
    images = image_files(args.images)
    predictor = load(args.run)
    out_dir = Path(args.out).expanduser() if args.out else predictor.run_dir / "explanations"
    suffix = f".{_slug(args.class_name)}" if args.class_name else ""
    jobs, sources = [], {}
    for image in images:
        for method in methods:
            stem = f"{image.stem}.{method}{suffix}"
            if stem in sources:
                raise CxrkitError(
                    f"{sources[stem]} and {image} would write the same files "
                    f"({stem}.*); explain them in separate --out folders"
                )
            sources[stem] = image
            jobs.append((image, method, stem))
    if not args.overwrite:
        existing = [p for *_, stem in jobs for p in output_paths(out_dir, stem).values() if p.exists()]
        if existing:
            raise CxrkitError(
                f"{existing[0]} already exists; pass --overwrite to replace it or --out to write elsewhere"
            )
    for image, method, stem in jobs:
        explanation = explain(predictor, image, method, target=args.class_name, **options[method])
        paths = save_overlay(explanation, out_dir, stem, overwrite=args.overwrite)
        print(
            f"{image}: {method} for {explanation.target_class} (p = {explanation.probability:.3f}) -> {paths['panel']}"
        )
    print(f"wrote {len(jobs)} heatmap(s) (.heatmap.npy), overlay(s) and panel(s) to {out_dir}")
    return 0


def run_benchmark(args: argparse.Namespace, methods: list[str], options: dict) -> int:
    import torch

    from cxrkit.data.sources import load_manifest
    from cxrkit.explain.faithfulness import benchmark
    from cxrkit.loader import load

    if args.images:
        raise CxrkitError("--benchmark draws its images from --data; do not list IMAGE files")
    if not args.data:
        raise CxrkitError("--benchmark needs --data DIR (class folders or a CSV manifest)")
    if args.n < 1:
        raise CxrkitError(f"--n {args.n}: must be at least 1")
    if args.class_name:
        raise CxrkitError("--benchmark explains each image's predicted class; drop --class")
    manifest, _ = load_manifest(args.data)
    sample = manifest.sample(n=min(args.n, len(manifest)), random_state=args.seed)
    predictor = load(args.run)

    print(f"benchmark: {len(sample)} image(s) x {len(methods)} method(s) ({', '.join(methods)}); each "
          "image is explained twice (model and a randomised copy) and scored on 2 perturbation curves",
          file=sys.stderr, flush=True)
    clock = {"method": None, "since": time.perf_counter(), "last": time.perf_counter()}

    def progress(method: str, done: int) -> None:
        now = time.perf_counter()
        if method != clock["method"]:
            clock["method"], clock["since"] = method, clock["last"]
        clock["last"] = now
        per_image = (now - clock["since"]) / done
        left = per_image * (len(sample) - done)
        print(f"\r[{methods.index(method) + 1}/{len(methods)}] {method}: {done}/{len(sample)} images, "
              f"{per_image:.1f} s/image, about {_minutes(left)} left for this method   ",
              end="", file=sys.stderr, flush=True)
        if done == len(sample):
            print(file=sys.stderr)

    table = benchmark(predictor, list(sample["path"]), methods, seed=args.seed, options=options, progress=progress)
    table.columns = [
        "method",
        "deletion AUC (lower better)",
        "insertion AUC (higher better)",
        "randomisation Spearman (lower better)",
        "seconds per image",
    ]
    print(
        f"\nfaithfulness of explanations: {len(sample)} images of {args.data}, the predicted class "
        f"of each, {torch.get_num_threads()} CPU thread(s)"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    method_flags = "".join(f" --method {m}" for m in methods)
    print(
        f"\nreproduce: cxrkit explain {args.run} --data {args.data} --n {args.n} --seed {args.seed}"
        f"{method_flags} --benchmark"
    )
    return 0


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "class"
