"""Decompression bombs against `cxrkit serve`: server memory growth and answers.

Starts `cxrkit serve MODEL` on 127.0.0.1, then sends PNG bombs (tiny files that inflate to
huge images): 32 in one request and 8 requests in parallel, once with 8192x8192 RGBA bombs
(over the pixel budget: refused from the header) and once with 4096x4096 RGBA ones (just
inside the budget: decoded). Samples the server's resident memory (VmRSS) every 20 ms and
prints the peak growth over its idle size. Exits 1 if the growth is over --limit-mb or any
answer is not 200 or 4xx.

    python benchmarks/bench_serve_bombs.py                 # tb-fast-sized CNN, random weights
    python benchmarks/bench_serve_bombs.py runs/tb-fast --limit-mb 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve_load import HOST, free_port, make_default_run, serve  # noqa: E402


def bomb_png(side: int) -> bytes:
    """A PNG of side x side RGBA zero pixels, compressed row by row (never held in memory)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 6, 0, 0, 0])
    compressor, row = zlib.compressobj(9), bytes(1 + side * 4)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """Samples a process's VmRSS in a thread; `peak` is the largest value seen."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, rss_mb(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def attack(url: str, bomb: bytes, per_request: int, parallel: int) -> list[int]:
    files = [("images", (f"bomb{i}.png", bomb, "image/png")) for i in range(per_request)]

    def post(_):
        return httpx.post(f"{url}/api/v1/predict", files=files, timeout=600).status_code

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(post, range(parallel)))


def run_bombs(model: Path, limit_mb: float) -> tuple[bool, list[str]]:
    """Serve `model`, send the bombs; (passed, report lines)."""
    port = free_port()
    server = serve(model, port)
    url = f"http://{HOST}:{port}"
    lines, passed = [], True
    try:
        attack(url, bomb_png(64), 1, 1)  # warm up: first request loads lazy modules
        idle = rss_mb(server.pid)
        for side in (8192, 4096):
            bomb = bomb_png(side)
            for per_request, parallel in ((32, 1), (1, 8), (4, 8)):
                started = time.perf_counter()
                with PeakMemory(server.pid) as memory:
                    codes = attack(url, bomb, per_request, parallel)
                growth = memory.peak - idle
                fine = growth <= limit_mb and all(c == 200 or 400 <= c < 500 for c in codes)
                passed &= fine and server.poll() is None
                lines.append(f"{side}x{side} RGBA bomb ({len(bomb) / 1024:.0f} KB), {per_request} per "
                             f"request x {parallel} parallel: answers {sorted(set(codes))}, peak "
                             f"growth {growth:.0f} MB (idle {idle:.0f} MB), "
                             f"{time.perf_counter() - started:.1f} s {'ok' if fine else 'FAIL'}")
    finally:
        server.terminate()
        server.wait(30)
    return passed, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="run folder or .onnx (default: a tb-fast-sized "
                                                 "CNN with random weights)")
    parser.add_argument("--limit-mb", type=float, default=300, help="allowed memory growth (300)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = Path(args.model) if args.model else make_default_run(Path(folder))
        passed, lines = run_bombs(model, args.limit_mb)
    print("\n".join(lines))
    print(f"command: python benchmarks/bench_serve_bombs.py {args.model or ''} --limit-mb {args.limit_mb:g}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
