"""Standard outputs: FHIR Observations validate with fhir.resources; DICOM SRs read back with
highdicom and pydicom, carrying model id, operating point, score and decision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

import cxrkit
from cxrkit.cli import main
from cxrkit.deployment.calibrate import SiteAnalysis, calibrate_site
from cxrkit.run import RunFolder
from test_calibrate import site_csv
from test_dicom import chest_like, write_dicom
from test_evaluation import make_run

fhir = pytest.importorskip("fhir.resources.R4B", reason="pip install 'cxrkit[fhir]'")


@pytest.fixture(scope="module")
def site_run(tmp_path_factory) -> tuple[Path, Path, float]:
    root = tmp_path_factory.mktemp("standards")
    run, site = make_run(root), site_csv(root)
    point = calibrate_site(run, site, site="clinic", analysis=SiteAnalysis(select="youden", n_bootstrap=200))
    return run, site, point["site_point"]["threshold"]


def expected_decisions(run: Path, paths: list[str], threshold: float) -> list[str]:
    scores = cxrkit.load(run).predict_proba(paths)[:, 1]
    return ["Tuberculosis" if s >= threshold else "Normal" for s in scores]


def observation_facts(observation: dict) -> dict:
    components = {c["code"]["coding"][0]["code"]: c for c in observation["component"]}
    return {"decision": observation["valueCodeableConcept"]["text"],
            "model_id": components["model-id"]["valueString"],
            "operating_point": components["operating-point"]["valueString"],
            "threshold": components["threshold"]["valueQuantity"]["value"]}


def test_predict_fhir_bundle_and_ndjson_validate(site_run, tmp_path: Path, capsys):
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.observation import Observation

    run, site, threshold = site_run
    folder = site.parent / "Tuberculosis"
    out = tmp_path / "observations.json"
    assert main(["predict", str(run), str(folder), "--out", str(out), "--format", "fhir",
                 "--site", "clinic"]) == 0
    bundle = Bundle.model_validate(json.loads(out.read_text()))
    paths = sorted(str(p) for p in folder.glob("*.png"))
    assert len(bundle.entry) == len(paths)
    expected = expected_decisions(run, paths, threshold)
    for entry, decision in zip(bundle.entry, expected, strict=True):
        facts = observation_facts(entry.resource.model_dump(mode="json"))
        assert facts["decision"] == decision and facts["operating_point"] == "site:clinic"
        assert facts["model_id"] == RunFolder(run).model_id()
        assert facts["threshold"] == pytest.approx(threshold, abs=1e-6)
    lines = tmp_path / "observations.ndjson"
    assert main(["predict", str(run), str(folder), "--out", str(lines), "--format", "fhir"]) == 0
    observations = [Observation.model_validate_json(line)
                    for line in lines.read_text().splitlines()]
    assert len(observations) == len(paths)


def test_api_returns_fhir_on_request(site_run):
    from fastapi.testclient import TestClient
    from fhir.resources.R4B.bundle import Bundle

    from cxrkit.serve.app import build_app

    run, site, threshold = site_run
    client = TestClient(build_app(run, site="clinic"))
    path = next((site.parent / "Normal").glob("*.png"))
    response = client.post("/api/v1/predict?format=fhir",
                           files=[("images", (path.name, path.read_bytes()))])
    assert response.status_code == 200, response.text
    bundle = Bundle.model_validate(response.json())
    facts = observation_facts(bundle.entry[0].resource.model_dump(mode="json"))
    assert facts["decision"] == expected_decisions(run, [str(path)], threshold)[0]
    assert client.post("/api/v1/predict?format=xml", files=[
        ("images", (path.name, path.read_bytes()))]).status_code == 422


def text_values(dataset) -> list[str]:
    """Every TEXT content item's value in an SR, depth first."""
    values = []
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                values += text_values(item)
        elif element.keyword == "TextValue":
            values.append(str(element.value))
    return values


def test_dicom_inputs_get_a_structured_report(site_run, tmp_path: Path, capsys):
    hd = pytest.importorskip("highdicom", reason="pip install 'cxrkit[dicom]'")
    import pydicom

    run, _, threshold = site_run
    study = generate_uid()
    (tmp_path / "in").mkdir()
    source = write_dicom(tmp_path / "in" / "chest.dcm", chest_like(), PatientID="P1",
                         PatientName="Test^Patient", StudyInstanceUID=study,
                         SeriesInstanceUID=generate_uid(), StudyDate="20240101",
                         StudyTime="120000", AccessionNumber="A1", StudyID="1", SeriesNumber=1,
                         InstanceNumber=1, PatientSex="O")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), source, "--out", str(out), "--site", "clinic",
                 "--sr-dir", str(tmp_path / "sr")]) == 0
    path = tmp_path / "sr" / "chest.sr.dcm"
    dataset = pydicom.dcmread(path)
    assert dataset.Modality == "SR" and dataset.StudyInstanceUID == study
    report = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    group = report.content.get_image_measurement_groups()[0]
    score = cxrkit.load(run).predict_proba([source])[0, 1]
    decision = "Tuberculosis" if score >= threshold else "Normal"
    assert group.get_qualitative_evaluations()[0].value.meaning == decision
    assert group.get_measurements()[0].value == pytest.approx(score, abs=1e-5)
    texts = text_values(dataset)
    assert RunFolder(run).model_id() in texts and "operating_point=site:clinic" in texts
    given = next(t for t in texts if t.startswith("threshold="))
    assert np.isclose(float(given.split("=")[1]), threshold, atol=1e-5)
    assert (tmp_path / "p.csv").is_file()


def test_missing_dicom_identifiers_are_a_clear_error(site_run, tmp_path: Path, capsys):
    pytest.importorskip("highdicom")
    run, _, _ = site_run
    source = write_dicom(tmp_path / "bare.dcm", chest_like())
    assert main(["predict", str(run), source, "--out", str(tmp_path / "p.csv"), "--sr-dir",
                 str(tmp_path / "sr")]) == 2
    err = capsys.readouterr().err
    assert "lacks StudyInstanceUID" in err and "Traceback" not in err
