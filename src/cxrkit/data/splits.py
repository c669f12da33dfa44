"""Reproducible train/val/test splits: stratified by site x class, grouped by patient when known.

Patient groups count within a site: patient "17" of one hospital is not patient "17" of another.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from cxrkit.errors import CxrkitError

SPLITS_VERSION = 2


def _carve(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a held-out part of about `fraction`, stratified and group-disjoint."""
    n_splits = max(2, int(round(1.0 / fraction)))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a small site x class stratum is stratified as well as it can be
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        _, held_out = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held_out] = True
    return mask


def effective_groups(manifest: pd.DataFrame) -> np.ndarray:
    """Group id per row: the manifest's group, or the image itself when none is known."""
    groups = manifest["group"].astype(object).where(manifest["group"].notna(), None)
    sites = manifest["site"] if "site" in manifest.columns else [None] * len(manifest)
    return np.array([f"image:{p}" if g is None else g if s is None else f"{s}/{g}"
                     for g, p, s in zip(groups, manifest["path"], sites, strict=True)])


def strata(manifest: pd.DataFrame) -> np.ndarray:
    """What a split is stratified by: site x class when there are several sites, else class."""
    if "site" not in manifest.columns or manifest["site"].nunique() < 2:
        return manifest["label"].to_numpy()
    return (manifest["site"].astype(str) + " | " + manifest["label"].astype(str)).to_numpy()


def held_out_part(table: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about `fraction` of the rows: stratified like a split (site x class),
    whole patient groups, seeded (e.g. a site's check part)."""
    return _carve(strata(table), effective_groups(table), fraction, seed)


def assign_splits_cached(manifest: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.1,
                         seed: int = 42) -> pd.DataFrame:
    """`assign_splits`, its answer kept in the cache keyed by every input (paths, labels, groups,
    given splits, sites, fractions, seed, scikit-learn's version): grouped stratified splitting is slow
    for 100,000 images and a second run on the same data needs the same split."""
    import sklearn

    from cxrkit.data.cache import cache_root

    columns = [c for c in ("path", "label", "group", "split", "site") if c in manifest.columns]
    rows = manifest[columns].astype(object).where(manifest[columns].notna(), None)
    key = hashlib.sha256(json.dumps([SPLITS_VERSION, sklearn.__version__, val_fraction, test_fraction, seed,
                                     rows.to_numpy().tolist()], default=str).encode()).hexdigest()
    kept = cache_root() / "splits" / f"{key}.json"
    if kept.is_file():
        try:
            return manifest.assign(split=np.array(json.loads(kept.read_text()), dtype=object))
        except (OSError, ValueError):
            pass
    result = assign_splits(manifest, val_fraction, test_fraction, seed)
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        temporary = kept.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(result["split"].tolist()))
        os.replace(temporary, kept)
    except OSError:
        pass
    return result


def assign_splits(
    manifest: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42
) -> pd.DataFrame:
    """Fill the split column: keep given splits, carve missing val (and test) from train."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 0.5:
            raise CxrkitError(f"{name}={value} must be between 0 and 0.5")
    manifest = manifest.copy()
    labels = manifest["label"].to_numpy()
    stratify = strata(manifest)
    groups = effective_groups(manifest)
    split = np.array(manifest["split"].astype(object).where(manifest["split"].notna(), None), dtype=object)
    if all(s is None for s in split):
        split = np.array(["train"] * len(manifest), dtype=object)
    elif any(s is None for s in split):
        raise CxrkitError("some rows have a split and others none; give every row a split or none")
    test_carved = "test" not in set(split)
    if test_carved:
        pool = split == "train"
        mask = _carve(stratify[pool], groups[pool], test_fraction, seed)
        split[np.flatnonzero(pool)[mask]] = "test"
    if "val" not in set(split):
        pool = split == "train"
        remaining = val_fraction / (1.0 - test_fraction) if test_carved else val_fraction
        mask = _carve(stratify[pool], groups[pool], min(remaining, 0.45), seed + 1)
        split[np.flatnonzero(pool)[mask]] = "val"
    manifest["split"] = split
    for name in ("train", "val", "test"):
        present = set(manifest.loc[manifest["split"] == name, "label"])
        if name == "train" and present != set(labels):
            missing = sorted(set(labels) - present)
            raise CxrkitError(f"the train split has no images of class(es) {missing}; add more images")
    return manifest


def leave_site_out(manifest: pd.DataFrame, site: str, val_fraction: float = 0.1,
                   seed: int = 42) -> pd.DataFrame:
    """One leave-one-site-out fold: `site` is the test split; val is carved from the other sites."""
    sites = sorted(manifest["site"].unique())
    if site not in sites:
        raise CxrkitError(f"site {site!r} is not in the data (its sites are {', '.join(sites)})")
    held_out = (manifest["site"] == site).to_numpy()
    fold = manifest.assign(split=np.where(held_out, "test", "train"))
    return assign_splits(fold, val_fraction, 0.1, seed)


def read_split_file(split_file: str | Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """Apply a saved split.csv to a manifest (matched by path) so runs share one test set."""
    split_file = Path(split_file)
    if split_file.is_dir():
        split_file = split_file / "split.csv"
    if not split_file.is_file():
        raise CxrkitError(f"split_file={split_file}: no such file; pass a split.csv or a run folder")
    saved = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    if not {"path", "split"} <= set(saved.columns):
        raise CxrkitError(f"split_file={split_file}: needs columns path,split")
    by_path = dict(zip(saved["path"], saved["split"], strict=False))
    missing = [p for p in manifest["path"] if p not in by_path]
    if missing:
        raise CxrkitError(f"split_file={split_file}: {len(missing)} image(s) of `data` are not in it, "
                          f"e.g. {missing[0]}; make a new split or use the same data folder")
    manifest = manifest.copy()
    manifest["split"] = manifest["path"].map(by_path)
    if "group" in saved.columns:
        saved_groups = dict(zip(saved["path"], saved["group"].replace("", None), strict=False))
        manifest["group"] = manifest["path"].map(saved_groups)
    return manifest


def write_split_file(manifest: pd.DataFrame, path: str | Path) -> None:
    """Save path,label,group,split[,site] for reuse with --split-file."""
    columns = ["path", "label", "group", "split"] + (["site"] if "site" in manifest.columns else [])
    manifest[columns].to_csv(path, index=False)


def merge_groups(manifest: pd.DataFrame, extra_groups: list | None) -> pd.DataFrame:
    """Join rows that share a patient group or an extra group (e.g. near-duplicates) into one group.

    Rows linked through either kind of group end up in one connected group, so a split
    keeps all of them on the same side.
    """
    if extra_groups is None or all(g is None for g in extra_groups):
        return manifest
    parent = list(range(len(manifest)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in (list(manifest["group"]), list(extra_groups)):
        first_of: dict = {}
        for index, group in enumerate(column):
            if group is None or (isinstance(group, float) and np.isnan(group)):
                continue
            if group in first_of:
                parent[find(index)] = find(first_of[group])
            else:
                first_of[group] = index
    roots = [find(i) for i in range(len(manifest))]
    sizes = pd.Series(roots).value_counts()
    original = list(manifest["group"])
    names: dict[int, str] = {}
    for index, root in enumerate(roots):
        if isinstance(original[index], str) and root not in names:
            names[root] = original[index]
    manifest = manifest.copy()
    manifest["group"] = [
        names.get(root, f"near-duplicates-{root}") if sizes[root] > 1 else original[i]
        for i, root in enumerate(roots)
    ]
    return manifest


def split_by_patient(table: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """train/val/test per row of a table with patient and site columns: whole patients, stratified
    by site (the lung segmenter's split: no class labels to stratify by)."""
    patients = table.groupby("patient")["site"].first()
    names, sites = patients.index.to_numpy(dtype=object), patients.to_numpy(dtype=object)
    stratify = patients.value_counts().min() >= 3
    rest, test = train_test_split(np.arange(len(names)), test_size=test_fraction, random_state=seed,
                                  stratify=sites if stratify else None)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed,
                                  stratify=sites[rest] if stratify else None)
    split = np.full(len(names), "train", dtype=object)
    split[val], split[test] = "val", "test"
    return table["patient"].map(dict(zip(names, split, strict=True)))
