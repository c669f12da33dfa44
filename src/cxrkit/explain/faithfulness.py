"""Is a heatmap faithful to the model? Deletion/insertion curves and the model-randomisation check.

Deletion (Petsiuk et al. 2018, RISE): turn the most important pixels black first and follow the
target class probability; a faithful map makes it fall fast (low area under the curve).
Insertion: start from a blurred copy and restore the most important pixels first; a faithful
map makes it rise fast (high area). The blur (sigma = image size / 8) is stronger than RISE's
5 px at 224 px: with that, a TB model still saw TB in the blurred copy and every map scored
alike. Model randomisation (Adebayo et al. 2018): a map that hardly changes when the model's
weights are re-initialised does not explain the model; we report the Spearman rank correlation
between the two maps (low is good).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from sklearn.metrics import auc

from cxrkit.explain.methods import METHODS, Explanation, class_probabilities, explain, torch_model

CURVE_MODES = ("deletion", "insertion")


def pixel_order(heatmap: np.ndarray, seed: int = 0) -> np.ndarray:
    """Flat pixel indices, most important first; ties (e.g. a superpixel) in random order."""
    jitter = np.random.default_rng(seed).random(heatmap.size)
    return np.lexsort((jitter, -heatmap.ravel()))


def perturbation_curve(
    predictor, explanation: Explanation, mode: str = "deletion", steps: int = 20, seed: int = 0
) -> np.ndarray:
    """Target-class probability after changing 0, 1/steps, ..., all pixels in heatmap order."""
    if mode not in CURVE_MODES:
        raise ValueError(f"mode must be one of {CURVE_MODES}, not {mode!r}")
    image = explanation.prepared
    blurred = cv2.GaussianBlur(image, (0, 0), image.shape[0] / 8)
    start, end = (image, np.zeros_like(image)) if mode == "deletion" else (blurred, image)
    order = pixel_order(explanation.heatmap, seed)
    frames = []
    for fraction in np.linspace(0, 1, steps + 1):
        chosen = order[: int(round(fraction * order.size))]
        frame = start.copy().ravel()
        frame[chosen] = end.ravel()[chosen]
        frames.append(frame.reshape(image.shape))
    return class_probabilities(predictor, np.stack(frames))[:, explanation.target_index]


def curve_auc(curve: np.ndarray) -> float:
    """Area under a perturbation curve drawn over the fraction of pixels changed (0 to 1)."""
    return float(auc(np.linspace(0, 1, len(curve)), curve))


def random_map(explanation: Explanation, seed: int = 0) -> Explanation:
    """The same explanation with a uniformly random heatmap: the baseline a method must beat."""
    heatmap = np.random.default_rng(seed).random(explanation.heatmap.shape).astype(np.float32)
    return replace(explanation, heatmap=heatmap, attribution=heatmap, method="random")


def randomised_copy(predictor, seed: int = 0):
    """A Predictor like `predictor` whose model has every layer re-initialised (Adebayo et al.)."""
    from cxrkit.inference import Predictor

    model = copy.deepcopy(torch_model(predictor))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return Predictor.from_card(model, predictor.card, predictor.run)


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman correlation of two maps; NaN when either is constant (no ranking to compare)."""
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(spearmanr(first.ravel(), second.ravel()).statistic)


def randomisation_correlations(
    predictor, images: Sequence, method: str = "gradcam", seed: int = 0, **options
) -> np.ndarray:
    """Per image, the rank correlation of the trained model's map and a re-initialised copy's."""
    randomised = randomised_copy(predictor, seed)
    correlations = []
    for image in images:
        trained = explain(predictor, image, method, **options)
        control = explain(randomised, image, method, target=trained.target_index, **options)
        correlations.append(rank_correlation(trained.heatmap, control.heatmap))
    return np.array(correlations)


def benchmark(
    predictor,
    images: Sequence,
    methods: Sequence[str] = METHODS,
    steps: int = 20,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> pd.DataFrame:
    """One row per method (plus a random map): mean deletion and insertion AUC, randomisation
    Spearman correlation and seconds per image, each map explaining the predicted class.

    `options` maps a method to its explain() options; `progress(method, done)` follows each image.
    """
    options = options or {}
    randomised = randomised_copy(predictor, seed)
    rows, baseline = [], {"deletion": [], "insertion": []}
    for method in methods:
        scores: dict[str, list[float]] = {
            "deletion": [],
            "insertion": [],
            "spearman": [],
            "seconds": [],
        }
        for done, image in enumerate(images, 1):
            started = time.perf_counter()
            explanation = explain(predictor, image, method, **options.get(method, {}))
            scores["seconds"].append(time.perf_counter() - started)
            control = explain(
                randomised,
                image,
                method,
                target=explanation.target_index,
                **options.get(method, {}),
            )
            scores["spearman"].append(rank_correlation(explanation.heatmap, control.heatmap))
            for mode in CURVE_MODES:
                scores[mode].append(curve_auc(perturbation_curve(predictor, explanation, mode, steps, seed)))
                if method == methods[0]:
                    chance = random_map(explanation, seed + done)
                    baseline[mode].append(curve_auc(perturbation_curve(predictor, chance, mode, steps, seed)))
            if progress is not None:
                progress(method, done)
        rows.append(
            {
                "method": method,
                "deletion_auc": np.mean(scores["deletion"]),
                "insertion_auc": np.mean(scores["insertion"]),
                "randomisation_spearman": _nanmean(scores["spearman"]),
                "seconds_per_image": np.mean(scores["seconds"]),
            }
        )
    rows.append(
        {
            "method": "random map",
            "deletion_auc": np.mean(baseline["deletion"]),
            "insertion_auc": np.mean(baseline["insertion"]),
            "randomisation_spearman": float("nan"),
            "seconds_per_image": float("nan"),
        }
    )
    return pd.DataFrame(rows)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
