"""The REST API of `cxrkit serve`: predictions, model card, and 4xx JSON for every bad request."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import cxrkit
from conftest import write_image
from cxrkit.cli import main
from cxrkit.errors import CxrkitError
from cxrkit.export import export_model
from cxrkit.serve.api import MAX_IMAGES_PER_REQUEST
from cxrkit.serve.app import Limits, build_app
from cxrkit.serve.model import load_served_model
from test_export import make_run

TOKEN = "s3cret-token"
MAX_UPLOAD_MB = 1


def png_bytes(value: int = 120, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    array = np.full((size, size), value, dtype=np.uint8)
    array[size // 4:, : size // 2] = 255 - value
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    metrics = {"accuracy": 0.9, "roc_auc": float("nan")}
    return make_run(tmp_path_factory.mktemp("serve") / "run", threshold=0.3, test_metrics=metrics)


@pytest.fixture(scope="module")
def client(run: Path) -> TestClient:
    return TestClient(build_app(run, limits=Limits(max_upload_mb=MAX_UPLOAD_MB)))


def test_health_and_model_card(client: TestClient, run: Path):
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["model_id"].startswith("run@")
    card = client.get("/api/v1/model").json()
    assert card["classes"] == ["Normal", "Tuberculosis"] and card["runtime"] == "pytorch"
    assert card["input"]["image_size"] == 32 and card["input"]["channels"] == 1
    assert card["decision"]["threshold"] == 0.3 and card["decision"]["operating_point"] == "youden"
    assert card["test_metrics"] == {"accuracy": 0.9, "roc_auc": None}  # NaN is not JSON


def test_predict_several_images_at_the_frozen_operating_point(client: TestClient, run: Path):
    images = [png_bytes(30), png_bytes(200)]
    response = client.post("/api/v1/predict", files=[
        ("images", (f"x{i}.png", data, "image/png")) for i, data in enumerate(images)])
    assert response.status_code == 200, response.text
    body = response.json()
    expected = cxrkit.load(run).predict_proba([Image.open(io.BytesIO(data)) for data in images])
    assert [p["filename"] for p in body["predictions"]] == ["x0.png", "x1.png"]
    for prediction, row in zip(body["predictions"], expected, strict=True):
        got = [prediction["probabilities"]["Normal"], prediction["probabilities"]["Tuberculosis"]]
        np.testing.assert_allclose(got, row, atol=1e-6)
        assert prediction["threshold"] == 0.3
        assert prediction["decision"] == ("Tuberculosis" if row[1] >= 0.3 else "Normal")
    assert body["model_id"] == client.get("/api/v1/health").json()["model_id"]


@pytest.mark.parametrize(("files", "status", "message"), [
    ([("images", ("notes.txt", b"hello, not an image", "text/plain"))], 400, "notes.txt: not a"),
    ([("images", ("cut.png", png_bytes()[:60], "image/png"))], 400, "cut.png: not a readable"),
    ([("images", ("empty.png", b"", "image/png"))], 400, "empty"),
    ([("image", ("x.png", png_bytes(), "image/png"))], 422, "images: Field required"),
    ([("images", ("big.png", b"\0" * (MAX_UPLOAD_MB << 20), "image/png"))], 413, "limit of 1 MB"),
    ([("images", (f"{i}.png", png_bytes(), "image/png")) for i in
      range(MAX_IMAGES_PER_REQUEST + 1)], 422, f"at most {MAX_IMAGES_PER_REQUEST} items"),
])
def test_bad_requests_get_4xx_json_and_do_not_affect_the_next(client, files, status, message):
    response = client.post("/api/v1/predict", files=files)
    assert response.status_code == status
    assert message in response.json()["detail"]
    good = client.post("/api/v1/predict", files=[("images", ("ok.png", png_bytes(), "image/png"))])
    assert good.status_code == 200


def test_malformed_bodies_get_4xx(client: TestClient):
    garbage = client.post("/api/v1/predict", content=b"--x\r\ngarbage",
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= garbage.status_code < 500 and "detail" in garbage.json()
    text_field = client.post("/api/v1/predict", data={"images": "a string"})
    assert text_field.status_code == 422 and "images" in text_field.json()["detail"]
    huge = Image.new("L", (9000, 10))
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    too_wide = client.post("/api/v1/predict", files=[("images", ("w.png", buffer.getvalue()))])
    assert too_wide.status_code == 413 and "9000x10" in too_wide.json()["detail"]


def test_bearer_token(run: Path):
    client = TestClient(build_app(run, token=TOKEN))
    files = [("images", ("x.png", png_bytes(), "image/png"))]
    assert client.get("/api/v1/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        refused = client.post("/api/v1/predict", files=files, headers=headers)
        assert refused.status_code == 401 and "bearer token" in refused.json()["detail"]
        assert client.get("/api/v1/model", headers=headers).status_code == 401
    allowed = client.post("/api/v1/predict", files=files,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    assert client.get("/").status_code in (200, 302, 307)  # the page asks for a login


def test_serves_onnx_without_gradcam(client: TestClient, run: Path, tmp_path: Path):
    path = export_model(run, out=tmp_path / "model.onnx")["path"]
    onnx_client = TestClient(build_app(path))
    card = onnx_client.get("/api/v1/model").json()
    assert card["runtime"] == "onnxruntime" and card["decision"]["threshold"] == 0.3
    assert card["model_id"] == client.get("/api/v1/model").json()["model_id"]
    files = [("images", ("x.png", png_bytes()))]
    onnx_probabilities = onnx_client.post("/api/v1/predict", files=files).json()["predictions"]
    torch_probabilities = client.post("/api/v1/predict", files=files).json()["predictions"]
    assert onnx_probabilities[0]["decision"] == torch_probabilities[0]["decision"]
    assert "Grad-CAM needs the PyTorch model" in onnx_client.get("/").text


def test_without_operating_point_the_decision_is_argmax(tmp_path: Path):
    served = load_served_model(make_run(tmp_path / "plain"))
    assert served.point.threshold is None and "most probable class" in served.point.describe()
    assert served.point.labels(np.array([0.6, 0.4])) == ["Normal"]
    assert served.point.with_threshold(0.3, "a test").labels(np.array([0.6, 0.4])) == ["Tuberculosis"]
    three = load_served_model(make_run(tmp_path / "three", classes=("A", "B", "C")))
    assert three.point.positive_class is None and three.point.labels(np.array([0.2, 0.3, 0.5])) == ["C"]


def test_stale_or_broken_operating_point_is_refused(tmp_path: Path):
    run = make_run(tmp_path / "stale", threshold=0.4)
    points = json.loads((run / "operating_points.json").read_text())
    (run / "operating_points.json").write_text(json.dumps(points | {"model_sha256": "f" * 64}))
    with pytest.raises(CxrkitError, match="different model.ckpt"):
        load_served_model(run)
    del points["model_sha256"], points["points"]["youden"]
    (run / "operating_points.json").write_text(json.dumps(points))
    with pytest.raises(CxrkitError, match="operating point is malformed"):
        load_served_model(run)


def test_examples_come_from_the_test_split(tmp_path: Path):
    run = make_run(tmp_path / "run")
    images = [write_image(tmp_path / "data" / f"{i}.png", 50) for i in range(3)]
    rows = ["path,label,group,split", f"{images[0]},Normal,a,train", f"{images[1]},Normal,b,test",
            f"{images[2]},Tuberculosis,c,test", f"{tmp_path / 'gone.png'},Tuberculosis,d,test"]
    (run / "split.csv").write_text("\n".join(rows) + "\n")
    assert load_served_model(run).examples == []  # the run names no data source
    (run / "config.yaml").write_text(f"data:\n  source: {tmp_path / 'data'}\n")
    assert load_served_model(run).examples == images[1:]
    assert load_served_model(run, examples=tmp_path / "data").examples == images
    with pytest.raises(CxrkitError, match="examples="):
        load_served_model(run, examples=tmp_path / "nowhere")


def test_cli_serve_rejects_bad_options(run: Path, capsys):
    assert main(["serve", str(run), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err
    assert main(["serve", str(run), "--port", "70000"]) == 2
    with socket.socket() as probe:  # a free port, so the missing model is what fails
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["serve", str(run.parent / "missing"), "--port", str(port)]) == 2
    assert "no model checkpoint" in capsys.readouterr().err


def test_dicom_upload_by_suffix_or_by_content(client: TestClient, run: Path, tmp_path: Path):
    pytest.importorskip("pydicom")
    from test_dicom import chest_like, write_dicom

    path = write_dicom(tmp_path / "scan.dcm", chest_like())
    data = Path(path).read_bytes()
    expected = cxrkit.load(run).predict_proba([path])[0]
    for name in ("scan.dcm", "scan.bin"):  # the second is found by its DICM marker
        response = client.post("/api/v1/predict", files=[("images", (name, data))])
        assert response.status_code == 200, response.text
        got = response.json()["predictions"][0]["probabilities"]
        np.testing.assert_allclose([got["Normal"], got["Tuberculosis"]], expected, atol=1e-6)
    broken = client.post("/api/v1/predict", files=[("images", ("bad.dcm", data[:200]))])
    assert broken.status_code == 400 and broken.json()["detail"].startswith("bad.dcm: ")
    assert str(tmp_path) not in broken.json()["detail"]
