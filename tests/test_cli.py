"""Bad input through the real CLI: one-line errors, non-zero exit, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_image
from cxrkit.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cxrkit", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["train", "--data", "/nonexistent/folder"], ["/nonexistent/folder", "no such file or folder"]),
    (["train", "--recipe", "no-such-recipe", "--data", "."], ["unknown recipe", "tb-fast"]),
    (["train", "--model", "resnet99", "--data", "{data}"], ["unknown model", "resnet18"]),
    (["train", "--set", "train.nonsense=1", "--data", "{data}"], ["unknown option train.nonsense"]),
    (["train", "--optimizer", "adagrad", "--data", "{data}"], ["train.optimizer"]),
    (["train", "--data", "{one_class}"], ["only one class"]),
    (["predict", "/nonexistent/run", "x.png", "--out", "p.csv"], ["no model checkpoint"]),
])
def test_bad_input_gives_one_line_error(tmp_path: Path, tiny_folder: Path, args, fragments):
    one_class = tmp_path / "one"
    write_image(one_class / "Normal" / "a.png", 0)
    args = [a.format(data=tiny_folder, one_class=one_class) for a in args]
    if args[0] == "train":
        args += ["--output-dir", str(tmp_path / "runs")]
    assert_one_line_error(run_cli(*args), *fragments)


def test_unknown_flag_is_rejected_by_the_parser():
    result = run_cli("train", "--no-such-flag")
    assert result.returncode == 2 and "unrecognized arguments: --no-such-flag" in result.stderr


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("train", "predict", "recipes", "quickstart"):
        assert verb in out


def test_a_missing_command_module_fails_loudly(monkeypatch):
    import cxrkit.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "no_such_command"))
    with pytest.raises(ModuleNotFoundError, match="cxrkit.commands.no_such_command"):
        cli.build_parser()


def test_recipes_lists_every_seed_recipe(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("tb-densenet121", "tb-alexnet-frozen", "chest3-cnn", "tb-baseline-cnn", "pneumonia-resnet18",
                 "tb-fast", "pneumonia-fast", "chest3-fast"):
        assert name in out
