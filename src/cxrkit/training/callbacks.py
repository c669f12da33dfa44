"""Small Lightning callbacks: training throughput in images/s, start-up time, save on Ctrl-C."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


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
    """Saves `interrupted.ckpt` when training stops on an exception such as Ctrl-C, for --resume."""

    def __init__(self, path):
        self.path = path

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, KeyboardInterrupt):
            trainer.save_checkpoint(self.path)


class StartupTime(Callback):
    """Seconds from `started` (a time.perf_counter value) to the first training batch."""

    def __init__(self, started: float):
        self.started = started
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started
