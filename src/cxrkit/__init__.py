"""cxrkit: from a folder of chest X-rays to a trained, evaluated, explained and served classifier."""

from cxrkit.errors import CxrkitError

__version__ = "0.1.0"
__all__ = ["CxrkitError", "__version__", "load", "train"]


def load(path):
    """Load a run folder (or an exported ONNX model) as a Predictor."""
    from cxrkit.inference import load as _load

    return _load(path)


def train(config=None, **overrides):
    """Train a model from a config (or recipe name plus overrides) and return the run folder."""
    from cxrkit.training.fit import train as _train

    return _train(config, **overrides)
