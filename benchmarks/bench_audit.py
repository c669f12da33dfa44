"""Time `cxrkit data audit` and `near_duplicate_groups` on the shared real data.

Cold = empty fingerprint cache (every image decoded and hashed); warm = cache filled.

Run from the repository root:  .venv/bin/python benchmarks/bench_audit.py [DATA ...]
Default data: ../shared/data/pneumonia (5,840 JPEGs) and ../shared/data/tb (2,768 PNGs).
Target: the pneumonia audit in under 60 s on 2 cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed_audit(data: Path, cache: Path, out: Path) -> tuple[float, dict]:
    from cxrkit.data.audit import audit_dataset

    os.environ["CXRKIT_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    report = audit_dataset(data, out_dir=out, overwrite=True)
    return time.perf_counter() - started, report


def timed_groups(data: Path, cache: Path) -> tuple[float, list]:
    from cxrkit.data.audit import near_duplicate_groups
    from cxrkit.data.sources import load_manifest

    os.environ["CXRKIT_CACHE_DIR"] = str(cache)
    paths = load_manifest(data)[0]["path"].tolist()
    started = time.perf_counter()
    groups = near_duplicate_groups(paths)
    return time.perf_counter() - started, groups


def main(argv: list[str]) -> int:
    from cxrkit.data.hashing import default_workers

    targets = [Path(a) for a in argv] or [SHARED / "pneumonia", SHARED / "tb"]
    missing = [t for t in targets if not t.exists()]
    if missing:
        print(f"data not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    rows, group_rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for data in targets:
            cache, out = Path(scratch) / f"cache-{data.name}", Path(scratch) / f"out-{data.name}"
            cold, report = timed_audit(data, cache, out)
            warm, _ = timed_audit(data, cache, out)
            leakage = report["leakage"]["patients_across_splits"]
            rows.append((data.name, report["images"], cold, warm, report["images"] / cold,
                         len(report["duplicates"]["near_groups"]),
                         report["duplicates"]["images_in_near_groups"],
                         leakage["shared_groups"] if leakage else "-"))
            cold, groups = timed_groups(data, Path(scratch) / f"groups-{data.name}")
            warm, _ = timed_groups(data, Path(scratch) / f"groups-{data.name}")
            group_rows.append((data.name, len(groups), cold, warm,
                               len({g for g in groups if g}), sum(g is not None for g in groups)))
    print(f"cores: {default_workers()} (threads used), cpu count {os.cpu_count()}")
    header = ("data", "images", "cold s", "warm s", "images/s cold", "near-dup groups",
              "images in groups", "patients across splits")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row))
    print()
    print("near_duplicate_groups (the call training makes)")
    print(" | ".join(("data", "images", "cold s", "warm s", "groups", "images in groups")))
    for row in group_rows:
        print(" | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row))
    print("command: .venv/bin/python benchmarks/bench_audit.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
