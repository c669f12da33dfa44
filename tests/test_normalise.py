"""One normaliser: training, the Predictor and the exported ONNX graph give the same probabilities.

The training path is the one `cxrkit train` runs: images prepared into the on-disk cache,
batched by the training dataset, `Classifier` in eval mode (no augmentation). The Predictor and
the ONNX predictor read the image files themselves. All three must agree to 1e-5.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import cxrkit
from conftest import TINY_TRAINING, shared_data
from cxrkit.config import TrainConfig, build_config
from cxrkit.data.cache import load_cached_images
from cxrkit.data.datamodule import CachedImageDataset
from cxrkit.data.normalise import Normaliser, model_input
from cxrkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from cxrkit.export import export_model
from cxrkit.inference import probabilities_from_logits
from cxrkit.models import build_model
from cxrkit.onnx_predictor import _legacy_graph_input, load_onnx_predictor
from cxrkit.run import ModelCard
from cxrkit.training.module import Classifier

LEGACY = Path(__file__).parent / "data" / "onnx-v1"
TOLERANCE = 1e-5


def test_normaliser_repeats_the_grey_channel_and_applies_the_contracts_mean_and_std():
    prep = Preprocessing(image_size=8, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8))
    normaliser = Normaliser.from_preprocessing(prep)
    out = normaliser(images)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 8, 8)
    pixels = images.double() / 255.0
    for channel in range(3):
        expected = (pixels[:, 0] - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        np.testing.assert_allclose(out[:, channel].numpy(), expected.numpy(), atol=1e-6)
    torch.testing.assert_close(normaliser(images.float() / 255.0), out, rtol=0, atol=1e-6)  # float in [0, 1]
    assert normaliser.state_dict() == {}, "mean/std live in the preprocessing contract, not in weights"
    single = Preprocessing(image_size=8, channels=1, mean=(0.5,), std=(0.25,))
    np.testing.assert_allclose(model_input(images[0, 0].numpy(), single).numpy(),
                               ((pixels[:1] - 0.5) / 0.25).numpy(), atol=1e-6)


def test_legacy_onnx_input_is_what_the_normaliser_computes():
    prep = Preprocessing(image_size=8, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    prepared = np.random.default_rng(1).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    np.testing.assert_allclose(_legacy_graph_input(prepared, prep), model_input(prepared, prep).numpy(), atol=1e-6)


def legacy_images() -> list[np.ndarray]:
    """The images tests/data/onnx-v1/probabilities.json was computed on."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 220, 40, dtype=np.float32)
    return [np.clip(ramp[None] * (i % 3 + 1) / 2 + rng.normal(0, 30, (40, 40)), 0, 255).astype(np.uint8)
            for i in range(6)]


def test_onnx_files_exported_before_the_graph_normalised_still_run_and_agree(tmp_path: Path):
    legacy = load_onnx_predictor(LEGACY / "model.onnx")
    assert not legacy.graph_normalises
    expected = np.array(json.loads((LEGACY / "probabilities.json").read_text())["probabilities"])
    np.testing.assert_allclose(legacy.predict_proba(legacy_images()), expected, atol=1e-6)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(LEGACY / "model.ckpt", run / "model.ckpt")
    exported = load_onnx_predictor(export_model(run)["path"])
    assert exported.graph_normalises
    np.testing.assert_allclose(exported.predict_proba(legacy_images()), expected, atol=TOLERANCE)
    np.testing.assert_allclose(cxrkit.load(run).predict_proba(legacy_images()), expected, atol=TOLERANCE)


def training_probabilities(run: Path, files: list[Path], cache: Path, shift: float = 0.0) -> np.ndarray:
    """Probabilities as training computes them (validation step): cached prepared images, the
    training dataset's uint8 batches, `Classifier` in eval mode. `shift` moves the mean (a control)."""
    checkpoint = torch.load(run / "model.ckpt", weights_only=True)
    card = ModelCard.from_checkpoint(checkpoint, str(run))
    prep = card.preprocessing
    images, failures = load_cached_images([str(f) for f in files], prep, cache, workers=1)
    assert not failures
    model = build_model(**card.model, weights="none", freeze="none")
    model.load_state_dict(checkpoint["state_dict"])
    shifted = Preprocessing(**{**prep.to_dict(), "mean": tuple(m + shift for m in prep.mean)})
    module = Classifier(model, len(card.classes), TrainConfig(), shifted,
                        single_logit=card.single_logit).eval()
    loader = DataLoader(CachedImageDataset(images, np.zeros(len(files), dtype=np.int64)), batch_size=4)
    outputs = []
    with torch.no_grad():
        for batch in loader:
            batch_images, _ = module.on_after_batch_transfer(batch, 0)
            outputs.append(probabilities_from_logits(module(batch_images), module.single_logit).numpy())
    return np.concatenate(outputs)


def three_paths(run: Path, files: list[Path], cache: Path) -> dict[str, np.ndarray]:
    onnx_path = export_model(run, overwrite=True)["path"]
    return {"training": training_probabilities(run, files, cache),
            "predictor": cxrkit.load(run).predict_proba(files, batch_size=3),
            "onnx": load_onnx_predictor(onnx_path).predict_proba(files, batch_size=5)}


def assert_agree(outputs: dict[str, np.ndarray]) -> float:
    """Every path within TOLERANCE of training; returns the largest difference."""
    reference = outputs["training"]
    assert float(reference[:, 1].std()) > 1e-3, "outputs barely vary with the image: an empty check"
    differences = {name: float(np.abs(got - reference).max()) for name, got in outputs.items()}
    assert max(differences.values()) <= TOLERANCE, differences
    return max(differences.values())


def test_training_predictor_and_onnx_agree_on_generated_images(tmp_path: Path):
    from PIL import Image

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(LEGACY / "model.ckpt", run / "model.ckpt")  # 3 channels, ImageNet mean/std
    files = []
    for index, image in enumerate(legacy_images() * 2):
        files.append(tmp_path / "images" / f"{index}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(np.rot90(image, index // 6).copy()).save(files[-1])
    outputs = three_paths(run, files, tmp_path / "cache")
    assert_agree(outputs)
    shifted = training_probabilities(run, files, tmp_path / "cache", shift=1 / 255)
    control = float(np.abs(shifted - outputs["training"]).max())
    assert control > 10 * TOLERANCE, f"a one-grey-level change of the mean moved outputs by only {control}"


@pytest.mark.slow
def test_training_predictor_and_onnx_agree_on_real_tb_images(tmp_path: Path):
    """A model trained by `cxrkit train` (tb-fast recipe: CLAHE, dataset mean/std, OOD reference)
    on real tb images, then its training-time, Predictor and ONNX probabilities on real images."""
    folder = tmp_path / "tb"
    files = []
    for label in ("Normal", "Tuberculosis"):
        (folder / label).mkdir(parents=True)
        for path in sorted(shared_data("tb", label).glob("*.png"))[:24]:
            (folder / label / path.name).symlink_to(path)
            files.append(folder / label / path.name)
    run = cxrkit.train(build_config("tb-fast", {
        **TINY_TRAINING, "preprocess.image_size": 64, "train.epochs": 2, "data.source": str(folder),
        "name": "tb-normalise", "output_dir": str(tmp_path / "runs"), "data.cache_dir": str(tmp_path / "cache")}))
    assert cxrkit.load(run).ood is not None, "the OOD path (second graph output) goes untested"
    checked = files[::4]  # 12 real images, both classes
    outputs = three_paths(run, checked, tmp_path / "cache")
    largest = assert_agree(outputs)
    shifted = training_probabilities(run, checked, tmp_path / "cache", shift=1 / 255)
    assert float(np.abs(shifted - outputs["training"]).max()) > 10 * TOLERANCE, "the check could not fail"
    print(f"max |difference| training vs Predictor/ONNX on {len(checked)} real tb images: {largest:.2e}")


def test_training_checkpoints_from_before_the_normaliser_still_load():
    model = build_model("baseline_cnn", num_classes=2, in_channels=1, width=4, depth=2)
    module = Classifier(model, 2, TrainConfig(), Preprocessing(channels=1, mean=(0.5,), std=(0.25,)))
    old = {**module.state_dict(), "mean": torch.full((1, 1, 1, 1), 0.5), "std": torch.full((1, 1, 1, 1), 0.25)}
    module.load_state_dict(old)  # strict, as Lightning resumes
    assert "mean" not in module.state_dict() and float(module.normaliser.mean) == 0.5
