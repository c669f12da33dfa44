"""`cxrkit predict`: class probabilities for images with a run folder or an exported ONNX model."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from cxrkit.errors import CxrkitError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict images with a run folder or model.onnx",
        description="Example: cxrkit predict runs/tb-fast ../shared/data/tb/Tuberculosis --out preds.csv")
    parser.add_argument("model", help="run folder, model.ckpt or model.onnx")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True,
                        help="CSV to write (path, predicted label, prob_<class>..., ood_score, "
                             "out_of_distribution)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes decoding images while the model runs (default: every core)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run)


def collect_images(items: list[str]) -> tuple[list[str], list[str]]:
    """Expand folders; return (image paths, non-image files that were left out)."""
    from cxrkit.data.io import is_image_file

    images, ignored = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                (images if is_image_file(file) else ignored).append(str(file))
        elif path.is_file():
            (images if is_image_file(path) else ignored).append(str(path))
        else:
            raise CxrkitError(f"{item}: no such file or folder")
    if not images:
        raise CxrkitError(f"no images found in {' '.join(items)} (.png .jpg .bmp .tif .dcm)")
    return images, ignored


def run(args: argparse.Namespace) -> int:
    from cxrkit.commands.reporting import ProgressBars
    from cxrkit.inference import load
    from cxrkit.ood import flag_summary, warning_text

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CxrkitError(f"--out {out} already exists; pass --overwrite to replace it")
    predictor = load(args.model)
    paths, ignored = collect_images(args.images)
    progress = ProgressBars()
    probabilities, scores, lung_found, readable, failed = predictor.predict_files(
        paths, args.batch_size, args.workers, progress=progress)
    progress.close()
    threshold = predictor.ood_threshold
    lungs = predictor.preprocessing.uses_lungs
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "predicted", *[f"prob_{c}" for c in predictor.classes],
                         *(["ood_score", "out_of_distribution"] if scores is not None else []),
                         *(["lung_found"] if lungs else [])])
        for index, (path, row) in enumerate(zip(readable, probabilities, strict=True)):
            ood = [] if scores is None else [f"{scores[index]:.4f}", str(scores[index] > threshold)]
            lung = [str(lung_found[index]).lower()] if lungs else []
            writer.writerow([path, predictor.classes[int(row.argmax())], *[f"{p:.6f}" for p in row],
                             *ood, *lung])
    print(f"wrote {len(readable)} prediction(s) to {out}")
    if scores is None:
        print("no out-of-distribution check: this model has no reference (add one with "
              "`cxrkit ood RUN`, then re-export)")
    elif len(scores):
        print(warning_text(flag_summary(scores, threshold)))
    fallbacks = [path for path, found in zip(readable, lung_found, strict=False) if found is False]
    if fallbacks:
        print(f"no plausible lung found in {len(fallbacks)} image(s); the whole image was used "
              f"(lung_found=false), e.g. {fallbacks[0]}")
    for reason in failed.values():
        print(f"skipped: {reason}")
    if ignored:
        print(f"ignored {len(ignored)} non-image file(s), e.g. {ignored[0]}")
    return 0
