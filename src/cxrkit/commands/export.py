"""`cxrkit export RUN --format onnx|torchscript [--out FILE]`: a deployable model file."""

from __future__ import annotations

import argparse
import logging

EQUIVALENCE_TOLERANCE = 1e-4
OOD_TOLERANCE = 1e-3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a run's model to ONNX or TorchScript",
        description="Export a run's model with its preprocessing contract and class names, "
                    "then check its outputs against PyTorch.")
    parser.add_argument("run", help="run folder made by `cxrkit train` (or its model.ckpt)")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                        help="file format (default onnx)")
    parser.add_argument("--out", help="output file "
                                      "(default RUN/model.onnx or RUN/model.torchscript.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from cxrkit.export import export_model
    from cxrkit.extras import require

    if args.format == "onnx":
        require("onnx", "onnxscript", "onnxruntime")

    for chatty in ("onnxscript", "onnx_ir"):  # the ONNX exporter logs each optimiser pass
        logging.getLogger(chatty).setLevel(logging.WARNING)
    result = export_model(args.run, format=args.format, out=args.out, overwrite=args.overwrite)
    sizes = ", ".join(str(size) for size in result["checked_batch_sizes"])
    ood_diff = result["ood_max_rel_diff"]
    matches = result["max_abs_diff"] <= EQUIVALENCE_TOLERANCE
    ood_matches = ood_diff is None or ood_diff <= OOD_TOLERANCE
    verdict = "ok" if matches and ood_matches else "FAILED"
    print(f"wrote {result['path']} ({result['format']}, model {result['model_id']})")
    print(f"decision in the file: {result['decision']}")
    print(f"check against PyTorch on {result['checked_on']} (batch sizes {sizes}): "
          "max abs difference in probabilities "
          f"{result['max_abs_diff']:.2e} (tolerance {EQUIVALENCE_TOLERANCE:.0e}) "
          f"{'ok' if matches else 'FAILED'}")
    if ood_diff is None:
        print("no out-of-distribution output: the run has no reference (`cxrkit ood RUN`)")
    else:
        print(f"out-of-distribution score: max relative difference {ood_diff:.2e} (tolerance "
              f"{OOD_TOLERANCE:.0e}) {'ok' if ood_matches else 'FAILED'}")
    if verdict != "ok":
        print(f"the exported model does not match PyTorch: {result['path']} is kept for "
              "inspection, do not deploy it")
        return 1
    return 0
