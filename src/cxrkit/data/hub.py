"""Hugging Face and Kaggle datasets as manifests of local image files.

`hf_manifest` loads through the `datasets` library (its own download and cache; a
`save_to_disk` folder works too) and writes each image once into a cxrkit cache folder, so
the rest of cxrkit sees plain files. `kaggle_folder` downloads with `kagglehub`; the folder
is then read like any other. Both are optional extras.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from cxrkit.data.cache import cache_root
from cxrkit.data.manifest import MANIFEST_COLUMNS, SPLIT_ALIASES
from cxrkit.errors import CxrkitError

KEPT_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
LABEL_COLUMNS = ("label", "labels", "class", "target")
GROUP_COLUMNS = ("patient", "patient_id", "group")
MANIFEST_FILE = "manifest.csv"


def hf_cache_root() -> Path:
    """Where Hugging Face images are written: $CXRKIT_CACHE_DIR or ~/.cache/cxrkit, then hf/."""
    return cache_root() / "hf"


def _import_datasets():
    try:
        import datasets
    except ImportError as error:
        raise CxrkitError('data=hf:...: needs the Hugging Face datasets library: '
                          'pip install "cxrkit[hf]"') from error
    return datasets


def _load(spec: str):
    """(dataset or DatasetDict, cache folder name) for NAME[:CONFIG] or a save_to_disk folder."""
    datasets = _import_datasets()
    folder = Path(spec).expanduser()
    if folder.is_dir():
        try:
            return datasets.load_from_disk(str(folder)), f"local-{folder.resolve().name}"
        except (FileNotFoundError, ValueError, OSError) as error:
            raise CxrkitError(f"data=hf:{spec}: not a folder written by save_to_disk "
                              f"({error})") from error
    name, _, config = spec.partition(":")
    try:
        loaded = datasets.load_dataset(name, config or None)
    except (ConnectionError, OSError, ValueError) as error:
        raise CxrkitError(
            f"data=hf:{spec}: cannot load the dataset ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]}); check the name and config, and when "
            "offline set HF_HUB_OFFLINE=1 to use the local cache or give a save_to_disk "
            "folder") from error
    return loaded, re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}_{config or 'default'}")


def _columns(dataset, spec: str) -> tuple[str, str, str | None]:
    """(image column, label column, group column or None) from the dataset's features."""
    datasets = _import_datasets()
    features = dataset.features
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if not images:
        raise CxrkitError(f"data=hf:{spec}: no Image column among {list(features)}")
    class_labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
    named = [c for c in features if c.lower() in LABEL_COLUMNS]
    preferred = [c for c in named if c in class_labels] or class_labels or named
    if not preferred:
        raise CxrkitError(f"data=hf:{spec}: no label column (a ClassLabel feature or one "
                          f"named {'/'.join(LABEL_COLUMNS)}) among {list(features)}")
    groups = [c for c in features if c.lower() in GROUP_COLUMNS]
    return images[0], preferred[0], groups[0] if groups else None


def _image_bytes(value: dict) -> tuple[bytes, str]:
    """Raw bytes and file suffix of an undecoded datasets Image value (re-encoded if exotic)."""
    from PIL import Image

    data = value.get("bytes")
    if data is None:
        data = Path(value["path"]).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        suffix = KEPT_FORMATS.get(image.format or "")
        if suffix:
            return data, suffix
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), ".png"


def _materialise(splits: dict, spec: str, target: Path) -> pd.DataFrame:
    """Write every image of every split under target and return the manifest."""
    datasets = _import_datasets()
    rows = []
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        for split_name, dataset in splits.items():
            image_column, label_column, group_column = _columns(dataset, spec)
            label_feature = dataset.features[label_column]
            undecoded = dataset.cast_column(image_column, datasets.Image(decode=False))
            folder = staging / split_name
            folder.mkdir()
            for index, row in enumerate(undecoded):
                data, suffix = _image_bytes(row[image_column])
                (folder / f"{index:06d}{suffix}").write_bytes(data)
                label = row[label_column]
                if isinstance(label_feature, datasets.ClassLabel):
                    label = label_feature.int2str(label)
                group = row[group_column] if group_column else None
                rows.append((f"{split_name}/{index:06d}{suffix}", str(label),
                             None if group is None else str(group), split_name))
        manifest = pd.DataFrame(rows, columns=["file", "label", "group", "split"])
        manifest.to_csv(staging / MANIFEST_FILE, index=False)
        try:
            staging.rename(target)
        except OSError:
            if not (target / MANIFEST_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _read_materialised(target)


def _read_materialised(target: Path) -> pd.DataFrame:
    table = pd.read_csv(target / MANIFEST_FILE, dtype=str, keep_default_na=False)
    return pd.DataFrame({
        "path": [str(target / f) for f in table["file"]],
        "label": table["label"],
        "group": table["group"].replace("", None),
        "split": table["split"].map(lambda s: SPLIT_ALIASES.get(s.lower())),
    })[MANIFEST_COLUMNS]


def hf_manifest(spec: str) -> pd.DataFrame:
    """Manifest (path, label, group, split) of a Hugging Face dataset `NAME[:CONFIG]`.

    Label names come from the ClassLabel feature; train/validation/test splits map to
    train/val/test. Images are written once under `hf_cache_root()` and reused.
    """
    loaded, cache_name = _load(spec)
    datasets = _import_datasets()
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    unknown = [s for s in splits if s.lower() not in SPLIT_ALIASES]
    if unknown:
        raise CxrkitError(f"data=hf:{spec}: split(s) {unknown} are not train/validation/test; "
                          "save the dataset with those split names (DatasetDict) and pass "
                          "the folder")
    fingerprint = "-".join(f"{name}.{d._fingerprint}" for name, d in sorted(splits.items()))
    target = hf_cache_root() / cache_name / re.sub(r"[^A-Za-z0-9._-]+", "_", fingerprint)
    if (target / MANIFEST_FILE).is_file():
        return _read_materialised(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return _materialise(splits, spec, target)
    except OSError as error:
        raise CxrkitError(f"data=hf:{spec}: cannot write images to {target} ({error}); "
                          "set CXRKIT_CACHE_DIR to a writable folder") from error


def _data_root(folder: Path) -> Path:
    """Step down through wrapper folders (a download often holds one folder, the data)."""
    while True:
        entries = [p for p in folder.iterdir()
                   if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


def kaggle_folder(handle: str) -> Path:
    """The local data folder of a Kaggle dataset `owner/name[/versions/N]`, downloaded by
    kagglehub (read like any other folder by `cxrkit.data.sources`)."""
    try:
        import kagglehub
    except ImportError as error:
        raise CxrkitError(f'data=kaggle:{handle}: needs kagglehub: pip install '
                          '"cxrkit[kaggle]"') from error
    from kagglehub import exceptions

    failures = (OSError, ValueError, exceptions.BackendError, exceptions.NotFoundError,
                exceptions.CredentialError, exceptions.UnauthenticatedError,
                exceptions.DataCorruptionError)
    try:
        folder = Path(kagglehub.dataset_download(handle))
    except failures as error:
        raise CxrkitError(
            f"data=kaggle:{handle}: download failed ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]}); check the handle (owner/name), your Kaggle "
            "credentials, and the network (a cached download is reused offline)") from error
    return _data_root(folder)
