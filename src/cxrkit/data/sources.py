"""Turn data sources into one manifest: a DataFrame with path, label, group, split and site.

Supported sources: a class-per-folder tree, pre-split `train|val|test/<class>/` folders,
a CSV manifest (`path,label[,split][,patient|group][,site]`, paths relative to the CSV), and
`hf:NAME[:CONFIG]` / `kaggle:HANDLE` through optional extras. Every row has a site (the
hospital or collection it came from): the CSV's `site` column, the name given with the
source, or else the source's own name (`tb` for `.../tb`, `tb-nlm` for `tb-nlm.csv`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cxrkit.data.io import is_image_file
from cxrkit.data.manifest import MANIFEST_COLUMNS, SPLIT_ALIASES
from cxrkit.data.validation import check_rows
from cxrkit.errors import CxrkitError

if TYPE_CHECKING:
    from cxrkit.config import DataSource

GENERIC_NAMES = {"test", "testing", "val", "valid", "validation", "train", "images", "data"}


def load_sources(sources: list[DataSource], group_pattern: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Several sources as one manifest: each with its site and its labels renamed by its class map."""
    if not sources:
        raise CxrkitError("no data: pass data=DIR (a class-per-folder tree, train/val/test folders or a CSV)")
    parts, ignored = [], []
    for source in sources:
        manifest, skipped = load_manifest(source.path, group_pattern, site=source.site)
        parts.append(rename_classes(manifest, source.class_map, source.path))
        ignored += skipped
    manifest = pd.concat(parts, ignore_index=True)
    twice = manifest["path"][manifest["path"].duplicated()]
    if len(twice):
        raise CxrkitError(f"{len(twice)} image(s) are listed by more than one `data` source, e.g. "
                          f"{twice.iloc[0]}; give each image once")
    _check_manifest(manifest, " + ".join(s.path for s in sources))
    return manifest, ignored


def rename_classes(manifest: pd.DataFrame, class_map: dict[str, str], source: str) -> pd.DataFrame:
    """Labels renamed DATA_CLASS -> CLASS; a name the source does not have is an error."""
    unknown = sorted(set(class_map) - set(manifest["label"]))
    if unknown:
        raise CxrkitError(f"`class_map` for {source} names {unknown}, which are not classes there "
                          f"(its classes are {', '.join(sorted(manifest['label'].unique()))})")
    return manifest.assign(label=manifest["label"].replace(class_map)) if class_map else manifest


def parse_class_map(text: str | None) -> dict[str, str]:
    """'normal=Normal,tb=Tuberculosis' -> {'normal': 'Normal', 'tb': 'Tuberculosis'}."""
    if not text or text == "-":
        return {}
    mapping = {}
    for item in text.split(","):
        if item.count("=") != 1 or not all(part.strip() for part in item.split("=")):
            raise CxrkitError(f"class_map={text!r}: use DATA_CLASS=MODEL_CLASS pairs separated "
                              "by commas, e.g. class_map=normal=Normal,tb=Tuberculosis")
        source, target = (part.strip() for part in item.split("="))
        mapping[source] = target
    return mapping


def default_site_name(source: str | Path) -> str:
    """A source's own name: 'tb' for .../tb, 'tb-nlm' for tb-nlm.csv, 'pneumonia-test' for .../pneumonia/test."""
    text = str(source)
    if text.startswith(("hf:", "kaggle:")):
        return text.split(":", 1)[1].replace("/", "-").replace(":", "-")
    path = Path(text).expanduser().resolve()
    if path.suffix.lower() == ".csv":
        return path.stem
    return f"{path.parent.name}-{path.name}" if path.name.lower() in GENERIC_NAMES else path.name


def load_manifest(source: str | Path, group_pattern: str | None = None,
                  site: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Read a source into (manifest, ignored files); see the module docstring for layouts.

    `site` names the source's site; a CSV with a `site` column takes its sites from there.
    """
    text = str(source)
    if text.startswith("hf:"):
        from cxrkit.data.hub import hf_manifest

        manifest, ignored = hf_manifest(text[3:]), []
    elif text.startswith("kaggle:"):
        from cxrkit.data.hub import kaggle_folder

        manifest, _ = _from_path(kaggle_folder(text[7:]), source)
        ignored = []
    else:
        manifest, ignored = _from_path(Path(source).expanduser(), source)
    if group_pattern:
        manifest["group"] = groups_from_pattern(manifest["path"], group_pattern)
    own_sites = text.lower().endswith(".csv") and "site" in manifest.columns
    if own_sites and site:
        raise CxrkitError(f"site={site}: {source} has its own site column; drop `site` for it")
    if not own_sites:
        manifest["site"] = site or default_site_name(source)
    _check_manifest(manifest, source)
    check_rows(manifest, source)
    return manifest.reset_index(drop=True), ignored


def _from_path(path: Path, source: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """A local CSV manifest or folder tree as (manifest, ignored files)."""
    if not path.exists():
        raise CxrkitError(f"data={source}: no such file or folder; give a class-per-folder "
                          "directory, a train/val/test directory or a CSV manifest")
    return _from_csv(path) if path.is_file() else _from_folders(path)


def groups_from_pattern(paths: pd.Series, pattern: str) -> pd.Series:
    """Group ids from a regex on file names (first capture group, else the whole match)."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise CxrkitError(f"group_pattern={pattern!r} is not a valid regex ({error})") from error

    def group_of(path: str) -> str:
        name = Path(path).name
        match = regex.search(name)
        if not match:
            return name
        return match.group(1) if regex.groups else match.group(0)

    return paths.map(group_of)


def _from_csv(csv_path: Path) -> tuple[pd.DataFrame, list[str]]:
    if csv_path.suffix.lower() != ".csv":
        raise CxrkitError(f"data={csv_path}: a file source must be a .csv manifest with columns path,label")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise CxrkitError(f"{csv_path}: cannot parse CSV ({error})") from error
    table.columns = [c.strip().lower() for c in table.columns]
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise CxrkitError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
                          "a manifest needs path,label[,split][,patient]")
    root = csv_path.parent
    manifest = pd.DataFrame({
        "path": [str((root / p).resolve()) for p in table["path"]],
        "label": table["label"].str.strip(),
    })
    group_column = next((c for c in ("group", "patient", "patient_id") if c in table.columns), None)
    manifest["group"] = table[group_column].replace("", None) if group_column else None
    if "split" in table.columns:
        splits = table["split"].str.strip().str.lower()
        unknown = sorted(set(splits) - set(SPLIT_ALIASES) - {""})
        if unknown:
            raise CxrkitError(f"{csv_path}: unknown split value(s) {unknown}; use train, val or test")
        manifest["split"] = splits.map(SPLIT_ALIASES)
    else:
        manifest["split"] = None
    if "site" in table.columns:
        sites = table["site"].str.strip()
        empty = [index + 2 for index in range(len(sites)) if not sites.iloc[index]]
        if empty:
            shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
            raise CxrkitError(f"{csv_path}: column site is empty in {len(empty)} row(s) (line(s) "
                              f"{shown}); give every row a site, or drop the column")
        manifest["site"] = sites.to_numpy()
    absent = [p for p in manifest["path"] if not Path(p).is_file()]
    if absent:
        raise CxrkitError(f"{csv_path}: {len(absent)} listed file(s) do not exist, e.g. {absent[0]}")
    return manifest, []


def _from_folders(root: Path) -> tuple[pd.DataFrame, list[str]]:
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = {SPLIT_ALIASES[c.name.lower()]: c for c in children if c.name.lower() in SPLIT_ALIASES}
    rows: list[tuple[str, str, None, str | None]] = []
    ignored: list[str] = []
    if split_dirs:
        if "train" not in split_dirs:
            raise CxrkitError(f"data={root}: has split folders {sorted(split_dirs)} but no train/")
        for split, split_dir in split_dirs.items():
            rows += _class_folders(split_dir, split, ignored)
    else:
        rows = _class_folders(root, None, ignored)
    if not rows:
        raise CxrkitError(f"data={root}: no images found; expected {root}/<class>/*.png "
                          f"(or train/val/test/<class>/) with .png/.jpg/.bmp/.tif/.dcm files")
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS), ignored


def _class_folders(root: Path, split: str | None, ignored: list[str]) -> list:
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(class_dir.rglob("*")):
            if not file.is_file() or file.name.startswith("."):
                continue
            if is_image_file(file):
                rows.append((str(file.resolve()), class_dir.name, None, split))
            else:
                ignored.append(str(file))
    return rows


def _check_manifest(manifest: pd.DataFrame, source) -> None:
    if manifest.empty:
        raise CxrkitError(f"data={source}: no images found")
    labels = sorted(manifest["label"].unique())
    if len(labels) < 2:
        raise CxrkitError(f"data={source}: only one class ({labels[0]!r}) found; a classifier needs "
                          "at least two class folders (e.g. Normal/ and Tuberculosis/)")
    if "" in labels:
        raise CxrkitError(f"data={source}: some rows have an empty label")
