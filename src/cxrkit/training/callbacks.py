"""Small Lightning callbacks: training throughput in images/s, start-up time, save on Ctrl-C."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class Throughput(Callback):
    """Logs training images per second (per epoch) as `img_per_s`."""

    def __init__(self):
        self._images = 0
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._images = 0
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index):
        self._images += len(batch[1])
        elapsed = time.perf_counter() - self._started
        if elapsed > 0:
            pl_module.log("img_per_s", self._images / elapsed, prog_bar=True, on_step=True, on_epoch=False)


class SaveOnInterrupt(Callback):
    """Saves `interrupted.ckpt` when training stops on Ctrl-C (SIGINT) or SIGTERM, for --resume."""

    def __init__(self, path):
        self.path = path

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            trainer.save_checkpoint(self.path)


class StartupTime(Callback):
    """Seconds from `started` (a time.perf_counter value) to the first training batch."""

    def __init__(self, started: float):
        self.started = started
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started


class WallClock(Callback):
    """Training wall time summed over every session of a run (kept in its checkpoints)."""

    def __init__(self, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.previous_s = 0.0

    def elapsed_s(self) -> float:
        """Seconds of earlier sessions (up to the resumed checkpoint) plus this session's."""
        return self.previous_s + time.perf_counter() - self.started

    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed_s()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.previous_s = float(state_dict.get("elapsed_s", 0.0))


def epoch_progress_bar():
    """Lightning's rich progress bar counting epochs from 1 ("Epoch 12/12", as training.json
    counts them; Lightning shows "Epoch 11/11"); None without `rich` (Lightning's default then)."""
    try:
        from lightning.pytorch.callbacks import RichProgressBar
        from lightning.pytorch.utilities.imports import _RICH_AVAILABLE
    except ImportError:
        return None
    if not _RICH_AVAILABLE:
        return None

    class OneBasedEpochs(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            text = f"Epoch {current_epoch + 1}"
            if self.trainer.max_epochs is not None:
                text += f"/{self.trainer.max_epochs}"
            return f"{text:{len(self.validation_description)}}"

    return OneBasedEpochs()
