"""Leave-one-site-out: for every site, train on all the others and test on the one left out.

Each fold is an ordinary run folder whose split.csv puts the held-out site in `test` and
carves `val` (patient-grouped, stratified by site x class) from the other sites, so the
operating point and early stopping see the training sites only. The folds' split files are
made once from one manifest (with its patient and near-duplicate groups) under the
experiment folder, so a resumed experiment trains the same folds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.config import Config
from cxrkit.errors import CxrkitError
from cxrkit.experiments.spec import ExperimentSpec, Variant

MANIFEST_FILE = "manifest.csv"
FOLDS_DIR = "folds"


def site_names(config: Config) -> list[str]:
    """The sites of the config's data sources, in first-seen order (cheap: no image is read)."""
    from cxrkit.data.sources import load_sources

    manifest, _ = load_sources(config.data.all_sources(), config.data.group_pattern)
    return list(dict.fromkeys(manifest["site"]))


def check_sites(spec: ExperimentSpec, sites: list[str]) -> None:
    """A leave-one-site-out experiment needs at least two sites."""
    if len(sites) < 2:
        raise CxrkitError(
            f"experiment {spec.name}: leave-one-site-out needs data from at least two sites, but "
            f"its data has one ({sites[0]!r}); list more under sources: (or give a CSV with a "
            "site column)")


def fold_name(site: str) -> str:
    """The run folder name of the fold that holds `site` out."""
    return "heldout=" + re.sub(r"[^A-Za-z0-9._=+-]", "_", site)


def plan_folds(base: Config, sites: list[str]) -> list[Variant]:
    """One variant per site: the base config, named after the site it holds out."""
    return [Variant(fold_name(site), {}, base.model_copy(update={"name": fold_name(site)}, deep=True))
            for site in sites]


def fold_splits(base: Config, out_dir: Path, sites: list[str]) -> dict[str, Path]:
    """{site: split.csv of the fold holding it out}, made once under out_dir/folds/."""
    from cxrkit.data.splits import leave_site_out, write_split_file

    manifest = shared_manifest(base, out_dir)
    paths = {}
    for site in sites:
        path = out_dir / FOLDS_DIR / f"{fold_name(site)}.csv"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fold = leave_site_out(manifest, site, base.data.val_fraction, base.data.split_seed)
            _write_atomic(path, lambda target, fold=fold: write_split_file(fold, target))
        paths[site] = path
    return paths


def shared_manifest(base: Config, out_dir: Path) -> pd.DataFrame:
    """Every image with its site and patient/near-duplicate group, written once to manifest.csv."""
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        from cxrkit.data.run_split import build_split

        manifest = build_split(base.model_copy(deep=True))
        out_dir.mkdir(parents=True, exist_ok=True)
        columns = ["path", "label", "group", "site"]
        _write_atomic(path, lambda target: manifest[columns].to_csv(target, index=False))
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return table.assign(group=table["group"].replace("", None), split=None)


def fold_table(table: pd.DataFrame, sites: list[str], splits: dict[str, Path],
               monitor: str) -> pd.DataFrame:
    """The results table in site order, with the held-out site, what trained it and its test set."""
    table = table.sort_index().drop(columns=["rank"])
    rows: list[dict[str, Any]] = []
    for site in sites:
        split = pd.read_csv(splits[site], dtype=str, keep_default_na=False)
        test = split[split["split"] == "test"]
        counts = test["label"].value_counts()
        rows.append({"held_out_site": site,
                     "trained_on": ", ".join(s for s in dict.fromkeys(split["site"]) if s != site),
                     "n_train": int((split["split"] == "train").sum()),
                     "n_val": int((split["split"] == "val").sum()),
                     "test_classes": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                     "monitor": monitor})
    return pd.concat([pd.DataFrame(rows, index=table.index), table], axis=1)


def _write_atomic(path: Path, write) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)
