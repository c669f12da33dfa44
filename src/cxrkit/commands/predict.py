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
                        help="CSV to write (path, decision, prob_<class>..., ood_score, "
                             "out_of_distribution, lung_found, operating_point, threshold, chosen_on); "
                             "with --format fhir a .json Bundle or .ndjson")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default 32)")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="processes decoding images while the model runs (default: every core)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--operating-point", metavar="NAME|THRESHOLD",
                        help="decide at this frozen point of the run (argmax, youden, max_f1, "
                             "sensitivity) or at P(positive) >= THRESHOLD; default: the run's "
                             "default point (set by `cxrkit evaluate RUN --operating-point X "
                             "--set-default`; the most probable class before evaluation)")
    parser.add_argument("--site", metavar="NAME",
                        help="decide at this site operating point (made by `cxrkit calibrate "
                             "--select`); the same as --operating-point site:NAME")
    parser.add_argument("--format", choices=["csv", "fhir"], default="csv",
                        help="csv (default) or fhir: one FHIR R4 Observation per image with model "
                             "id, operating point, score and decision (needs cxrkit[fhir])")
    parser.add_argument("--sr-dir", metavar="DIR",
                        help="also write a DICOM SR (TID 1500) per DICOM input into DIR "
                             "(needs cxrkit[dicom])")
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


def chosen_point(args: argparse.Namespace) -> str | float | None:
    """--operating-point / --site as the Predictor takes it (a name, a threshold or None)."""
    if args.site and args.operating_point:
        raise CxrkitError("--site NAME and --operating-point both choose the operating point; give one")
    if args.site:
        return f"site:{args.site}"
    if args.operating_point is None:
        return None
    try:
        return float(args.operating_point)
    except ValueError:
        return args.operating_point


def run(args: argparse.Namespace) -> int:
    """Decode in worker processes, predict in full batches, decide, then write the table."""
    from cxrkit.commands.reporting import ProgressBars
    from cxrkit.loader import load
    from cxrkit.ood import flag_summary, warning_text

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CxrkitError(f"--out {out} already exists; pass --overwrite to replace it")
    if args.format == "fhir" or args.sr_dir:
        from cxrkit.deployment.standards import require_extras

        require_extras(args.format == "fhir", bool(args.sr_dir))
    predictor = load(args.model)
    point = predictor.operating_point(chosen_point(args))
    print(f"decision: {point.describe()}", flush=True)
    paths, ignored = collect_images(args.images)
    progress = ProgressBars()
    try:
        probabilities, scores, lung_found, kept, failures = predictor.predict_files(
            paths, args.batch_size, args.workers, progress=progress)
    finally:
        progress.close()
    report_skipped(list(failures.items()), ignored)
    if not kept:
        raise CxrkitError(f"none of the {len(paths)} image(s) could be read (see the skipped lines); "
                          f"nothing written to {out}")
    if args.format == "fhir" or args.sr_dir:
        standard_outputs(args, predictor, kept, probabilities, point)
    if args.format == "fhir":
        return 0
    write_table(out, predictor, point, kept, probabilities, scores, lung_found)
    print(f"wrote {len(kept)} prediction(s) to {out}; 'decision' is at operating point {point.name}")
    threshold = predictor.ood_threshold
    if scores is None:
        print("no out-of-distribution check: this model has no reference (add one with "
              "`cxrkit ood RUN`, then re-export)")
    else:
        print(warning_text(flag_summary(scores, threshold)))
    fallbacks = [path for path, found in zip(kept, lung_found, strict=True) if found is False]
    if fallbacks:
        print(f"no plausible lung found in {len(fallbacks)} image(s); the whole image was used "
              f"(lung_found=false), e.g. {fallbacks[0]}")
    return 0


def write_table(out: Path, predictor, point, paths: list[str], probabilities, scores, lung_found) -> None:
    """The predictions CSV, written through a partial file so a crash leaves no half table."""
    threshold = predictor.ood_threshold
    lungs = predictor.preprocessing.uses_lungs
    decided = point.labels(probabilities)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "decision", *[f"prob_{c}" for c in predictor.classes],
                         *(["ood_score", "out_of_distribution"] if scores is not None else []),
                         *(["lung_found"] if lungs else []), "operating_point", "threshold", "chosen_on"])
        rule = [point.name, "" if point.threshold is None else repr(point.threshold), point.source]
        for index, (path, row) in enumerate(zip(paths, probabilities, strict=True)):
            ood = [] if scores is None else [f"{scores[index]:.4f}", str(scores[index] > threshold)]
            lung = [str(lung_found[index]).lower()] if lungs else []
            writer.writerow([path, decided[index], *[f"{p:.6f}" for p in row], *ood, *lung, *rule])
    partial.replace(out)


def report_skipped(failed: list, ignored: list) -> None:
    for _path, reason in failed:
        print(f"skipped: {reason}")
    if ignored:
        print(f"ignored {len(ignored)} non-image file(s), e.g. {ignored[0]}")


def standard_outputs(args, predictor, paths: list[str], probabilities, point) -> None:
    """--format fhir and --sr-dir: decisions at the operating point, as the server makes them."""
    from cxrkit.deployment.standards import decisions, write_fhir, write_srs

    model_id, predictions = decisions(predictor, probabilities, point)
    if args.format == "fhir":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_fhir(out, paths, model_id, predictions)
        print(f"wrote {len(paths)} FHIR Observation(s) to {out}")
    if args.sr_dir:
        written = write_srs(Path(args.sr_dir), paths, model_id, predictions, args.overwrite)
        print(f"wrote {len(written)} DICOM SR(s) to {args.sr_dir}")
