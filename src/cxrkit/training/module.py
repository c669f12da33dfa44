"""The LightningModule: normalisation, loss, optimiser and schedule; the Trainer does the rest."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassRecall,
    MulticlassStatScores,
)

from cxrkit.config import TrainConfig, monitor_mode
from cxrkit.data.normalise import Normaliser
from cxrkit.inference import probabilities_from_logits

OPTIMIZERS = {
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay),
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum,
                                             weight_decay=c.weight_decay, nesterov=c.momentum > 0),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, eps=c.eps, momentum=c.momentum,
                                                     weight_decay=c.weight_decay),
}

LEGACY_BUFFERS = ("mean", "std")  # Classifier buffers before the Normaliser held them


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None,
               gamma: float) -> torch.Tensor:
    """Multi-class focal loss (Lin et al. 2017) with optional class weights."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    target_log_probs = log_probs.gather(1, targets[:, None]).squeeze(1)
    loss = -((1 - target_log_probs.exp()) ** gamma) * target_log_probs
    if weight is not None:
        loss = loss * weight[targets]
    return loss.mean()


class Classifier(L.LightningModule):
    """Wraps a registry model: uint8 batches in, augmented (training only) and normalised on the
    training device, logits out."""

    def __init__(self, model: nn.Module, num_classes: int, train_config: TrainConfig,
                 mean: tuple[float, ...], std: tuple[float, ...], channels: int,
                 class_weights: torch.Tensor | None = None, single_logit: bool = False,
                 augment: nn.Module | None = None):
        super().__init__()
        if train_config.compile:
            model.compile()  # in place: the state dict keeps its keys
        self.model = model
        self.augment = augment
        self.num_classes = num_classes
        self.config = train_config
        self.single_logit = single_logit
        self.normaliser = Normaliser(channels, mean, std)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(
            num_classes))
        self.val_loss = MeanMetric()
        outputs = 2 if single_logit else num_classes
        self.val_metrics = validation_metrics(outputs)
        self.val_auroc = BinaryAUROC() if outputs == 2 else MulticlassAUROC(outputs, average="macro")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment training batches where they now live (the GPU when there is one), per image."""
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images, targets = batch
            with torch.no_grad():
                batch = self.augment(images), targets
        return batch

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Also loads checkpoints written before the `Normaliser`, which held mean/std as buffers
        (their home is the preprocessing contract; the values are dropped, not used)."""
        kept = {key: value for key, value in state_dict.items() if key not in LEGACY_BUFFERS}
        return super().load_state_dict(kept, strict=strict, assign=assign)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (0-255) or float (0-1) batches to the model's normalised input (`Normaliser`)."""
        batch = self.normaliser(images)
        if self.config.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalise(images))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.single_logit:
            positive_weight = self.class_weights[1] / self.class_weights[0]
            return F.binary_cross_entropy_with_logits(
                logits.float().reshape(-1), targets.float(), pos_weight=positive_weight)
        if self.config.loss == "focal":
            return focal_loss(logits, targets, self.class_weights, self.config.focal_gamma)
        return F.cross_entropy(logits.float(), targets, weight=self.class_weights)

    def training_step(self, batch, batch_index):
        images, targets = batch
        loss = self.loss(self(images), targets)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return loss

    def validation_step(self, batch, batch_index):
        images, targets = batch
        logits = self(images)
        probabilities = probabilities_from_logits(logits, self.single_logit)
        self.val_loss.update(self.loss(logits, targets), weight=len(targets))
        self.val_metrics.update(probabilities, targets)
        self.val_auroc.update(probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities,
                              targets)

    def on_validation_epoch_end(self):
        """Metrics over the whole validation set, gathered from every DDP rank by torchmetrics."""
        metrics = self.val_metrics.compute()
        every_class = bool((metrics["support"][:, 4] > 0).all())
        auroc = self.val_auroc.compute() if every_class else torch.tensor(float("nan"))
        self.log("val_loss", self.val_loss.compute())
        self.log("val_acc", metrics["acc"], prog_bar=True)
        self.log("val_balanced_acc", metrics["balanced_acc"])
        self.log("val_auroc", auroc, prog_bar=True)
        for metric in (self.val_loss, self.val_metrics, self.val_auroc):
            metric.reset()

    def configure_optimizers(self):
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = OPTIMIZERS[self.config.optimizer](parameters, self.config)
        scheduler = self.config.scheduler
        if scheduler == "none":
            return optimizer
        if scheduler == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=monitor_mode(self.config.monitor), factor=self.config.plateau_factor,
                patience=self.config.plateau_patience)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": plateau, "monitor": self.config.monitor}}
        steps = int(self.trainer.estimated_stepping_batches)
        if scheduler == "cosine":
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
        else:
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.config.lr,
                                                           total_steps=max(2, steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def validation_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, balanced accuracy (macro recall) and per-class counts over class probabilities.

    ROC-AUC is kept apart: binary on the positive class, one-vs-rest macro for more classes,
    NaN when a class is missing from the validation targets.
    """
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "balanced_acc": MulticlassRecall(num_classes, average="macro"),
        "support": MulticlassStatScores(num_classes, average=None),
    })
