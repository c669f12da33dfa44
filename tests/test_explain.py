"""explain(): every method finds the evidence a known model uses; targets, layers and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrkit.data.preprocess import Preprocessing
from cxrkit.errors import CxrkitError
from cxrkit.explain import METHODS, explain, overlay, panel, save_overlay
from cxrkit.inference import Predictor
from cxrkit.models import MODELS, build_model, cam_layer_name
from cxrkit.run import RunFolder
from test_explain_fixtures import SIZE, blobs_image, dark_images, quadrant_predictor, top_left_share

OPTIONS = {
    "gradcam": {"layer": "mask"},
    "gradcam++": {"layer": "mask"},
    "lime": {"n_samples": 200, "n_segments": 30},
    "shap": {"background": dark_images()},
    "occlusion": {"window": 4},
    "integrated-gradients": {},
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_puts_the_evidence_where_the_model_looks(method):
    predictor = quadrant_predictor()
    explanation = explain(predictor, blobs_image(), method, **OPTIONS[method])
    assert explanation.heatmap.shape == (SIZE, SIZE)
    assert explanation.heatmap.dtype == np.float32
    assert explanation.heatmap.min() >= 0 and explanation.heatmap.max() == pytest.approx(1.0)
    assert explanation.target_class == "Tuberculosis"
    assert explanation.probability == pytest.approx(predictor.predict_proba(blobs_image())[0, 1], abs=1e-5)
    assert top_left_share(explanation.heatmap) > 0.8, method
    np.testing.assert_array_equal(explanation.prepared, predictor.prepare(blobs_image()))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "integrated-gradients"])
def test_single_logit_head_explains_both_classes(method):
    predictor = quadrant_predictor(single_logit=True)
    layer = OPTIONS[method]
    positive = explain(predictor, blobs_image(), method, target="tuberculosis", **layer)
    negative = explain(predictor, blobs_image(), method, target=0, **layer)
    assert (positive.target_index, negative.target_index) == (1, 0)
    assert positive.probability == pytest.approx(1 - negative.probability)
    assert top_left_share(positive.heatmap) > 0.8
    # every feature argues for Tuberculosis, so nothing in the image is evidence for Normal
    assert negative.heatmap.max() < 0.05 or method == "gradcam++"


def test_default_target_is_the_most_probable_class():
    predictor = quadrant_predictor()
    dark = np.zeros((SIZE, SIZE), dtype=np.uint8)
    assert explain(predictor, blobs_image(), layer="mask").target_class == "Tuberculosis"
    assert explain(predictor, dark, layer="mask").target_class == "Normal"


def test_gradcam_finds_the_last_conv_layer_without_a_registry_name():
    explanation = explain(quadrant_predictor(), blobs_image())
    assert explanation.layer == "conv"


def _tiny(name: str, single_logit: bool) -> Predictor:
    torch.manual_seed(0)
    model = build_model(name, 1 if single_logit else 2, in_channels=3)
    return Predictor(
        model,
        ["normal", "tb"],
        Preprocessing(image_size=64),
        single_logit=single_logit,
        info={"model_name": name},
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_cam_methods_work_for_every_registry_model(name):
    image = blobs_image()
    two_logits = [explain(_tiny(name, False), image, "gradcam", target=t) for t in (0, 1)]
    plus_plus = explain(_tiny(name, True), image, "gradcam++")
    for explanation in [*two_logits, plus_plus]:
        assert explanation.layer == cam_layer_name(name)
        assert explanation.heatmap.shape == (64, 64)
        assert np.isfinite(explanation.heatmap).all()
    assert max(e.heatmap.max() for e in two_logits) == pytest.approx(1.0)
    assert plus_plus.heatmap.max() == pytest.approx(1.0)


def test_shap_background_comes_from_the_run_training_split(tmp_path):
    paths = []
    for index, split in enumerate(["train"] * 3 + ["test"]):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(dark_images(4)[index]).save(path)
        paths.append((str(path), "Normal", "", split))
    pd.DataFrame(paths, columns=["path", "label", "group", "split"]).to_csv(tmp_path / "split.csv", index=False)
    predictor = quadrant_predictor()
    predictor.run = RunFolder(tmp_path)
    explanation = explain(predictor, blobs_image(), "shap", n_background=3)
    assert top_left_share(explanation.heatmap) > 0.8


def test_shap_without_a_training_split_says_what_to_do():
    with pytest.raises(CxrkitError, match="split.csv; pass background"):
        explain(quadrant_predictor(), blobs_image(), "shap")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "saliency"}, "method='saliency': choose one of gradcam"),
        ({"method": "lime", "n_sampels": 10}, "lime has no option"),
        (
            {"target": "Pneumonia"},
            "target='Pneumonia': not a class of this model; choose one of Normal",
        ),
        ({"target": 5}, "class index 5 is out of range"),
        (
            {"layer": "layer9"},
            "layer='layer9': the model has no such layer; top-level layers are conv",
        ),
        ({"method": "lime", "layer": "conv"}, "`layer` applies to gradcam and gradcam\\+\\+ only"),
    ],
)
def test_bad_requests_raise_a_clear_error(kwargs, message):
    with pytest.raises(CxrkitError, match=message):
        explain(quadrant_predictor(), blobs_image(), **kwargs)


def test_a_predictor_without_a_torch_model_is_refused():
    class OnnxLike:
        classes = ["a", "b"]

    with pytest.raises(CxrkitError, match="not an ONNX file"):
        explain(OnnxLike(), blobs_image())


def test_overlay_colours_only_where_there_is_evidence():
    explanation = explain(quadrant_predictor(), blobs_image(), layer="mask")
    picture = overlay(explanation)
    assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
    cold = explanation.heatmap == 0
    assert cold.any()
    np.testing.assert_array_equal(picture[cold], np.repeat(explanation.prepared[cold][:, None], 3, axis=1))
    hot = explanation.heatmap > 0.9
    assert np.abs(picture[hot].astype(int) - explanation.prepared[hot][:, None]).max() > 50


def test_panel_and_saved_files(tmp_path):
    explanation = explain(quadrant_predictor(), blobs_image(), layer="mask")
    image = panel(explanation)
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[1] > image.shape[0]
    paths = save_overlay(explanation, tmp_path / "out", "case1.gradcam")
    assert sorted(p.name for p in paths.values()) == [
        "case1.gradcam.heatmap.npy",
        "case1.gradcam.overlay.png",
        "case1.gradcam.panel.png",
    ]
    np.testing.assert_array_equal(np.load(paths["heatmap"]), explanation.heatmap)
    assert np.asarray(Image.open(paths["overlay"])).shape == (SIZE, SIZE, 3)
    with pytest.raises(CxrkitError, match="already exists; pass overwrite=True"):
        save_overlay(explanation, tmp_path / "out", "case1.gradcam")
    save_overlay(explanation, tmp_path / "out", "case1.gradcam", overwrite=True)
