"""The run contract: the run folder, the model card and the one decision rule.

`RunFolder` owns a run's files; `ModelCard` holds the facts about its model (written into
model.ckpt and the ONNX metadata alike); `OperatingPoint` turns probabilities into classes
for every command.
"""

from cxrkit.run.card import ModelCard
from cxrkit.run.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, read_checkpoint, safe_torch_load
from cxrkit.run.decision import (
    OperatingPoint,
    OperatingPoints,
    StaleOperatingPoints,
    positive_class_index,
)
from cxrkit.run.folder import RunFolder, file_sha256

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "ModelCard", "OperatingPoint", "OperatingPoints",
           "RunFolder", "StaleOperatingPoints", "file_sha256", "positive_class_index",
           "read_checkpoint", "safe_torch_load"]
