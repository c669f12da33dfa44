"""`cxrkit ood RUN`: add the out-of-distribution reference to a run trained without one."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ood", help="compute a run's out-of-distribution reference (runs trained before it existed)",
        description="Compute the OOD reference of a run (Mahalanobis distance on pooled features, "
                    "thresholded at the 99th percentile of the validation split) from its "
                    "split.csv and store it in model.ckpt. `cxrkit train` does this itself; "
                    "this is for older runs. The weights do not change. "
                    "Example: cxrkit ood runs/tb-fast")
    parser.add_argument("run", help="run folder made by `cxrkit train`")
    parser.add_argument("--overwrite", action="store_true", help="recompute an existing reference")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from cxrkit.ood.runs import add_reference

    summary = add_reference(args.run, overwrite=args.overwrite, batch_size=args.batch_size)
    print(f"out-of-distribution reference stored in {args.run}/model.ckpt: {len(summary['layers'])} "
          f"layers ({', '.join(summary['layers'])}), {summary['n_train']} train images, threshold "
          f"{summary['threshold']:.3f} = {summary['percentile']:g}th percentile of "
          f"{summary['n_val']} validation scores")
    print("re-export ONNX files of this run (`cxrkit export RUN --overwrite`) so they carry it too")
    return 0
