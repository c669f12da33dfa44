"""Temperature scaling fitted on validation (Guo et al. 2017).

Probabilities are rescaled as softmax(log p / T), the same as dividing the logits by T.
For two classes this is monotone in P(positive) and keeps 0.5 at 0.5, so it changes the
probabilities (calibration) but never a decision at a validation-chosen threshold:
thresholds stay on the model's raw output, which is what `Predictor.predict_proba` returns.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

EPSILON = 1e-7


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by a temperature (T > 1 softens, T < 1 sharpens)."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1.0))
    return softmax(logits / temperature, axis=1)


def fit_temperature(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature minimising validation negative log-likelihood (searched in [0.05, 20])."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1.0))
    y_true = np.asarray(y_true, dtype=int)
    rows = np.arange(len(y_true))

    def nll(log_temperature: float) -> float:
        return float(-log_softmax(logits / np.exp(log_temperature), axis=1)[rows, y_true].mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
