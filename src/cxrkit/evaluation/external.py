"""An external dataset as one evaluation set, its class names matched to the model's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrkit.data.sources import default_site_name, load_manifest
from cxrkit.data.validation import suggest_class
from cxrkit.errors import CxrkitError


def match_classes(data_labels: list[str], classes: list[str], class_map: dict[str, str],
                  source: str) -> dict[str, str]:
    """Map each data label to a model class: --class-map, then exact, then case-insensitive name."""
    unknown_targets = sorted(set(class_map.values()) - set(classes))
    if unknown_targets:
        raise CxrkitError(f"`class_map` maps to {unknown_targets}, which the model does not have; "
                          f"its classes are {', '.join(classes)}")
    unknown_sources = sorted(set(class_map) - set(data_labels))
    if unknown_sources:
        raise CxrkitError(f"`class_map` names {unknown_sources}, which are not classes of data="
                          f"{source} (its classes are {', '.join(data_labels)})")
    by_lower = {name.lower(): name for name in classes}
    mapping, unmatched = {}, []
    for label in data_labels:
        if label in class_map:
            mapping[label] = class_map[label]
        elif label in classes:
            mapping[label] = label
        elif label.lower() in by_lower:
            mapping[label] = by_lower[label.lower()]
        else:
            unmatched.append(label)
    if unmatched:
        suggested = {label: suggest_class(label, classes) for label in unmatched}
        pairs = [f"{label}={match}" for label, match in suggested.items() if match]
        hint = (f"if they mean the same, map them with class_map={','.join(pairs)}" if pairs else
                "map each to a model class with class_map=DATA_CLASS=MODEL_CLASS if it means one")
        names = ", ".join(map(repr, unmatched))
        raise CxrkitError(f"data={source}: class(es) {names} do not match "
                          f"the model's classes ({', '.join(classes)}); {hint}")
    return mapping


def external_table(data: str | Path, classes: list[str],
                   class_map: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows (path, label) of the whole dataset, labels renamed to model classes; and the mapping."""
    manifest, _ = load_manifest(data)
    mapping = match_classes(sorted(manifest["label"].unique()), classes, class_map or {}, str(data))
    table = pd.DataFrame({"path": manifest["path"], "label": manifest["label"].map(mapping),
                          "source_label": manifest["label"], "site": manifest["site"]})
    return table, mapping


def external_name(data: str | Path) -> str:
    """Folder name for an external dataset's outputs: 'pneumonia-test' for .../pneumonia/test."""
    return default_site_name(data)
