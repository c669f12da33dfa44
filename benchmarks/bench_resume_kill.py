"""kill -9 during training, then `cxrkit train --resume`: how many finished epochs are lost.

Each of --runs attempts trains a small model on real X-rays (tb-nlm, 64 px baseline CNN) in a
child process that appends a line to epochs.log (fsync'd) at the end of every epoch, kills it
with SIGKILL at a random moment after its first epoch, then runs `cxrkit train --resume RUN`.
Lost epochs = epochs finished before the kill - the first epoch the resumed session trains. Checks
that the final run is valid: model.ckpt, every epoch once in metrics.csv, epochs_run as asked.
Exits 1 if any attempt lost more than one epoch or ended invalid.

    python benchmarks/bench_resume_kill.py                    # 5 attempts, 6 epochs each
    python benchmarks/bench_resume_kill.py --runs 5 --epochs 6 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CHILD = """
import os, sys
from lightning.pytorch.callbacks import Callback
import cxrkit
from cxrkit.config import build_config

class EpochLog(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        with open(sys.argv[2], "a") as handle:
            handle.write(f"{trainer.current_epoch}\\n")
            handle.flush()
            os.fsync(handle.fileno())

overrides = dict(item.split("=", 1) for item in sys.argv[3:])
cxrkit.train(build_config("tb-fast", {**overrides, "output_dir": sys.argv[1]}), callbacks=[EpochLog()])
"""


def settings(data: Path, epochs: int, cache: Path, name: str) -> list[str]:
    return [f"data.source={data}", f"name={name}", f"train.epochs={epochs}",
            f"data.cache_dir={cache}", "preprocess.image_size=48", "model.name=baseline_cnn",
            "model.width=8", "model.depth=3", "train.batch_size=32", "train.early_stopping_patience=0",
            "data.group_near_duplicates=false"]


def resumed_epoch(run: Path) -> int:
    """The first epoch the resumed session trained (from its own CSV log): epochs kept."""
    import pandas as pd

    versions = sorted((run / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    table = pd.read_csv(versions[-1] / "metrics.csv")
    return int(table["epoch"].min())


def attempt(index: int, data: Path, epochs: int, folder: Path, rng: random.Random) -> dict:
    out, cache, name = folder / "runs", folder / "cache", f"kill{index}"
    run, log = out / name, folder / f"epochs{index}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(log),
                              *settings(data, epochs, cache, name)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ends = [wait_for_epoch(child, log, 1), wait_for_epoch(child, log, 2)]
    epoch_s = ends[1] - ends[0]
    delay = rng.uniform(0, epoch_s * (epochs - 3))  # anywhere from epoch 3 to inside the last
    time.sleep(delay)
    if child.poll() is not None:
        raise SystemExit("training finished before the kill; raise --epochs")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = len(log.read_text().split())
    started = time.perf_counter()
    resume = subprocess.run([sys.executable, "-m", "cxrkit", "train", "--resume", str(run)],
                            capture_output=True, text=True)
    resume_s = time.perf_counter() - started
    in_checkpoint = resumed_epoch(run)
    valid, reason = check_run(run, epochs, resume.returncode)
    return {"attempt": index, "epoch_s": round(epoch_s, 1), "killed_at_s": round(delay, 1),
            "epochs_finished": finished,
            "resumed_at_epoch": in_checkpoint, "lost": finished - in_checkpoint,
            "resume_exit": resume.returncode, "resume_s": round(resume_s, 1), "valid": valid,
            "reason": reason or resume.stderr.strip().splitlines()[-1:]}


def wait_for_epoch(child: subprocess.Popen, log: Path, count: int) -> float:
    """Wait until `count` epochs are logged; the time it happened."""
    while not (log.is_file() and len(log.read_text().split()) >= count):
        if child.poll() is not None:
            raise SystemExit(f"training child exited early with {child.returncode}")
        time.sleep(0.05)
    return time.monotonic()


def check_run(run: Path, epochs: int, code: int) -> tuple[bool, str]:
    import pandas as pd

    if code != 0:
        return False, f"resume exit code {code}"
    if not (run / "model.ckpt").is_file():
        return False, "no model.ckpt"
    info = json.loads((run / "training.json").read_text())
    if info["epochs_run"] != epochs:
        return False, f"epochs_run {info['epochs_run']}"
    logged = pd.read_csv(run / "metrics.csv").dropna(subset=["val_loss"])["epoch"].tolist()
    if logged != list(range(epochs)):
        return False, f"metrics.csv epochs {logged}"
    return True, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(SHARED_DATA / "tb-nlm"))
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"no data at {data}; pass --data DIR")
        return 2
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.runs):
            result = attempt(index, data, args.epochs, Path(folder), rng)
            results.append(result)
            print(json.dumps(result), flush=True)
    worst = max(r["lost"] for r in results)
    passed = worst <= 1 and all(r["valid"] for r in results)
    print(f"{len(results)} kill -9 + --resume attempts: at most {worst} finished epoch(s) lost, "
          f"{sum(r['valid'] for r in results)} valid final runs -> {'ok' if passed else 'FAIL'}")
    print(f"command: python benchmarks/bench_resume_kill.py --runs {args.runs} --epochs {args.epochs} "
          f"--seed {args.seed}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
