"""Load test of `cxrkit serve` on loopback: concurrent clients, real X-rays, malformed requests.

Starts `cxrkit serve MODEL` on 127.0.0.1 (a free port), sends GOOD requests with real images
and BAD malformed ones in random order from CLIENTS concurrent clients, and checks that every
good request gets 200 with probabilities and every bad one a 4xx JSON error. Prints latency
percentiles and throughput; exits 1 if any request got an unexpected answer.

    python benchmarks/bench_serve_load.py                      # tb-fast-sized CNN, random weights
    python benchmarks/bench_serve_load.py runs/tb-fast --requests 500 --malformed 50 --clients 8
"""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAX_UPLOAD_MB = 2
HOST = "127.0.0.1"


@dataclass
class Outcome:
    kind: str
    expected: str
    status: int
    seconds: float
    ok: bool
    detail: str


def png_bytes(value: int = 100, size: int = 64) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def malformed_requests() -> list[tuple[str, dict]]:
    """(name, httpx request kwargs) for each kind of bad request a client can send."""
    png = png_bytes()
    return [
        ("text file", {"files": [("images", ("notes.txt", b"not an image", "text/plain"))]}),
        ("truncated PNG", {"files": [("images", ("cut.png", png[: len(png) // 3], "image/png"))]}),
        ("empty file", {"files": [("images", ("empty.png", b"", "image/png"))]}),
        ("wrong field", {"files": [("file", ("x.png", png, "image/png"))]}),
        ("too large", {"files": [("images", ("big.png", b"\0" * ((MAX_UPLOAD_MB << 20) + 1),
                                             "image/png"))]}),
        ("broken multipart", {"content": b"--b\r\ngarbage", "headers": {
            "content-type": "multipart/form-data; boundary=b"}}),
        ("JSON body", {"json": {"images": ["x.png"]}}),
        ("too many images", {"files": [("images", (f"{i}.png", png, "image/png"))
                                       for i in range(33)]}),
    ]


def run_load(base_url: str, images: list[Path], good: int, bad: int, clients: int,
             seed: int = 0) -> tuple[list[Outcome], float]:
    """Send `good` real-image and `bad` malformed requests from `clients` threads; (outcomes, s)."""
    rng = random.Random(seed)
    contents = [(path.name, path.read_bytes()) for path in images]
    bad_kinds = malformed_requests()
    jobs = [("good", {"files": [("images", contents[i % len(contents)])]}) for i in range(good)]
    jobs += [(bad_kinds[i % len(bad_kinds)][0], bad_kinds[i % len(bad_kinds)][1])
             for i in range(bad)]
    rng.shuffle(jobs)
    local = threading.local()

    def send(job: tuple[str, dict]) -> Outcome:
        kind, request = job
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=60)
        start = time.perf_counter()
        try:
            response = local.client.post("/api/v1/predict", **request)
            status, text = response.status_code, response.text
        except httpx.HTTPError as error:
            status, text = 0, f"{type(error).__name__}: {error}"
        seconds = time.perf_counter() - start
        return judge(kind, status, text, seconds)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(send, jobs))
    return outcomes, time.perf_counter() - start


def judge(kind: str, status: int, text: str, seconds: float) -> Outcome:
    """Good requests must get 200 with probabilities; bad ones a 4xx JSON {"detail": ...}."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if kind == "good":
        ok = status == 200 and isinstance(body, dict) and bool(body.get("predictions"))
        return Outcome(kind, "200", status, seconds, ok, "" if ok else text[:200])
    ok = 400 <= status < 500 and isinstance(body, dict) and isinstance(body.get("detail"), str)
    return Outcome(kind, "4xx", status, seconds, ok, "" if ok else text[:200])


def summary(outcomes: list[Outcome], seconds: float) -> str:
    """A table of latency percentiles and throughput, per request kind."""
    lines = [f"{'requests':<18}{'n':>6}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"]
    groups = {"good (real X-rays)": [o for o in outcomes if o.kind == "good"],
              "malformed": [o for o in outcomes if o.kind != "good"], "all": outcomes}
    for name, group in groups.items():
        if not group:
            continue
        latency = np.array([o.seconds for o in group]) * 1000
        errors = sum(not o.ok for o in group)
        lines.append(f"{name:<18}{len(group):>6}{errors:>8}{np.percentile(latency, 50):>9.1f}"
                     f"{np.percentile(latency, 95):>9.1f}{latency.max():>9.1f}")
    statuses = sorted({(o.kind, o.status) for o in outcomes if o.kind != "good"})
    lines.append("malformed answers: " + ", ".join(f"{kind} -> {code}" for kind, code in statuses))
    lines.append(f"throughput: {len(outcomes) / seconds:.1f} requests/s "
                 f"({len(outcomes)} requests in {seconds:.1f} s)")
    return "\n".join(lines)


def real_images(count: int = 200) -> list[Path]:
    """PNG and JPEG X-rays from ../shared/data (TB PNGs and pneumonia JPEGs)."""
    folders = [SHARED_DATA / "tb" / "Normal", SHARED_DATA / "tb" / "Tuberculosis",
               SHARED_DATA / "pneumonia" / "test" / "NORMAL",
               SHARED_DATA / "pneumonia" / "test" / "PNEUMONIA"]
    files = [path for folder in folders if folder.is_dir()
             for path in sorted(folder.iterdir())[: count // len(folders)]]
    if not files:
        raise SystemExit(f"no real images under {SHARED_DATA}; pass --images DIR")
    return files


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def make_default_run(folder: Path) -> Path:
    """tb-fast's architecture (baseline CNN, width 16, depth 5, 128 px); random weights."""
    import torch

    from cxrkit.data.preprocess import Preprocessing
    from cxrkit.models import build_model
    from cxrkit.run import CHECKPOINT_FORMAT

    spec = {"name": "baseline_cnn", "num_classes": 2, "in_channels": 1, "dropout": 0.2,
            "width": 16, "depth": 5}
    torch.manual_seed(0)
    run = folder / "bench-run"
    run.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": build_model(**spec).state_dict(),
                "classes": ["Normal", "Tuberculosis"], "model": spec, "single_logit": False,
                "preprocessing": Preprocessing(image_size=128, channels=1, resize="stretch",
                                               mean=(0.5,), std=(0.25,)).to_dict(),
                "info": {"model_name": "baseline_cnn"}}, run / "model.ckpt")
    return run


def serve(model: Path, port: int) -> subprocess.Popen:
    """Start `cxrkit serve` on loopback and wait until /api/v1/health answers."""
    server = subprocess.Popen([sys.executable, "-m", "cxrkit", "serve", str(model), "--host", HOST,
                               "--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB)],
                              stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"cxrkit serve exited with code {server.returncode}")
        try:
            if httpx.get(f"http://{HOST}:{port}/api/v1/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("cxrkit serve did not answer /api/v1/health within 180 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="run folder or .onnx (default: a tb-fast-sized "
                                                 "CNN with random weights)")
    parser.add_argument("--requests", type=int, default=500, help="good requests (default 500)")
    parser.add_argument("--malformed", type=int, default=50, help="bad requests (default 50)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--images", help="folder of images (default: ../shared/data X-rays)")
    args = parser.parse_args()
    images = (sorted(p for p in Path(args.images).iterdir() if p.is_file()) if args.images
              else real_images())
    with tempfile.TemporaryDirectory() as folder:
        model = Path(args.model) if args.model else make_default_run(Path(folder))
        port = free_port()
        server = serve(model, port)
        try:
            outcomes, seconds = run_load(f"http://{HOST}:{port}", images, args.requests,
                                         args.malformed, args.clients)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"model: {args.model or 'tb-fast-sized baseline CNN (random weights)'}; "
          f"{len(images)} distinct images; {args.clients} concurrent clients on {HOST}")
    print(summary(outcomes, seconds))
    failures = [o for o in outcomes if not o.ok]
    for outcome in failures[:10]:
        print(f"UNEXPECTED: {outcome.kind}: expected {outcome.expected}, got {outcome.status} "
              f"{outcome.detail}")
    print("reproduce: python benchmarks/bench_serve_load.py " + " ".join(sys.argv[1:]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
