"""`predict_files`: parallel decoding, batched model, same outputs as one-by-one prediction."""

from __future__ import annotations

import numpy as np
import torch

from conftest import write_image
from cxrkit.data.preprocess import Preprocessing
from cxrkit.inference import Predictor
from cxrkit.models import build_model


def tiny_predictor() -> Predictor:
    torch.manual_seed(0)
    model = build_model("baseline_cnn", num_classes=2, in_channels=1, width=4, depth=2)
    prep = Preprocessing(image_size=32, channels=1, enhancement="clahe", mean=(0.3,), std=(0.2,))
    return Predictor(model, ["Normal", "Tuberculosis"], prep)


def test_parallel_prediction_matches_sequential_and_reports_bad_files(tmp_path):
    paths = [str(write_image(tmp_path / f"{i:02d}.png", 40 * (i % 3), size=40 + i)) for i in range(13)]
    (tmp_path / "bad.png").write_bytes(b"garbage")
    wanted = paths[:6] + [str(tmp_path / "bad.png"), str(tmp_path / "missing.png")] + paths[6:]
    predictor = tiny_predictor()
    events = []
    probabilities, scores, lung_found, kept, failures = predictor.predict_files(
        wanted, batch_size=4, workers=2, progress=lambda *event: events.append(event))
    assert kept == paths and scores is None  # no out-of-distribution reference
    assert lung_found == [None] * len(paths)  # the contract uses no lungs
    assert set(failures) == {wanted[6], wanted[7]} and "not a readable image" in failures[wanted[6]]
    np.testing.assert_allclose(probabilities, predictor.predict_proba(paths, batch_size=4), atol=1e-6)
    assert events[-1] == ("predict", len(wanted), len(wanted))
    in_process, _, _, kept_here, _ = predictor.predict_files(wanted, batch_size=4, workers=1)
    assert kept_here == kept
    np.testing.assert_array_equal(in_process, probabilities)
