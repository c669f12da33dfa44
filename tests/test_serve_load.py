"""A small load test on loopback: concurrent clients, malformed requests mixed in, zero errors.

The full version (500 real X-rays, 50 malformed, 8 clients) is benchmarks/bench_serve_load.py;
this runs the same code against an in-process server with fewer, generated images.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from conftest import write_image
from cxrkit.serve.app import Limits, build_app
from test_export import make_run

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serve_load.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_serve_load", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@contextmanager
def serving(app):
    """Run `app` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server_url(tmp_path: Path):
    app = build_app(make_run(tmp_path / "run", threshold=0.5),
                    limits=Limits(max_upload_mb=load_benchmark().MAX_UPLOAD_MB))
    with serving(app) as url:
        yield url


def test_concurrent_clients_with_malformed_requests_mixed_in(server_url: str, tmp_path: Path):
    bench = load_benchmark()
    images = [write_image(tmp_path / "images" / f"{i}.png", 30 * i, size=96) for i in range(5)]
    outcomes, seconds = bench.run_load(server_url, images, good=60, bad=16, clients=8)
    unexpected = [o for o in outcomes if not o.ok]
    assert not unexpected, unexpected[:3]
    assert sum(o.kind == "good" for o in outcomes) == 60
    bad_kinds = {o.kind for o in outcomes if o.kind != "good"}
    assert bad_kinds == {name for name, _ in bench.malformed_requests()}
    table = bench.summary(outcomes, seconds)
    assert "requests/s" in table and "p95" in table
