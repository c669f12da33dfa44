"""Audit a chest X-ray dataset for the traps that make a model look better than it is.

Duplicates and near-duplicates (within the data, across its splits and against a second
dataset), patients shared between splits, unreadable files, class imbalance and shortcut
hints (a class that differs from the others by file format, size or intensity profile).
`audit_dataset` returns a JSON-ready dict and, given an output folder, writes the report
files (see `cxrkit.data.audit_report`). `near_duplicate_groups` serves grouped splitting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cxrkit.data.cache import cache_root
from cxrkit.data.hashing import BITS_PER_UNIT, close_pairs, hash_matrix, inspect_images
from cxrkit.data.manifest import SPLIT_NAMES
from cxrkit.data.sources import groups_from_pattern, load_manifest
from cxrkit.data.splits import read_split_file
from cxrkit.errors import CxrkitError

KNOWN_GROUP_PATTERNS = {
    "Kermany pediatric pneumonia (personN_bacteria|virus_..., [NORMAL2-]IM-NNNN-...; "
    "bacteria and virus are numbered separately)":
        r"^(person\d+_(?:bacteria|virus)|(?:NORMAL2-)?IM-\d+(?=-))",
    "NIH ChestX-ray14 (PPPPPPPP_NNN.png)": r"^(\d{8})_\d{3}\.",
}
CATEGORICAL_FEATURES = {"format": "file format", "mode": "pixel mode", "bit_depth": "bit depth",
                        "size": "image size"}
NUMERIC_FEATURES = {"mean": "mean intensity", "std": "intensity spread (std)",
                    "border_mean": "border intensity", "bytes": "file size",
                    "width": "width", "height": "height"}
SHORTCUT_SHARE = 0.95
SHORTCUT_OTHER_SHARE = 0.5
SHORTCUT_AUC = 0.85
CLOSEST_PAIRS = 16
MAX_LISTED_PAIRS = 1000
GROUPS_VERSION = 1


def detect_group_pattern(paths: Sequence[str]) -> tuple[str, str] | None:
    """(description, regex) of a known patient-id naming scheme most file names follow."""
    names = [Path(p).name for p in paths]
    for description, pattern in KNOWN_GROUP_PATTERNS.items():
        regex = re.compile(pattern)
        matches = [m.group(1) for m in map(regex.search, names) if m]
        if len(matches) >= 0.9 * len(names) and len(set(matches)) < len(matches):
            return description, pattern
    return None


def _components(count: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components with more than one member, in order of their first member."""
    if not edges:
        return []
    rows, cols = zip(*edges, strict=True)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        members.setdefault(int(label), []).append(index)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def _duplicate_groups(records: list[dict], max_distance: int,
                      closest: int = CLOSEST_PAIRS) -> tuple[list, list, list]:
    """Groups (index lists) of exact and perceptual duplicates, the close pairs, the closest."""
    edges = []
    first_with_hash: dict[str, int] = {}
    for index, record in enumerate(records):
        sha = record.get("sha256")
        if sha in first_with_hash:
            edges.append((first_with_hash[sha], index))
        elif sha:
            first_with_hash[sha] = index
    readable = [i for i, r in enumerate(records) if r.get("phash")]
    hashes = hash_matrix([records[i]["phash"] for i in readable])
    pairs, closest = close_pairs(hashes, max_bits=max_distance * BITS_PER_UNIT, closest=closest)
    pairs = [(readable[i], readable[j], bits) for i, j, bits in pairs]
    closest = [(readable[i], readable[j], bits) for i, j, bits in closest]
    groups = _components(len(records), edges + [(i, j) for i, j, _ in pairs])
    return groups, pairs, closest


def near_duplicate_groups(
    paths: Sequence[str], max_distance: int = 4, workers: int | None = None
) -> list[str | None]:
    """One group id per path ("dup-1", ...), None for an image with no near-duplicate.

    Exact copies (same content) and images whose 256-bit perceptual hashes differ by at most
    `max_distance` bits per 64 are joined, transitively. Unreadable files get None. The
    answer is kept in the cache keyed by the files' content hashes, so a second run on the
    same images skips the all-pairs comparison.
    """
    records = inspect_images(paths, workers=workers)
    key = hashlib.sha256(json.dumps([max_distance, GROUPS_VERSION] + [
        r["sha256"] if r["error"] is None else None for r in records]).encode()).hexdigest()
    kept = cache_root() / "near-duplicates" / f"{key}.json"
    if kept.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(kept.read_text())
    components, _, _ = _duplicate_groups(records, max_distance, closest=0)
    groups: list[str | None] = [None] * len(records)
    for number, members in enumerate(components, start=1):
        for index in members:
            groups[index] = f"dup-{number}"
    with contextlib.suppress(OSError):
        kept.parent.mkdir(parents=True, exist_ok=True)
        temporary = kept.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(groups))
        os.replace(temporary, kept)
    return groups


def _load(source, group_pattern: str | None, split_file) -> tuple[pd.DataFrame, list, dict]:
    """Manifest with splits and patient groups, the ignored files, and where groups came from."""
    manifest, ignored = load_manifest(source)
    grouping = {"source": None, "pattern": group_pattern, "description": None}
    if manifest["group"].notna().any():
        grouping["source"] = "manifest"
    if split_file:
        before = manifest["group"].copy()
        manifest = read_split_file(split_file, manifest)
        if not manifest["group"].equals(before):
            grouping["source"] = "--split-file" if manifest["group"].notna().any() else None
    if group_pattern:
        grouping["source"] = "--group-pattern"
        manifest["group"] = groups_from_pattern(manifest["path"], group_pattern)
    elif grouping["source"] is None:
        detected = detect_group_pattern(manifest["path"].tolist())
        if detected:
            grouping.update(source="auto-detected", description=detected[0], pattern=detected[1])
            manifest["group"] = groups_from_pattern(manifest["path"], detected[1])
    return manifest, ignored, grouping


def _value_counts(values: pd.Series, top: int | None = None) -> dict:
    counts = values.astype(str).value_counts()
    if top and len(counts) > top:
        counts = pd.concat([counts.iloc[:top], pd.Series({"other": counts.iloc[top:].sum()})])
    return {str(k): int(v) for k, v in counts.items()}


def _spread(values: pd.Series) -> dict:
    values = values.dropna().astype(float)
    if values.empty:
        return {}
    return {"min": round(values.min(), 2), "median": round(values.median(), 2),
            "max": round(values.max(), 2), "mean": round(values.mean(), 2)}


def _properties(table: pd.DataFrame) -> dict:
    readable = table[table["error"].isna()]
    properties = {}
    for label, rows in readable.groupby("label"):
        properties[str(label)] = {
            "readable": len(rows),
            "formats": _value_counts(rows["format"]),
            "modes": _value_counts(rows["mode"]),
            "bit_depths": _value_counts(rows["bit_depth"]),
            "sizes": _value_counts(rows["size"], top=5),
            **{name: _spread(rows[name]) for name in ("width", "height", "bytes", "mean", "std",
                                                      "border_mean")},
        }
    return properties


def _shortcut_hints(table: pd.DataFrame) -> list[dict]:
    """Features that alone tell one class from the others: a shortcut a model can learn."""
    from sklearn.metrics import roc_auc_score

    readable = table[table["error"].isna()]
    labels = sorted(readable["label"].unique())
    if len(labels) < 2:
        return []
    hints = []
    for feature, name in CATEGORICAL_FEATURES.items():
        values = readable[feature].astype(str)
        if values.nunique() < 2:
            continue
        for label in labels:
            inside = readable["label"] == label
            dominant = values[inside].value_counts()
            value, share = dominant.index[0], dominant.iloc[0] / inside.sum()
            other_share = float((values[~inside] == value).mean())
            if share >= SHORTCUT_SHARE and other_share <= SHORTCUT_OTHER_SHARE:
                hints.append({"feature": feature, "class": label, "value": value,
                              "class_share": round(float(share), 3),
                              "other_share": round(other_share, 3),
                              "message": f"{share:.0%} of {label} images have {name} {value} "
                                         f"against {other_share:.0%} of the other classes"})
    for feature, name in NUMERIC_FEATURES.items():
        values = readable[feature].astype(float)
        if values.nunique() < 2:
            continue
        for label in labels[1:] if len(labels) == 2 else labels:
            auc = float(roc_auc_score(readable["label"] == label, values))
            if max(auc, 1 - auc) >= SHORTCUT_AUC:
                direction = "higher" if auc >= 0.5 else "lower"
                hints.append({"feature": feature, "class": label, "auc": round(auc, 3),
                              "message": f"{name} alone separates {label} from the rest "
                                         f"(AUC {max(auc, 1 - auc):.2f}, {label} {direction}); "
                                         "check it is not an acquisition difference"})
    return hints


def _group_entry(table: pd.DataFrame, members: Sequence[int], group_id: str) -> dict:
    rows = table.iloc[list(members)]
    return {"id": group_id, "paths": rows["path"].tolist(), "labels": rows["label"].tolist(),
            "splits": rows["split"].tolist()}


def _pair_entry(table: pd.DataFrame, pair: tuple[int, int, int], other=None) -> dict:
    i, j, bits = pair
    second = table if other is None else other
    return {"path": table["path"].iat[i], "label": table["label"].iat[i],
            "split": table["split"].iat[i], "other_path": second["path"].iat[j],
            "other_label": second["label"].iat[j], "other_split": second["split"].iat[j],
            "distance": bits / BITS_PER_UNIT}


def _crosses_splits(entry: dict) -> bool:
    return len({s for s in entry["splits"] if s is not None}) > 1


def _patient_leakage(table: pd.DataFrame) -> dict | None:
    grouped = table[table["group"].notna() & table["split"].notna()]
    if grouped.empty:
        return None
    splits_per_group = grouped.groupby("group")["split"].agg(lambda s: tuple(sorted(set(s))))
    shared = splits_per_group[splits_per_group.map(len) > 1]
    images = grouped[grouped["group"].isin(shared.index)]
    return {"groups": int(grouped["group"].nunique()), "shared_groups": len(shared),
            "shared_images": len(images),
            "by_splits": {" & ".join(k): int(v) for k, v in shared.value_counts().items()},
            "examples": {str(g): images.loc[images["group"] == g, "path"].tolist()[:6]
                         for g in shared.index[:10]}}


def _against(table: pd.DataFrame, records: list[dict], other_source, max_distance: int,
             workers: int | None) -> dict:
    """Exact and near duplicates between the audited data and a second dataset."""
    other, _ = load_manifest(other_source)
    other_records = inspect_images(other["path"].tolist(), workers=workers)
    other = _with_records(other, other_records)
    own_sha = {sha: i for i, sha in enumerate(table["sha256"]) if sha}
    exact = [(own_sha[sha], j) for j, sha in enumerate(other["sha256"]) if sha in own_sha]
    own = [i for i, r in enumerate(records) if r.get("phash")]
    theirs = [j for j, r in enumerate(other_records) if r.get("phash")]
    pairs, closest = close_pairs(hash_matrix([records[i]["phash"] for i in own]),
                                 hash_matrix([other_records[j]["phash"] for j in theirs]),
                                 max_bits=max_distance * BITS_PER_UNIT, closest=CLOSEST_PAIRS)
    pairs = [(own[i], theirs[j], bits) for i, j, bits in pairs]
    closest = [(own[i], theirs[j], bits) for i, j, bits in closest]
    return {"source": str(other_source), "images": len(other),
            "exact_duplicates": len(exact),
            "near_duplicate_pairs": len(pairs),
            "images_shared": len({i for i, _, _ in pairs} | {i for i, _ in exact}),
            "pairs": [_pair_entry(table, p, other) for p in pairs[:MAX_LISTED_PAIRS]],
            "closest_pairs": [_pair_entry(table, p, other) for p in closest]}


def _with_records(manifest: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    facts = pd.DataFrame(records).drop(columns=["path"])
    for column in ("format", "mode", "bit_depth", "width", "height", "phash", "mean", "std",
                   "border_mean", "reason"):
        if column not in facts:
            facts[column] = None
    table = pd.concat([manifest.reset_index(drop=True), facts], axis=1)
    table["error"] = table["error"].where(table["error"].notna(), None)
    table["split"] = table["split"].astype(object).where(table["split"].notna(), None)
    table["size"] = [f"{w:.0f}x{h:.0f}" if pd.notna(w) else None
                     for w, h in zip(table["width"], table["height"], strict=True)]
    return table


def _duplicates_report(table: pd.DataFrame, records: list[dict], max_distance: int) -> dict:
    """Exact and near-duplicate groups and pairs; fills table["near_duplicate_group"]."""
    components, pairs, closest = _duplicate_groups(records, max_distance)
    table["near_duplicate_group"] = None
    near_groups = []
    for number, members in enumerate(components, start=1):
        table.loc[members, "near_duplicate_group"] = f"dup-{number}"
        near_groups.append(_group_entry(table, members, f"dup-{number}"))
    exact = table[table["sha256"].notna() & table.duplicated("sha256", keep=False)]
    return {
        "max_distance": max_distance,
        "hash": f"perceptual DCT hash, {BITS_PER_UNIT * 64} bits; distance in bits per 64",
        "exact_groups": [_group_entry(table, rows.index, f"sha256:{sha[:12]}")
                         for sha, rows in exact.groupby("sha256", sort=False)],
        "near_groups": near_groups,
        "images_in_near_groups": int(sum(len(g["paths"]) for g in near_groups)),
        "pairs_total": len(pairs),
        "pairs": [_pair_entry(table, p) for p in pairs[:MAX_LISTED_PAIRS]],
        "closest_pairs": [_pair_entry(table, p) for p in closest],
        "label_conflicts": [g for g in near_groups if len(set(g["labels"])) > 1],
    }


@dataclass(frozen=True)
class ImageReading:
    """How the audit reads images: in `workers` threads (None: one per core), calling
    `progress(done, total)` as files are read."""

    workers: int | None = None
    progress: Callable[[int, int], None] | None = None


def audit_dataset(
    source: str | Path,
    split_file: str | Path | None = None,
    against: str | Path | None = None,
    group_pattern: str | None = None,
    max_distance: int = 4,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    reading: ImageReading = ImageReading(),
) -> dict:
    """Audit a dataset (any `--data` source); returns the report and writes it to out_dir."""
    if not 0 <= max_distance <= 32:
        raise CxrkitError(f"max_distance={max_distance} must be between 0 and 32 "
                          "(bits per 64 of the perceptual hash)")
    if out_dir is not None:
        from cxrkit.data.audit_report import check_output_folder

        check_output_folder(out_dir, overwrite)
    started = time.perf_counter()
    manifest, ignored, grouping = _load(source, group_pattern, split_file)
    records = inspect_images(manifest["path"].tolist(), workers=reading.workers, progress=reading.progress)
    table = _with_records(manifest, records)
    duplicates = _duplicates_report(table, records, max_distance)
    counts = table["label"].value_counts()
    report = {
        "source": str(source),
        "split_file": str(split_file) if split_file else None,
        "images": len(table),
        "classes": {str(k): int(v) for k, v in counts.sort_index().items()},
        "imbalance_ratio": round(float(counts.max() / counts.min()), 2),
        "splits": {split: {str(k): int(v) for k, v in
                           table.loc[table["split"] == split, "label"].value_counts()
                           .sort_index().items()}
                   for split in SPLIT_NAMES if (table["split"] == split).any()},
        "grouping": {**grouping, "groups": int(table["group"].nunique())
                     if table["group"].notna().any() else None},
        "ignored_files": [str(p) for p in ignored],
        "problems": {kind: table.loc[table["error"] == kind, ["path", "reason"]]
                     .to_dict("records") for kind in ("empty", "unreadable", "corrupt")},
        "properties": _properties(table),
        "duplicates": duplicates,
        "shortcuts": _shortcut_hints(table),
    }
    crossing = [g for g in duplicates["near_groups"] if _crosses_splits(g)]
    patients = _patient_leakage(table)
    leakage = {"duplicates_across_splits": crossing, "patients_across_splits": patients,
               "against": None}
    if against is not None:
        leakage["against"] = _against(table, records, against, max_distance, reading.workers)
    leakage["found"] = bool(crossing or (patients and patients["shared_groups"])
                            or (leakage["against"] and leakage["against"]["images_shared"]))
    report["leakage"] = leakage
    report["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        from cxrkit.data.audit_report import write_audit

        report["outputs"] = write_audit(report, table, Path(out_dir))
    return report
