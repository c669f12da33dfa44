"""Checks on a manifest that must fail before any decoding or training: duplicate and
conflicting rows, classes too small to split, and class names that look like typos."""

from __future__ import annotations

import difflib

import pandas as pd

from cxrkit.errors import CxrkitError

MIN_IMAGES_PER_CLASS = 10
TYPO_SIMILARITY = 0.8
TYPO_SIZE_RATIO = 0.1


def check_rows(manifest: pd.DataFrame, source) -> None:
    """One image listed twice, or with two labels, is refused (it would leak across splits)."""
    counts = manifest.groupby("path")["label"].agg(["size", "nunique"])
    conflicting = counts[counts["nunique"] > 1]
    if len(conflicting):
        path = conflicting.index[0]
        labels = sorted(manifest.loc[manifest["path"] == path, "label"].unique())
        raise CxrkitError(f"data={source}: {len(conflicting)} image(s) have more than one label, "
                          f"e.g. {path} is {' and '.join(map(repr, labels))}; keep one row per image")
    repeated = counts[counts["size"] > 1]
    if len(repeated):
        raise CxrkitError(f"data={source}: {len(repeated)} image(s) are listed more than once, "
                          f"e.g. {repeated.index[0]} ({int(repeated['size'].iloc[0])} rows); "
                          "keep one row per image")


def likely_typo(label: str, counts: dict[str, int]) -> str | None:
    """The class `label` is probably a misspelling of, or None.

    A misspelling has a similar name of about the same length (a letter added, dropped or
    swapped; 'Abnormal' is not one of 'Normal') and far fewer images than the class it copies.
    """
    others = [name for name in counts if name != label and abs(len(name) - len(label)) <= 1]
    lowered = {name.lower(): name for name in others}
    close = difflib.get_close_matches(label.lower(), list(lowered), n=1, cutoff=TYPO_SIMILARITY)
    if not close:
        return None
    match = lowered[close[0]]
    rare = counts[label] <= TYPO_SIZE_RATIO * counts[match] or counts[label] < MIN_IMAGES_PER_CLASS
    return match if rare and counts[label] < counts[match] else None


def check_training_classes(manifest: pd.DataFrame, source) -> None:
    """Refuse likely label typos and classes with fewer than MIN_IMAGES_PER_CLASS images."""
    counts = manifest["label"].value_counts().to_dict()
    for label, count in sorted(counts.items(), key=lambda item: item[1]):
        match = likely_typo(label, counts)
        if match is not None:
            raise CxrkitError(f"data={source}: class {label!r} ({count} image(s)) looks like a typo "
                              f"of {match!r} ({counts[match]} images); fix the label(s) so the model "
                              "does not learn a spurious extra class")
    small = {label: count for label, count in counts.items() if count < MIN_IMAGES_PER_CLASS}
    if small:
        listed = ", ".join(f"{label!r} ({count})" for label, count in sorted(small.items()))
        raise CxrkitError(f"data={source}: class(es) {listed} have fewer than {MIN_IMAGES_PER_CLASS} "
                          "images, too few to split into train, validation and test; add images "
                          "or remove the class")


def suggest_class(label: str, classes: list[str]) -> str | None:
    """A model class whose name plausibly matches a data label (case, spelling, abbreviation)."""
    lowered = {name.lower(): name for name in classes}
    close = difflib.get_close_matches(label.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return lowered[close[0]]
    if len(label) <= 4:  # an abbreviation such as 'tb': the one class with its first letter
        initial = [name for name in classes if name[:1].lower() == label[:1].lower()]
        return initial[0] if len(initial) == 1 else None
    return None
