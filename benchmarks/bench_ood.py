"""Out-of-distribution warning on real data: what a tb-fast and a pneumonia-fast run flag.

Targets (issue 10): >= 95% of 200 probe images flagged (non-chest photos from scikit-image's
samples, X-rays rotated 90 degrees, inverted X-rays); <= 5% of the run's own test images
flagged; a pneumonia-fast run (children) flags most of ../shared/data/tb/Normal (adults).
Also shown, without a target: the share of the other TB site (tb-nlm) a tb-fast run flags.

Runs are trained first when their folder has no model.ckpt (`--epochs` shortens training).
Run: python benchmarks/bench_ood.py [--tb-run runs/tb-fast] [--pneumonia-run runs/pneumonia-fast]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KINDS = ("non-chest", "rotated-90", "inverted")


def ensure_run(run: Path, recipe: str, data: Path, epochs: int | None) -> Path:
    """The run folder, trained with `cxrkit train` when it has no model.ckpt yet."""
    if (run / "model.ckpt").is_file():
        return run
    command = [sys.executable, "-m", "cxrkit", "train", "--recipe", recipe, "--data", str(data),
               "--output-dir", str(run.parent), "--name", run.name, "--overwrite"]
    command += ["--epochs", str(epochs)] if epochs else []
    subprocess.run(command, check=True)
    return run


def split_paths(run: Path, split: str) -> list[str]:
    table = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    return table.loc[table["split"] == split, "path"].tolist()


def sample(paths: list[str], limit: int | None, seed: int) -> list[str]:
    """At most `limit` of `paths`, drawn at random (all of them without a limit)."""
    if not limit or len(paths) <= limit:
        return paths
    return sorted(np.random.default_rng(seed).choice(paths, limit, replace=False))


def run_rows(run: Path, name: str, extra: dict[str, tuple[list, str]], n: int, seed: int) -> list:
    """(run, image set, n, flagged, share, target, met) rows for one run."""
    import cxrkit
    from cxrkit.ood import ood_flag_rates, probe_images

    predictor = cxrkit.load(run)
    test = split_paths(run, "test")
    probes = probe_images(test, n=n, seed=seed)
    kinds = np.array([kind for kind, _ in probes])
    probe = ood_flag_rates(predictor, [image for _, image in probes])
    flagged = probe["scores"] > predictor.ood_threshold
    rows = [(name, f"{n} probes (all kinds)", n, int(flagged.sum()), flagged.mean(), ">= 0.95",
             flagged.mean() >= 0.95)]
    rows += [(name, f"  {kind}", int((kinds == kind).sum()), int(flagged[kinds == kind].sum()),
              flagged[kinds == kind].mean(), "", None) for kind in KINDS]
    own = ood_flag_rates(predictor, test)
    rows.append((name, "own test split", own["n"], own["n_flagged"], own["share_flagged"],
                 "<= 0.05", own["share_flagged"] <= 0.05))
    for label, (paths, target) in extra.items():
        result = ood_flag_rates(predictor, paths)
        met = None if not target else result["share_flagged"] > 0.5
        rows.append((name, label, result["n"], result["n_flagged"], result["share_flagged"],
                     target, met))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tb-run", type=Path, default=Path("runs/tb-fast"))
    parser.add_argument("--pneumonia-run", type=Path, default=Path("runs/pneumonia-fast"))
    parser.add_argument("--epochs", type=int, help="epochs when a run has to be trained first")
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-images", type=int,
                        help="score at most this many images of each other set (faster)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    tb = ensure_run(args.tb_run, "tb-fast", DATA / "tb", args.epochs)
    pneumonia = ensure_run(args.pneumonia_run, "pneumonia-fast", DATA / "pneumonia", args.epochs)
    nlm = pd.read_csv(DATA / "tb-nlm.csv", dtype=str)
    nlm_paths = sample([str(DATA / p) for p in nlm["path"]], args.max_images, args.seed)
    adults = sample(sorted(str(p) for p in (DATA / "tb" / "Normal").glob("*.png")),
                    args.max_images, args.seed)
    rows = run_rows(tb, tb.name, {"tb-nlm (other TB sites)": (nlm_paths, "")}, args.probes, args.seed)
    rows += run_rows(pneumonia, pneumonia.name, {"tb/Normal (adults)": (adults, "> 0.5")},
                     args.probes, args.seed)
    print("| run | images | n | flagged | share | target | met |")
    print("|---|---|---|---|---|---|---|")
    for name, label, n, flagged, share, target, met in rows:
        verdict = "" if met is None else ("yes" if met else "NO")
        print(f"| {name} | {label} | {n} | {flagged} | {share:.3f} | {target} | {verdict} |")
    print("reproduce: python benchmarks/bench_ood.py " + " ".join(sys.argv[1:]))
    return 0 if all(row[-1] is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
