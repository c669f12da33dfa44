"""The split a training run uses: the config's sources read into one manifest, patients grouped
(auto-detected from file names when the data name none), near-duplicates linked, and a split
per row, from a given split file, the data's own split or a seeded stratified grouped split.
Crossing groups in a given split are measured and reported (or refused with `strict_split`).
"""

from __future__ import annotations

import logging

import pandas as pd

from cxrkit.config import Config
from cxrkit.data.sources import groups_from_pattern, load_sources
from cxrkit.data.splits import assign_splits_cached, merge_groups, read_split_file
from cxrkit.data.validation import check_training_classes
from cxrkit.errors import CxrkitError

log = logging.getLogger(__name__)


def build_split(config: Config) -> pd.DataFrame:
    """The manifest with a split per row: from `data.split_file`, the data's own split, or
    stratified and grouped from `data.split_seed`."""
    sources = config.data.all_sources()
    manifest, ignored = load_sources(sources, config.data.group_pattern)
    check_training_classes(manifest, " ".join(str(source.path) for source in sources))
    if not config.data.group_pattern and manifest["group"].isna().all():
        manifest = _auto_groups(manifest, config)
    if ignored:
        log.warning("ignored %d non-image file(s), e.g. %s", len(ignored), ignored[0])
    near_duplicates = _near_duplicate_groups(manifest, config) if config.data.group_near_duplicates else None
    leakage = {}
    if config.data.split_file:
        manifest = read_split_file(config.data.split_file, manifest)
        leakage = split_leakage(manifest, near_duplicates)
    else:
        if manifest["split"].notna().any():  # a split given by the data (folders or CSV column)
            leakage = split_leakage(manifest, near_duplicates)
        manifest = merge_groups(manifest, near_duplicates)
        manifest = assign_splits_cached(manifest, config.data.val_fraction, config.data.test_fraction,
                                        config.data.split_seed)
    _report_leakage(leakage, config)
    manifest.attrs["ignored"] = ignored
    manifest.attrs["split_leakage"] = leakage
    return manifest


def split_leakage(manifest: pd.DataFrame, near_duplicates: list | None) -> dict:
    """Patient groups and near-duplicate groups with images in more than one split, with counts."""
    def crossing(groups: pd.Series) -> tuple[int, int]:
        table = pd.DataFrame({"group": groups.to_numpy(), "split": manifest["split"].to_numpy()}).dropna()
        spread = table.groupby("group")["split"].nunique()
        leaking = spread[spread > 1].index
        return len(leaking), int(table["group"].isin(leaking).sum())

    patients, patient_images = crossing(manifest["group"])
    result = {"patient_groups": patients, "patient_images": patient_images}
    if near_duplicates is not None:
        result["near_duplicate_groups"], result["near_duplicate_images"] = crossing(
            pd.Series(near_duplicates, dtype=object))
    return result


def _report_leakage(leakage: dict, config: Config) -> None:
    groups = leakage.get("patient_groups", 0), leakage.get("near_duplicate_groups", 0)
    if not any(groups):
        return
    text = (f"the given split puts {groups[0]} patient group(s) ({leakage['patient_images']} images) and "
            f"{groups[1]} near-duplicate group(s) ({leakage.get('near_duplicate_images', 0)} images) in "
            "more than one split: test metrics will be optimistic")
    if config.data.strict_split:
        raise CxrkitError(f"data.strict_split=True: {text}; re-split by patient (a class-per-folder layout, "
                          "or another `data.split_file`) or drop `data.strict_split`")
    log.warning("warning: %s (recorded in training.json; `data.strict_split` refuses such a split)", text)


def _auto_groups(manifest: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Group by patient when file names follow a known scheme (e.g. Kermany's personN_); saved in config."""
    from cxrkit.data.audit import detect_group_pattern

    detected = detect_group_pattern(list(manifest["path"]))
    if detected is None:
        return manifest
    description, pattern = detected
    log.info("grouping images by patient: file names follow %s (data.group_pattern=%s)", description, pattern)
    config.data.group_pattern = pattern
    return manifest.assign(group=groups_from_pattern(manifest["path"], pattern))


def _near_duplicate_groups(manifest: pd.DataFrame, config: Config) -> list:
    from cxrkit.data.audit import near_duplicate_groups

    return near_duplicate_groups(list(manifest["path"]), config.data.near_duplicate_distance)
