"""Library errors name Python parameters; the command line shows the flags the user typed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from cxrkit.cli import main
from cxrkit.commands.flags import PARAMETER_FLAGS, as_cli
from cxrkit.errors import CxrkitError

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cxrkit"
# the evaluation module is being split into one module per job; its messages follow with it
NOT_YET: set[str] = set()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


def test_calibration_settings_name_the_parameter_in_python_and_the_flag_on_the_cli(tmp_path, capsys):
    from cxrkit.deployment.calibrate import SiteAnalysis

    with pytest.raises(CxrkitError, match=r"^n_bootstrap=50: use at least 100") as raised:
        SiteAnalysis(n_bootstrap=50)
    assert "--" not in str(raised.value)
    assert main(["calibrate", str(tmp_path), "--data", str(tmp_path), "--bootstrap", "50"]) == 2
    err = one_error_line(capsys)
    assert "error: --bootstrap 50: use at least 100" in err and "n_bootstrap" not in err


def test_sensitivity_target_and_explain_method_name_parameters(tmp_path, capsys):
    from cxrkit.evaluation.thresholds import build_operating_points
    from cxrkit.explain.methods import explain

    with pytest.raises(CxrkitError, match=r"target_sensitivity=1.5 must be between 0 and 1"):
        build_operating_points(["Normal", "Tuberculosis"], 1, np.array([0, 1]), np.eye(2), target_sensitivity=1.5)
    with pytest.raises(CxrkitError, match=r"^method='saliency': choose one of gradcam"):
        explain(None, np.zeros((8, 8), dtype=np.uint8), method="saliency")
    assert as_cli("method='saliency': choose one of gradcam") == "--method 'saliency': choose one of gradcam"


def test_training_errors_name_config_fields_and_the_cli_names_flags(tmp_path, tiny_folder, capsys):
    import cxrkit
    from cxrkit.config import build_config

    with pytest.raises(CxrkitError, match=r"^name='a/b': a run name is one folder name inside `output_dir`"):
        cxrkit.train(build_config("tb-fast", {"data.source": str(tiny_folder), "name": "a/b",
                                              "output_dir": str(tmp_path)}))
    assert main(["train", "--data", str(tiny_folder), "--name", "a/b", "--output-dir", str(tmp_path)]) == 2
    err = one_error_line(capsys)
    assert "--name 'a/b': a run name is one folder name inside --output-dir" in err
    assert "use --output-dir to choose where runs go" in err


@pytest.mark.parametrize("message, shown", [
    ("n_bootstrap=50: use at least 100", "--bootstrap 50: use at least 100"),
    ("pass overwrite=True to replace it", "pass --overwrite to replace it"),
    ("choose another `name` or `output_dir`", "choose another --name or --output-dir"),
    ("data.strict_split=True: 2 groups cross; or drop `data.strict_split`",
     "--strict: 2 groups cross; or drop --strict"),
    ("class_map='x': e.g. class_map=normal=Normal,tb=Tuberculosis",
     "--class-map 'x': e.g. --class-map normal=Normal,tb=Tuberculosis"),
    # left alone: config keys, words that are not parameters, commands in backticks, names inside words
    ("model.weights=none and train.lr=0.1", "model.weights=none and train.lr=0.1"),
    ("metadata=1, the data folder, `cxrkit ood RUN --overwrite`", "metadata=1, the data folder, "
                                                                   "`cxrkit ood RUN --overwrite`"),
])
def test_the_cli_maps_parameter_names_to_flags_in_one_table(message, shown):
    assert as_cli(message) == shown


def _error_texts(path: Path):
    """(line, text) of the string parts of every CxrkitError/TrainingInterrupted raised in a file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("CxrkitError", "TrainingInterrupted"):
            parts = [n.value for arg in node.args for n in ast.walk(arg)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            yield node.lineno, "".join(parts)


def test_library_errors_never_speak_in_cli_flags():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("commands/") or relative == "cli.py" or relative in NOT_YET:
            continue
        for line, text in _error_texts(path):
            outside_commands = re.sub(r"`cxrkit [^`]*`", "", text)  # a whole command to run is fine
            if re.search(r"(?<![\w-])--[a-z]", outside_commands):
                offenders.append(f"{relative}:{line}: {text[:80]}")
    assert not offenders, "library errors that name CLI flags (name the parameter instead):\n" + "\n".join(offenders)


def test_every_parameter_a_library_error_names_has_a_flag():
    """A `name=` or `` `name` `` in a library error that the table lacks would reach the CLI as is."""
    # parameters no command takes from the user, and counts written as n=...
    python_only = {"num_classes", "background", "n"}
    known_words = set(PARAMETER_FLAGS) | python_only
    missing = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("commands/") or relative == "cli.py":
            continue
        for _, text in _error_texts(path):
            text = re.sub(r"`cxrkit [^`]*`", "", text)
            missing |= {name for name in re.findall(r"`([a-z_]+)`", text) if name not in known_words}
            missing |= {name for name in re.findall(r"(?<![\w.`=,-])([a-z_]+)=", text)
                        if name not in known_words}
    assert not missing, f"add these to PARAMETER_FLAGS (or reword): {sorted(missing)}"
