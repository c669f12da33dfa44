"""`cxrkit predict`: class probabilities for images with a run folder or an exported ONNX model."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from cxrkit.commands import positive_int
from cxrkit.errors import CxrkitError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict images with a run folder or model.onnx",
        description="Example: cxrkit predict runs/tb-fast ../shared/data/tb/Tuberculosis --out preds.csv")
    parser.add_argument("model", help="run folder, model.ckpt or model.onnx")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True,
                        help="CSV to write (path, predicted label, prob_<class>..., ood_score, "
                             "out_of_distribution, lung_found)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default 32)")
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
    """Decode, predict and write one batch at a time: memory stays bounded by --batch-size."""
    import numpy as np
    from tqdm import tqdm

    from cxrkit.inference import load
    from cxrkit.ood import flag_summary, warning_text

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CxrkitError(f"--out {out} already exists; pass --overwrite to replace it")
    predictor = load(args.model)
    paths, ignored = collect_images(args.images)
    threshold = predictor.ood_threshold
    lungs = predictor.preprocessing.uses_lungs
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    written, failed, all_scores, fallbacks = 0, [], [], []
    with partial.open("w", newline="") as handle, tqdm(total=len(paths), unit="img", desc="predict") as bar:
        writer = csv.writer(handle)
        writer.writerow(["path", "predicted", *[f"prob_{c}" for c in predictor.classes],
                         *(["ood_score", "out_of_distribution"] if threshold is not None else []),
                         *(["lung_found"] if lungs else [])])
        for start in range(0, len(paths), args.batch_size):
            batch, failures = _decode(paths[start:start + args.batch_size])
            failed += failures
            probabilities, scores, lung_found = predictor.predict_details(
                [image for _, image in batch], args.batch_size)
            for index, ((path, _), row) in enumerate(zip(batch, probabilities, strict=True)):
                ood = [] if scores is None else [f"{scores[index]:.4f}", str(scores[index] > threshold)]
                lung = [str(lung_found[index]).lower()] if lungs else []
                writer.writerow([path, predictor.classes[int(row.argmax())], *[f"{p:.6f}" for p in row],
                                 *ood, *lung])
                if lungs and lung_found[index] is False:
                    fallbacks.append(path)
            if scores is not None:
                all_scores.append(scores)
            written += len(batch)
            bar.update(len(batch) + len(failures))
    for _path, reason in failed:
        print(f"skipped: {reason}")
    if ignored:
        print(f"ignored {len(ignored)} non-image file(s), e.g. {ignored[0]}")
    if not written:
        partial.unlink()
        raise CxrkitError(f"none of the {len(paths)} image(s) could be read (see the skipped lines); "
                          f"nothing written to {out}")
    partial.replace(out)
    print(f"wrote {written} prediction(s) to {out}; 'predicted' is the most probable class (argmax), "
          "not a run's tuned operating point")
    if threshold is None:
        print("no out-of-distribution check: this model has no reference (add one with "
              "`cxrkit ood RUN`, then re-export)")
    else:
        print(warning_text(flag_summary(np.concatenate(all_scores), threshold)))
    if fallbacks:
        print(f"no plausible lung found in {len(fallbacks)} image(s); the whole image was used "
              f"(lung_found=false), e.g. {fallbacks[0]}")
    return 0


def _decode(paths: list[str]) -> tuple[list, list[tuple[str, str]]]:
    from cxrkit.data.io import read_gray

    decoded, failed = [], []
    for path in paths:
        try:
            decoded.append((path, read_gray(path)))
        except CxrkitError as error:
            failed.append((path, str(error)))
    return decoded, failed
