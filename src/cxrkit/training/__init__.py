"""Training: the LightningModule (the science) and fit (Trainer, callbacks, run folder)."""
