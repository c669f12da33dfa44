"""The run folder: the one place that knows its files and reads or writes them.

Every command reads a run only through `RunFolder`: the checkpoint (weights_only=True), the
model card, split.csv (parsed here only), the model's fingerprint (sha256 of model.ckpt,
computed here only), the frozen operating points (always checked against that fingerprint),
metrics, the model id and whether training finished. See docs/run-folder.md for the files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from cxrkit.errors import CxrkitError
from cxrkit.run.card import ModelCard
from cxrkit.run.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from cxrkit.run.decision import OperatingPoints, StaleOperatingPoints

SPLIT_FILE = "split.csv"
CLASSES_FILE = "classes.json"
CONFIG_FILE = "config.yaml"
TRAINING_FILE = "training.json"
OPERATING_POINTS_FILE = "operating_points.json"
METRICS_FILE = "metrics.json"
TEST_METRICS_FILE = "test_metrics.json"
SPLIT_COLUMNS = ("path", "label", "split")
LEGACY_KEYS = ("classes", "preprocessing", "model", "single_logit", "info")  # now in the card


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_summary(table: pd.DataFrame, sources: list[str]) -> dict:
    """The training-data summary of a model card: sources, images and classes per split, sites."""
    def counts(values: pd.Series) -> dict[str, int]:
        return {str(key): int(n) for key, n in values.value_counts().sort_index().items()}

    summary = {"sources": sources, "images": counts(table["split"]),
               "classes": {str(split): counts(rows["label"]) for split, rows in table.groupby("split")}}
    if "site" in table.columns and table["site"].astype(str).str.len().any():
        counts = table.groupby(["site", "split"]).size()
        summary["sites"] = {str(site): {str(split): int(n) for split, n in counts[site].items()}
                            for site in counts.index.get_level_values(0).unique()}
    return summary


class RunFolder:
    """A run folder made by `cxrkit train` (given as the folder or its model.ckpt)."""

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if path.is_file():
            self.path, self.checkpoint_path = path.parent, path
        else:
            self.path, self.checkpoint_path = path, path / CHECKPOINT_NAME
        self._fingerprint: tuple[tuple, str] | None = None
        self._card: tuple[tuple, ModelCard] | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def is_finished(self) -> bool:
        """Training completed: model.ckpt and training.json exist."""
        return self.checkpoint_path.is_file() and self.file(TRAINING_FILE).is_file()

    def is_evaluated(self) -> bool:
        """The run's own test evaluation exists: model.ckpt and metrics.json."""
        return self.checkpoint_path.is_file() and self.file(METRICS_FILE).is_file()

    # ------------------------------------------------------------------ checkpoint and card

    def read_checkpoint(self) -> dict:
        """model.ckpt as a dict, loaded weights-only."""
        return read_checkpoint(self.checkpoint_path)

    def write_model(self, state_dict: dict, card: ModelCard, ood: dict | None = None,
                    segmenter: dict | None = None) -> None:
        """Write model.ckpt: the weights, the card's training facts, the OOD reference's tensors
        and (for runs that use the lungs) the segmenter's weights."""
        checkpoint = {"card": card.training_facts().to_dict(), "state_dict": state_dict, "ood": ood}
        if segmenter:
            checkpoint["segmenter"] = segmenter
        write_checkpoint(self.checkpoint_path, checkpoint)

    def replace_ood_reference(self, reference: dict, summary: dict) -> None:
        """Store a new OOD reference in model.ckpt (card summary included). The weights are
        unchanged, so operating points frozen for this model are re-stamped with the new
        fingerprint (site points too)."""
        old = self.fingerprint()
        checkpoint = self.read_checkpoint()
        card = replace(self.training_card(), ood=summary)
        checkpoint = {key: value for key, value in checkpoint.items() if key not in LEGACY_KEYS}
        checkpoint |= {"ood": reference, "card": card.training_facts().to_dict()}
        write_checkpoint(self.checkpoint_path, checkpoint)
        document = self.read_json(OPERATING_POINTS_FILE)
        if document is None:
            return
        new = self.fingerprint()
        for entry in [document, *(document.get("sites") or {}).values()]:
            if entry.get("model_sha256") == old:
                entry["model_sha256"] = new
        self._write_json(OPERATING_POINTS_FILE, document)

    def fingerprint(self) -> str:
        """sha256 of model.ckpt: names the exact weights; frozen operating points carry it."""
        key = self._stat(self.checkpoint_path)
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, file_sha256(self.checkpoint_path))
        return self._fingerprint[1]

    def model_id(self) -> str:
        """Run name, `@`, 12 hex digits of model.ckpt's sha256."""
        return f"{self.name}@{self.fingerprint()[:12]}"

    def training_card(self) -> ModelCard:
        """The card as model.ckpt holds it (checkpoints from before the card get one built)."""
        key = self._stat(self.checkpoint_path)
        if self._card is None or self._card[0] != key:
            card = ModelCard.from_checkpoint(self.read_checkpoint(), str(self.checkpoint_path))
            self._card = (key, card)
        return self._card[1]

    def card(self, with_points: bool = True) -> ModelCard:
        """The full card: the training facts plus the fingerprint, model id, verified operating
        points, test metrics and per-site metrics the run has now. `with_points=False` leaves
        the operating points out (for evaluation, which may re-choose stale ones)."""
        card = self.training_card()
        if card.training_data is None and self.file(SPLIT_FILE).is_file():
            card = replace(card, training_data=split_summary(self.split(), self.data_sources()))
        points = self.operating_points() if with_points else None
        metrics = self.read_json(METRICS_FILE) or {}
        return replace(card, model_id=self.model_id(), model_sha256=self.fingerprint(),
                       operating_points=None if points is None else points.document,
                       test_metrics=self.read_json(TEST_METRICS_FILE),
                       per_site_metrics=metrics.get("per_site"), source=str(self.path))

    # ------------------------------------------------------------------ operating points

    def operating_points(self) -> OperatingPoints | None:
        """The frozen operating points, checked against model.ckpt; None when not chosen yet.

        Raises StaleOperatingPoints (a CxrkitError) when they were chosen for other weights.
        """
        document = self.read_json(OPERATING_POINTS_FILE, "delete it and run `cxrkit evaluate RUN "
                                                         "--overwrite` to choose the points again")
        if document is None:
            return None
        card = self.training_card()
        return OperatingPoints(document, card.classes, card.positive_index, self.fingerprint(),
                               str(self.file(OPERATING_POINTS_FILE)))

    def stale_operating_points(self) -> dict | None:
        """The operating points document when it belongs to other weights (None otherwise)."""
        try:
            self.operating_points()
        except StaleOperatingPoints as stale:
            return stale.document
        return None

    def write_operating_points(self, document: dict) -> OperatingPoints:
        """Freeze `document` for the model.ckpt in the folder now (stamped with its fingerprint)."""
        document = {**document, "model_sha256": self.fingerprint()}
        card = self.training_card()
        points = OperatingPoints(document, card.classes, card.positive_index, self.fingerprint(),
                                 str(self.file(OPERATING_POINTS_FILE)))
        self._write_json(OPERATING_POINTS_FILE, document)
        return points

    # ------------------------------------------------------------------ split, classes, config

    def split(self) -> pd.DataFrame:
        """split.csv (path, label, group, split[, site]) as strings; the one parser of it."""
        path = self.file(SPLIT_FILE)
        if not path.is_file():
            raise CxrkitError(f"{path}: missing; the run's split.csv is written by `cxrkit train`")
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            raise CxrkitError(f"{path}: not a readable CSV ({error})") from error
        missing = set(SPLIT_COLUMNS) - set(table.columns)
        if missing:
            raise CxrkitError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return table

    def split_rows(self, split: str) -> pd.DataFrame:
        """The rows of one split (train, val or test)."""
        table = self.split()
        return table[table["split"] == split].reset_index(drop=True)

    def write_split(self, manifest: pd.DataFrame) -> None:
        """split.csv: path,label,group,split[,site] for reuse with --split-file."""
        columns = ["path", "label", "group", "split"] + (["site"] if "site" in manifest.columns else [])
        manifest[columns].to_csv(self.file(SPLIT_FILE), index=False)

    def write_classes(self, classes: list[str]) -> None:
        """classes.json: the class names in model output order (for people and other tools)."""
        self.file(CLASSES_FILE).write_text(json.dumps(list(classes), indent=2))

    def config(self) -> dict:
        """config.yaml as a mapping ({} when absent)."""
        from cxrkit.config import read_yaml_mapping

        path = self.file(CONFIG_FILE)
        return read_yaml_mapping(path) if path.is_file() else {}

    def data_sources(self) -> list[str]:
        """The data sources named in config.yaml ([] when it names none or cannot be read)."""
        try:
            data = self.config().get("data") or {}
        except CxrkitError:
            return []
        if not isinstance(data, dict):
            return []
        sources = [entry.get("path") for entry in data.get("sources") or [] if isinstance(entry, dict)]
        return [str(source) for source in [data.get("source"), *sources] if source]

    def data_root(self) -> Path | None:
        """The folder of the (first) data source named in config.yaml, None if it names none."""
        sources = self.data_sources()
        if not sources:
            return None
        if sources[0].startswith(("hf:", "kaggle:")):
            from cxrkit.data.cache import cache_root

            return cache_root().resolve()
        path = Path(sources[0]).expanduser().resolve()
        return path if path.is_dir() else path.parent

    # ------------------------------------------------------------------ JSON files

    def read_json(self, name: str, fix: str = "re-run `cxrkit evaluate RUN --overwrite`") -> dict | None:
        """A JSON file of the run (metrics.json, training.json, ...), or None if absent."""
        path = self.file(name)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CxrkitError(f"{path}: not readable JSON ({error}); {fix}") from error
        if not isinstance(data, dict):
            raise CxrkitError(f"{path}: expected a JSON object; {fix}")
        return data

    def _write_json(self, name: str, document: dict) -> None:
        self.file(name).write_text(json.dumps(document, indent=2) + "\n")

    @staticmethod
    def _stat(path: Path) -> tuple:
        try:
            stat = path.stat()
        except OSError as error:
            raise CxrkitError(f"{path}: no model checkpoint; pass a run folder made by `cxrkit train`") from error
        return stat.st_ino, stat.st_size, stat.st_mtime_ns
