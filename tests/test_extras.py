"""The core install (no extras) trains, evaluates and predicts; a command that needs an extra
says which one in one line and exits 2 (issue 14). Extras are hidden by blocking their imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_TRAINING
from test_export import make_run

EXTRA_MODULES = ["captum", "skimage", "pytorch_grad_cam", "onnx", "onnxscript", "onnxruntime",
                 "fastapi", "uvicorn", "multipart", "python_multipart", "starlette", "gradio",
                 "optuna", "psycopg2", "pydicom", "datasets", "kagglehub", "tensorboard"]
RUNNER = """
import contextlib, io, json, logging, sys
for module in json.loads(sys.argv[1]):
    sys.modules[module] = None  # `import module` now raises ModuleNotFoundError

class CurrentStderr(logging.Handler):
    def emit(self, record):
        sys.stderr.write(self.format(record) + "\\n")

logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[CurrentStderr()])
from cxrkit.cli import main
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append({"argv": argv, "code": code, "err": err.getvalue()})
print(json.dumps(results))
"""
SOURCE = Path(__file__).resolve().parents[1] / "src"


def run_without_extras(commands: list[list[str]], blocked=EXTRA_MODULES) -> list[dict]:
    env = {"PYTHONPATH": str(SOURCE), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(blocked), json.dumps(commands)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_commands_that_need_an_extra_name_it_in_one_line(tmp_path):
    run = make_run(tmp_path / "run", threshold=0.5)
    image = str(Path(__file__).parent / "conftest.py")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nsearch:\n  train.lr: [0.001, 0.01]\n")
    commands = {
        "explain": (["explain", str(run), image], "explain"),
        "export": (["export", str(run)], "export"),
        "serve": (["serve", str(run), "--port", "1"], "api"),
        "tune": (["tune", str(spec), "--trials", "1", "--data", str(tmp_path)], "tune"),
    }
    results = run_without_extras([argv for argv, _ in commands.values()])
    for (name, (_, extra)), result in zip(commands.items(), results, strict=True):
        lines = result["err"].strip().splitlines()
        assert result["code"] == 2, (name, result)
        assert len(lines) == 1 and f"pip install 'cxrkit[{extra}]'" in lines[0], (name, lines)


def test_serve_without_gradio_is_the_api_alone(tmp_path):
    run = make_run(tmp_path / "run")
    script = (f"import sys; sys.modules['gradio'] = None\n"
              f"from fastapi.testclient import TestClient\n"
              f"from cxrkit.serve.app import build_app\n"
              f"client = TestClient(build_app({str(run)!r}))\n"
              f"print(client.get('/api/v1/health').status_code, client.get('/').status_code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SOURCE), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.stdout.split() == ["200", "404"], done.stderr[-2000:]
    assert "pip install 'cxrkit[ui]'" in done.stderr


@pytest.mark.slow
def test_core_install_trains_evaluates_and_predicts(tiny_folder, tmp_path):
    sets = [item for key, value in TINY_TRAINING.items() for item in ("--set", f"{key}={value}")]
    run = tmp_path / "runs" / "core"
    results = run_without_extras([
        ["train", "--data", str(tiny_folder), "--name", "core", "--output-dir", str(tmp_path / "runs"),
         "--set", f"data.cache_dir={tmp_path / 'cache'}", *sets],
        ["evaluate", str(run), "--split", "val"],
        ["predict", str(run), str(tiny_folder), "--out", str(tmp_path / "p.csv")],
    ])
    assert [r["code"] for r in results] == [0, 0, 0], results
    skipped = [line for line in results[0]["err"].splitlines() if "gallery skipped" in line]
    assert len(skipped) == 1 and "pip install 'cxrkit[explain]'" in skipped[0]
    assert (run / "report.html").is_file() and (run / "test_metrics.json").is_file()
    assert (tmp_path / "p.csv").read_text().count("\n") == 33
