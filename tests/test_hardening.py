"""Hostile and clumsy input: nothing run from a shared run folder, nothing deleted or served
that cxrkit did not make, decoding stays within budget (issue 14)."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import re
import socket
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import TINY_TRAINING, write_image
from cxrkit.cli import main
from cxrkit.config import build_config, config_to_yaml
from test_export import make_run

SOURCE = Path(__file__).resolve().parents[1] / "src"
CHECKPOINT_NAMES = ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "checkpoints/interrupted.ckpt",
                    "model.ckpt")


# --- nothing unpickled, evaluated or executed ----------------------------------------------------

UNSAFE = {
    "weights_only=False": re.compile(r"weights_only\s*=\s*False"),
    "pickle": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle)\b|\bpickle\.loads?\(", re.M),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "unsafe yaml": re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b"),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\("),
}


def test_source_never_unpickles_evaluates_or_loads_unsafe_yaml():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text()
        found += [f"{path.relative_to(SOURCE)}: {name}" for name, pattern in UNSAFE.items()
                  if pattern.search(text)]
    assert found == []


class Payload:
    """Pickles to a call that creates `marker`: what a crafted checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def poisoned_run(tmp_path: Path):
    """A run folder whose four checkpoints are crafted pickles; returns (run, marker, data)."""
    data = tmp_path / "data"
    for label, value in (("Normal", 0), ("Tuberculosis", 150)):
        for index in range(12):
            write_image(data / label / f"{index}.png", value)
    run = make_run(tmp_path / "run", threshold=0.4)
    config = build_config("tb-fast", {"data.source": str(data), **TINY_TRAINING})
    (run / "config.yaml").write_text(config_to_yaml(config))
    rows = [f"{p},{p.parent.name},{p.stem},test" for p in sorted(data.rglob("*.png"))]
    (run / "split.csv").write_text("path,label,group,split\n" + "\n".join(rows) + "\n")
    marker = tmp_path / "PWNED"
    (run / "checkpoints").mkdir()
    for name in CHECKPOINT_NAMES:
        torch.save({"format": "cxrkit-model-v1", "state_dict": Payload(marker), "epoch": 1}, run / name)
    return run, marker, data


def test_the_payload_is_live_when_unpickled_unsafely(poisoned_run):
    run, marker, _ = poisoned_run
    torch.load(run / "model.ckpt", weights_only=False)  # what main's `train --resume` did
    assert marker.exists()


@pytest.mark.parametrize("command", [
    ["train", "--resume", "{run}"],
    ["train", "--resume", "{run}", "--overwrite"],
    ["train", "--data", "{data}", "--weights", "{run}", "--name", "ft", "--output-dir", "{out}"],
    ["predict", "{run}", "{data}", "--out", "{out}/p.csv"],
    ["evaluate", "{run}"],
    ["evaluate", "{run}", "--data", "{data}", "--out", "{out}/ext"],
    ["export", "{run}"],
    ["explain", "{run}", "{data}/Normal/0.png"],
    ["serve", "{run}", "--port", "{port}"],
])
def test_crafted_checkpoints_never_run(poisoned_run, tmp_path, command, capsys):
    run, marker, data = poisoned_run
    values = {"run": run, "data": data, "out": tmp_path / "out", "port": free_port()}
    code = main([part.format(**values) for part in command])
    err = capsys.readouterr().err
    assert not marker.exists()
    assert code == 2
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "weights_only=False" not in err


def test_corrupt_checkpoint_is_one_line_without_unsafe_advice(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "model.ckpt").write_bytes((run / "model.ckpt").read_bytes()[:200])
    assert main(["predict", str(run), str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "not a readable cxrkit checkpoint" in err and "weights_only" not in err


# --- run names and --overwrite -----------------------------------------------------------------

def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [item for key, value in TINY_TRAINING.items() for item in ("--set", f"{key}={value}")]
    return ["train", "--data", str(data), "--output-dir", str(out), *sets, *extra]


@pytest.mark.parametrize("name", ["../x", "{abs}", ".", "..", "a/b"])
def test_run_names_are_one_folder_inside_the_output_dir(tiny_folder, tmp_path, name, capsys):
    outside = tmp_path / "x"
    runs = tmp_path / "work" / "runs"
    sentinels = [outside / "keep.txt", runs / "old-run" / "keep.txt", tmp_path / "work" / "keep.txt"]
    for sentinel in sentinels:
        sentinel.parent.mkdir(parents=True, exist_ok=True)
        sentinel.write_text("mine")
    name = name.format(abs=outside)
    assert main(train_args(tiny_folder, runs, "--name", name, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --name") and len(err.strip().splitlines()) == 1
    assert all(sentinel.read_text() == "mine" for sentinel in sentinels)


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tiny_folder, tmp_path, capsys):
    runs = tmp_path / "runs"
    sentinel = runs / "photos" / "holiday.txt"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_text("mine")
    (runs / "photos" / "config.yaml").write_text("not: [a cxrkit config")
    assert main(train_args(tiny_folder, runs, "--name", "photos", "--overwrite")) == 2
    assert "not a cxrkit run folder" in capsys.readouterr().err
    assert sentinel.read_text() == "mine"


def test_a_run_that_failed_before_training_can_be_rerun_without_overwrite(tmp_path, capsys):
    data = tmp_path / "data"
    for label in ("Normal", "Tuberculosis"):
        for index in range(12):
            path = data / label / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not a png")
    runs = tmp_path / "runs"
    def error_line() -> str:  # progress summaries before it carry timings
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")][-1]

    assert main(train_args(data, runs, "--name", "r")) == 2
    first = error_line()
    assert main(train_args(data, runs, "--name", "r")) == 2
    assert error_line() == first and "already exists" not in first


# --- the server exposes no data file -------------------------------------------------------------

def _file_route_urls(app, target: Path) -> list[str]:
    """Every route with a path parameter, filled with the target in the forms a client could try."""
    forms = [str(target), str(target).lstrip("/"), "../" * 12 + str(target).lstrip("/"),
             "%2F" + str(target).lstrip("/").replace("/", "%2F")]
    urls = []

    def walk(routes, prefix=""):
        for route in routes:
            included = getattr(route, "include_context", None)  # FastAPI's included router
            if included is not None:
                walk(included.included_router.routes, prefix + included.prefix)
                continue
            path = prefix + getattr(route, "path", "")
            if not hasattr(route, "endpoint") and hasattr(route, "routes"):  # a mounted app
                walk(route.routes, path)
            for match in re.finditer(r"\{(\w+)(:path)?\}", path):
                for form in forms:
                    urls.append(path.replace(match.group(0), form, 1))
    walk(app.routes)
    return sorted(set(urls))


def test_server_exposes_no_training_or_test_image(tmp_path):
    data = tmp_path / "data"
    train = [write_image(data / "train" / label / f"{i}.png", v) for label, v in
             (("Normal", 0), ("Tuberculosis", 150)) for i in range(2)]
    test = [write_image(data / "test" / label / f"{i}.png", v) for label, v in
            (("Normal", 0), ("Tuberculosis", 150)) for i in range(2)]
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    outside = write_image(tmp_path / "elsewhere" / "outside.png", 10)
    run = make_run(tmp_path / "run", threshold=0.5)
    (run / "config.yaml").write_text(f"data:\n  source: {data}\n")
    rows = [f"{p},{p.parent.name},{p.stem}{p.parent.parent.name},train" for p in train]
    rows += [f"{p},{p.parent.name},{p.stem}t,test" for p in test]
    rows += [f"{secret},Normal,s,test", f"{outside},Tuberculosis,o,test"]  # crafted rows
    (run / "split.csv").write_text("path,label,group,split\n" + "\n".join(rows) + "\n")

    from cxrkit.serve.app import build_app

    app = build_app(run)
    client = TestClient(app)
    assert client.get("/").status_code == 200
    leaked = []
    for target in [*train, *test, secret, outside]:
        content = target.read_bytes()
        for url in _file_route_urls(app, target):
            response = client.get(url)
            if response.status_code == 200 and response.content == content:
                leaked.append(url)
    assert leaked == []
    served = [route for route in _file_route_urls(app, test[0]) if "file=" in route]
    assert served, "the Gradio file route was not enumerated"


def test_examples_are_copies_in_a_server_folder_and_are_checked(tmp_path):
    from cxrkit.serve.model import load_served_model, usable_example

    data = tmp_path / "data"
    image = write_image(data / "Normal" / "a.png", 0)
    fake = data / "Normal" / "b.png"
    fake.write_text("not an image")
    assert usable_example(image, data.resolve())
    assert not usable_example(fake, data.resolve())
    assert not usable_example(tmp_path / "secret.txt", data.resolve())
    assert not usable_example(write_image(tmp_path / "out.png", 0), data.resolve())

    from cxrkit.serve.app import build_served_app

    served = load_served_model(make_run(tmp_path / "run"), examples=data / "Normal")
    assert served.examples == [image]
    build_served_app(served)
    assert len(served.examples) == 1 and served.examples[0].parent != image.parent
    assert served.examples[0].read_bytes() == image.read_bytes()


# --- decoding budget -----------------------------------------------------------------------------

def bomb_png(width: int, height: int, mode: str = "RGBA") -> bytes:
    """A tiny PNG that decompresses to width x height zero pixels (streamed, never in memory)."""
    channels, colour = {"RGBA": (4, 6), "L": (1, 0)}[mode]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour, 0, 0, 0])
    compressor, row = zlib.compressobj(9), bytes(1 + width * channels)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_pixel_budget_is_checked_on_the_header_before_decoding():
    from cxrkit.serve.decode import UploadTooLarge, decode_image

    bomb = bomb_png(8192, 8192)
    assert len(bomb) < 400_000
    started = time.perf_counter()
    with pytest.raises(UploadTooLarge, match="pixels"):
        decode_image(bomb, "bomb.png")
    assert time.perf_counter() - started < 0.5  # refused from the header, nothing inflated
    with pytest.raises(UploadTooLarge):
        decode_image(bomb_png(600, 600, "L"), "small.png", max_pixels=500 * 500)
    assert decode_image(bomb_png(600, 600, "L"), "small.png").shape == (600, 600)


def test_alpha_is_composited_over_black_without_full_size_rgba_copies(monkeypatch):
    from cxrkit.data.io import pil_to_gray

    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), "RGBA")
    expected = np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
                          .convert("L")).astype(int)
    monkeypatch.setattr(Image, "alpha_composite", lambda *a: pytest.fail("full-size compositing"))
    palette, grey_alpha = rgba.convert("P"), rgba.convert("LA")
    from_palette = np.asarray(palette.convert("RGBA"), dtype=int)
    assert np.abs(pil_to_gray(rgba).astype(int) - expected).max() <= 1
    assert np.abs(pil_to_gray(palette).astype(int) - np.asarray(Image.fromarray(
        from_palette.astype(np.uint8), "RGBA").convert("LA"), dtype=int).prod(-1) / 255).max() <= 1
    pairs = np.asarray(grey_alpha, dtype=int)
    assert np.abs(pil_to_gray(grey_alpha).astype(int) - pairs[..., 0] * pairs[..., 1] / 255).max() <= 1


def test_wrong_token_is_refused_before_the_body_is_read():
    from cxrkit.serve.app import BodyLimit

    async def app(scope, receive, send):
        raise AssertionError("the app must not be reached")

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": False}

    sent, read = [], []

    async def send(message):
        sent.append(message)

    middleware = BodyLimit(app, max_bytes=10_000, token="s3cret")
    for authorization in (None, b"Bearer wrong", b"Basic s3cret"):
        headers = [(b"content-length", b"1000")] + ([(b"authorization", authorization)]
                                                     if authorization else [])
        scope = {"type": "http", "path": "/api/v1/predict", "headers": headers}
        asyncio.run(middleware(scope, receive, send))
    assert read == []
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [401, 401, 401]


def png_bytes(value: int = 120, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_per_request_and_concurrent_decodes_are_capped(tmp_path, monkeypatch):
    import cxrkit.serve.api as api
    from cxrkit.serve.app import Limits, build_app

    app = build_app(make_run(tmp_path / "run"), limits=Limits(max_images=3, concurrent_decodes=2))
    client = TestClient(app)
    files = [("images", (f"{i}.png", png_bytes(), "image/png")) for i in range(4)]
    response = client.post("/api/v1/predict", files=files)
    assert response.status_code == 422 and "3" in response.json()["detail"]

    active, most = [0], [0]
    lock = threading.Lock()
    decode = api.decode_image

    def counting(*args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        try:
            return decode(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(api, "decode_image", counting)
    codes = []

    def post():
        codes.append(TestClient(app).post("/api/v1/predict", files=files[:3]).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 8
    assert most[0] <= 2


@pytest.mark.slow
def test_bombs_keep_server_memory_growth_under_300_mb():
    """Must-show 5: the benchmark's server, 32 bombs in one request and 8 in parallel."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serve_bombs.py"
    spec = importlib.util.spec_from_file_location("bench_serve_bombs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as folder:
        patch.setenv("PYTHONPATH", str(SOURCE))
        passed, lines = module.run_bombs(module.make_default_run(Path(folder)), limit_mb=300)
    assert passed, "\n".join(lines)


def test_crafted_best_checkpoint_of_a_real_run_never_runs(tiny_folder, tiny_overrides, tmp_path, capsys):
    """last.ckpt is genuine, so --resume trains on and then loads best.ckpt: refused, never run."""
    import cxrkit

    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder)), use_test=False)
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": Payload(marker)}, run / "checkpoints" / "best.ckpt")
    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "best.ckpt: refused to load" in err and not marker.exists()
