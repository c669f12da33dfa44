"""Silent-mode monitoring: the server logs requests, `cxrkit monitor` finds drift and running
sensitivity equal to an offline computation; corrupt logs and unknown outcomes are refused."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import cxrkit
from conftest import write_image
from cxrkit.cli import main
from cxrkit.deployment.calibrate import SiteAnalysis, calibrate_site
from cxrkit.deployment.monitor import psi
from cxrkit.deployment.request_log import RequestLog
from test_calibrate import site_csv
from test_evaluation import make_run

N_REQUESTS = 500


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> dict:
    """A run calibrated at site 'clinic' (200 images), and 100 images of another site."""
    root = tmp_path_factory.mktemp("monitor")
    run, site = make_run(root), site_csv(root, per_class=100)
    result = calibrate_site(run, site, site="clinic",
                            analysis=SiteAnalysis(select="sensitivity>=0.90", n_bootstrap=200))
    other = [write_image(root / "other" / f"o_{i:03d}.png", 200 + i % 50, size=48)
             for i in range(100)]
    table = pd.read_csv(site)
    paths = [site.parent / p for p in table["path"]]
    return {"run": run, "site": site, "paths": paths, "labels": table["label"].tolist(),
            "other": other, "calibration": run / "sites" / "clinic",
            "threshold": result["site_point"]["threshold"]}


def outcomes_file(calibrated: dict, path: Path) -> Path:
    pd.DataFrame({"path": [str(p) for p in calibrated["paths"]],
                  "outcome": calibrated["labels"]}).to_csv(path, index=False)
    return path


def offline_sensitivity(calibrated: dict) -> float:
    probabilities = cxrkit.load(calibrated["run"]).predict_proba(
        [str(p) for p in calibrated["paths"]])
    called = probabilities[:, 1] >= calibrated["threshold"]
    positive = np.array(calibrated["labels"]) == "Tuberculosis"
    return (called & positive).sum() / positive.sum()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_psi_is_zero_for_equal_and_large_for_shifted_scores():
    rng = np.random.default_rng(0)
    reference = rng.beta(2, 5, 5000)
    assert psi(reference, reference) == pytest.approx(0, abs=1e-9)
    assert psi(reference, rng.beta(2, 5, 5000)) < 0.02
    assert psi(reference, rng.beta(5, 2, 5000)) > 1


def test_request_log_through_the_api(calibrated: dict, tmp_path: Path, capsys):
    from fastapi.testclient import TestClient

    from cxrkit.serve.app import build_app

    database = tmp_path / "requests.sqlite"
    client = TestClient(build_app(calibrated["run"], site="clinic", log=str(database)))
    files = [("images", (p.name, p.read_bytes())) for p in calibrated["paths"][:40:4]]
    response = client.post("/api/v1/predict", files=files)
    assert response.status_code == 200, response.text
    assert "site:clinic" in response.json()["decision_rule"]
    rows = sqlite3.connect(database).execute(
        "select operating_point, threshold, image_sha256, ood_flag from cxrkit_requests").fetchall()
    assert len(rows) == 10 and rows[0][0] == "site:clinic"
    assert rows[0][1] == pytest.approx(calibrated["threshold"]) and rows[0][3] is None
    assert len(rows[0][2]) == 64
    stored = database.read_bytes()
    assert not any(content[-64:] in stored for _, (_, content) in files)  # never the image


@pytest.mark.slow
def test_500_requests_through_a_running_server(calibrated: dict, tmp_path: Path, capsys):
    """Must-show: no drift from the calibration site, drift (exit 1) from another site, and
    running sensitivity equal to the offline computation at the site point."""
    results = {}
    for name, images in (("same", calibrated["paths"]), ("other", calibrated["other"])):
        database, port = tmp_path / f"{name}.sqlite", free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "cxrkit", "serve", str(calibrated["run"]), "--port", str(port),
             "--site", "clinic", "--log", str(database)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            url = f"http://127.0.0.1:{port}/api/v1"
            deadline = time.time() + 180
            while True:
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.time() < deadline, server.stdout.read()
                time.sleep(0.5)
            with httpx.Client(timeout=60) as client:
                for index in range(N_REQUESTS):
                    path = Path(images[index % len(images)])
                    reply = client.post(f"{url}/predict",
                                        files=[("images", (path.name, path.read_bytes()))])
                    assert reply.status_code == 200, reply.text
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0]
        assert "site:clinic" in output  # the server says which point it uses on start
        count = sqlite3.connect(database).execute("select count(*) from cxrkit_requests")
        assert count.fetchone()[0] == N_REQUESTS
        args = ["monitor", str(database), "--reference", str(calibrated["calibration"]),
                "--out", str(tmp_path / f"report-{name}")]
        if name == "same":  # the random test model misses 0.90 on unseen images: test drift
            args += ["--outcomes", str(outcomes_file(calibrated, tmp_path / "outcomes.csv")),
                     "--min-sensitivity", "0.5"]
        results[name] = main(args), capsys.readouterr().out
    assert results["same"][0] == 0, results["same"][1]
    assert results["other"][0] == 1 and "ALARM: score drift" in results["other"][1]
    expected = offline_sensitivity(calibrated)
    assert f"sensitivity {expected:.3f}" in results["same"][1]
    assert (tmp_path / "report-same" / "monitor.html").read_text().count("<img") >= 3


def test_monitor_bad_input_is_one_line_and_loses_nothing(calibrated: dict, tmp_path: Path,
                                                          capsys):
    def error(args: list[str]) -> str:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    assert "not a readable database" in error(["monitor", str(corrupt), "--out",
                                               str(tmp_path / "m")])
    assert corrupt.read_bytes() == b"this is not a database" * 100
    assert "no such request log" in error(["monitor", str(tmp_path / "none.sqlite")])
    database = tmp_path / "log.sqlite"
    log = RequestLog(str(database))
    log.record("run@abc", [{"probabilities": {"Normal": 0.3, "Tuberculosis": 0.7},
                            "decision": "Tuberculosis", "threshold": 0.5,
                            "positive_class": "Tuberculosis", "image_sha256": "a" * 64}])
    unknown = tmp_path / "outcomes.csv"
    pd.DataFrame({"image_sha256": ["b" * 64], "outcome": ["Tuberculosis"]}).to_csv(unknown,
                                                                                 index=False)
    assert "never scored" in error(["monitor", str(database), "--outcomes", str(unknown),
                                    "--out", str(tmp_path / "m")])
    before = database.read_bytes()
    assert "--reference" in error(["monitor", str(database), "--reference", str(tmp_path)])
    assert database.read_bytes() == before


def test_sensitivity_alarm_only_when_the_whole_ci_is_below_the_target():
    from cxrkit.deployment.monitor import running_accuracy

    def joined(called_positives: int) -> pd.DataFrame:
        referred = [True] * called_positives + [False] * (100 - called_positives) + [False] * 50
        return pd.DataFrame({"referred": referred, "positive": [True] * 100 + [False] * 50,
                             "time": pd.date_range("2026-01-01", periods=150, freq="h")})

    low = running_accuracy(joined(70), 0.90)
    assert low["alarm"] and low["sensitivity"] == 0.7 and low["sensitivity_ci95"][1] < 0.9
    assert not running_accuracy(joined(88), 0.90)["alarm"]  # 0.88, but the CI reaches 0.90
    assert running_accuracy(joined(88), 0.90)["specificity"] == 1.0
