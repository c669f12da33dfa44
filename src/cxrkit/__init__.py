"""cxrkit: from a folder of chest X-rays to a trained, evaluated, explained and served classifier."""

from cxrkit.errors import CxrkitError
from cxrkit.version import __version__

__all__ = ["CxrkitError", "__version__", "load", "train"]


def load(path):
    """Load a run folder (or an exported ONNX model) as a Predictor."""
    from cxrkit.loader import load as _load

    return _load(path)


def train(config=None, **overrides):
    """Train a model from a config (or recipe name plus overrides), evaluate it on its test split
    (unless `use_test=False`) and return the run folder."""
    from cxrkit.pipeline import train_and_evaluate

    return train_and_evaluate(config, **overrides)
