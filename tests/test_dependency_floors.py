"""constraints-min.txt pins every direct dependency at its pyproject.toml floor (.ci/min-versions installs it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
REPO = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for items in project["optional-dependencies"].values():
        requirements += [item for item in items if not item.startswith("cxrkit")]
    floors: dict[str, str] = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([0-9.]+)", requirement)
        assert match, f"pyproject.toml: {requirement!r} should be NAME>=FLOOR (a floor the min-versions job can pin)"
        assert floors.setdefault(match.group(1), match.group(2)) == match.group(2), f"two floors for {requirement}"
    return floors


def test_constraints_min_pins_every_floor():
    pins = {}
    for line in (REPO / "constraints-min.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    assert pins == _floors()
