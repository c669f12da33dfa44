"""Batch augmentation: each step does what its config says, per image, off by default, seeded."""

import pytest
import torch
import torch.nn.functional as F

from cxrkit.config import AugmentConfig, build_config
from cxrkit.data.transforms import BorderErase, HistogramMatch, train_augmentation
from cxrkit.errors import CxrkitError

SIZE = 64


def chest_like(batch: int = 8, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """uint8 B x 1 x S x S: a bright disc on a dark ground plus texture, different per image."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = ((xs**2 + ys**2) < 0.5).float()
    level = 0.3 + 0.4 * torch.rand(batch, 1, 1, 1, generator=generator)
    texture = 0.15 * torch.rand(batch, 1, size, size, generator=generator)
    return ((disc * level + texture).clamp(0, 1) * 255).round().to(torch.uint8)


def augment(images: torch.Tensor, seed: int = 0, **fields) -> torch.Tensor:
    torch.manual_seed(seed)
    return train_augmentation(AugmentConfig(**fields))(images)


def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return F.conv2d(images, kernel)[..., 4:-4, 4:-4].pow(2).mean(dim=(1, 2, 3))


def test_every_step_is_off_by_default():
    assert train_augmentation(AugmentConfig()) is None
    for recipe in ("tb-fast", "pneumonia-fast", "chest3-cnn"):
        augment_fields = build_config(recipe).augment
        for name in ("scale", "shear", "gamma", "blur", "sharpen", "noise", "histogram_match", "border_erase"):
            assert getattr(augment_fields, name) == 0, (recipe, name)


@pytest.mark.parametrize("field, value", [
    ("hflip", 1.5), ("rotation", -1), ("scale", 0.9), ("shear", 60), ("gamma", 3), ("blur", 2),
    ("blur_sigma", 0), ("sharpen", -0.1), ("noise", 0.5), ("histogram_match", 1.1), ("border_erase", 2),
    ("border_erase_size", 0.8),
])
def test_out_of_range_values_are_refused_naming_the_field(field, value):
    with pytest.raises(CxrkitError, match=f"augment.{field}"):
        build_config(overrides={f"augment.{field}": value})


def test_output_is_float_in_unit_range_with_the_input_shape():
    images = chest_like()
    out = augment(images, rotation=20, brightness=0.5, contrast=0.5, gamma=1, noise=0.2, sharpen=1)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1


def test_hflip_mirrors_every_image_at_probability_one():
    images = chest_like()
    assert torch.allclose(augment(images, hflip=1.0), images.flip(-1).float() / 255, atol=1e-4)


@pytest.mark.parametrize("fields", [
    {"rotation": 20}, {"translate": 0.2}, {"scale": 0.3}, {"shear": 20}, {"resized_crop_scale": 0.5},
])
def test_geometry_moves_pixels_differently_per_image(fields):
    same = chest_like(batch=1).repeat(6, 1, 1, 1)
    out = augment(same, **fields)
    assert not torch.allclose(out[0], same[0].float() / 255, atol=0.02)
    assert all(not torch.allclose(out[0], out[i], atol=1e-3) for i in range(1, 6))


def test_translation_shifts_and_crops_and_zoom_resize_within_their_ranges():
    disc = chest_like(batch=1).float().div(255).gt(0.3).float().repeat(32, 1, 1, 1)
    area = disc.sum(dim=(1, 2, 3))
    shifted = augment(disc, translate=0.1)
    assert torch.allclose(shifted.sum(dim=(1, 2, 3)), area, rtol=0.02)  # moved, not resized
    centre = lambda x: (x * torch.arange(SIZE)).sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))  # noqa: E731
    offset = (centre(shifted) - centre(disc)).abs()
    assert offset.max() <= 0.1 * SIZE + 0.5 and offset.std() > 0.5
    cropped = augment(disc, resized_crop_scale=0.5).sum(dim=(1, 2, 3)) / area
    assert cropped.min() >= 0.98 and cropped.max() <= 2.3 and cropped.std() > 0.05  # zoomed in by 1-1.4x
    zoomed = augment(disc, scale=0.2).sum(dim=(1, 2, 3)) / area
    assert zoomed.min() >= 0.8**2 - 0.03 and zoomed.max() <= 1.2**2 + 0.03 and zoomed.std() > 0.05


def test_brightness_and_contrast_draw_a_factor_per_image():
    same = chest_like(batch=1).repeat(16, 1, 1, 1)
    original = same.float() / 255
    bright = augment(same, brightness=0.4)
    ratio = bright.mean(dim=(1, 2, 3)) / original.mean(dim=(1, 2, 3))
    assert ratio.min() >= 0.6 - 1e-3 and ratio.max() <= 1.4 + 1e-3 and ratio.std() > 0.05
    contrast = augment(same, contrast=0.4)
    spread = contrast.std(dim=(1, 2, 3)) / original.std(dim=(1, 2, 3))
    assert spread.min() >= 0.6 - 1e-2 and spread.max() <= 1.4 + 1e-2 and spread.std() > 0.05


def test_gamma_is_a_monotone_power_curve_within_the_configured_range():
    ramp = torch.linspace(0.05, 0.95, SIZE * SIZE).view(1, 1, SIZE, SIZE).repeat(16, 1, 1, 1)
    out = augment(ramp, gamma=0.5)
    assert (out.flatten(1).diff(dim=1) >= 0).all()
    exponents = (out.log() / ramp.log()).flatten(1)
    per_image = exponents.median(dim=1).values
    assert torch.allclose(exponents, per_image[:, None], atol=1e-3)
    assert per_image.min() >= 1 / 1.5 - 1e-4 and per_image.max() <= 1.5 + 1e-4 and per_image.std() > 0.05


def test_blur_smooths_and_sharpen_sharpens():
    images = chest_like()
    before = laplacian_energy(images.float() / 255)
    assert (laplacian_energy(augment(images, blur=1.0, blur_sigma=2.0)) < before).all()
    assert (laplacian_energy(augment(images, sharpen=1.0, sharpen_amount=3.0)) > before).all()
    half = augment(chest_like(batch=64), blur=0.5)
    untouched = (half == chest_like(batch=64).float() / 255).flatten(1).all(dim=1)
    assert 10 < untouched.sum() < 54  # about half the images are blurred


def test_noise_is_zero_mean_with_a_standard_deviation_drawn_per_image():
    flat = torch.full((32, 1, SIZE, SIZE), 0.5)
    residual = augment(flat, noise=0.1) - flat
    sigma = residual.std(dim=(1, 2, 3))
    assert residual.mean().abs() < 0.005
    assert sigma.max() <= 0.11 and sigma.min() >= 0 and sigma.std() > 0.01


def test_histogram_matching_takes_another_images_grey_levels_and_keeps_the_order():
    dark = torch.linspace(0.0, 0.4, SIZE * SIZE).view(1, 1, SIZE, SIZE)
    bright = torch.linspace(0.6, 1.0, SIZE * SIZE).view(1, 1, SIZE, SIZE)
    torch.manual_seed(0)
    out = HistogramMatch(p=1.0)(torch.cat([dark, bright]))
    assert out[0].min() >= 0.59 and out[1].max() <= 0.41  # each took the other's histogram
    assert (out[0].flatten().diff() >= 0).all() and (out[1].flatten().diff() >= 0).all()
    batch = chest_like(batch=16).float() / 255
    torch.manual_seed(1)
    matched = HistogramMatch(p=1.0)(batch)
    for image in matched:  # every image now carries the grey-level histogram of some other image
        quantiles = torch.quantile(image.flatten(), torch.tensor([0.25, 0.5, 0.75]))
        others = torch.quantile(batch.flatten(1), torch.tensor([0.25, 0.5, 0.75]), dim=1).T
        assert (others - quantiles).abs().max(dim=1).values.min() < 0.02


def test_histogram_matching_is_off_at_probability_zero_and_skips_single_images():
    batch = chest_like().float() / 255
    assert torch.equal(HistogramMatch(p=0.0)(batch), batch)
    assert torch.equal(HistogramMatch(p=1.0)(batch[:1]), batch[:1])


def test_border_erase_fills_one_constant_box_touching_the_edge():
    torch.manual_seed(0)
    images = torch.rand(64, 1, SIZE, SIZE)
    out = BorderErase(p=1.0, size=0.25)(images)
    centre = slice(SIZE // 2 - 8, SIZE // 2 + 8)
    assert torch.equal(out[..., centre, centre], images[..., centre, centre])
    corners = strips = 0
    for before, after in zip(images, out, strict=True):
        changed = (before != after)[0]
        rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
        assert len(rows) and len(after[0][changed].unique()) == 1  # one grey level
        box = changed[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
        assert box.float().mean() > 0.95  # a filled rectangle
        touches = [rows[0] == 0, rows[-1] == SIZE - 1, cols[0] == 0, cols[-1] == SIZE - 1]
        assert any(touches)
        corners += sum(bool(t) for t in touches) == 2
        strips += sum(bool(t) for t in touches) == 1
        depth = min(len(rows), len(cols))
        assert depth <= 0.25 * SIZE + 1
    assert corners > 10 and strips > 10


def test_every_step_is_random_per_image_and_repeats_with_a_seed():
    everything = dict(hflip=0.5, rotation=10, translate=0.05, scale=0.1, shear=5, resized_crop_scale=0.8,
                      brightness=0.2, contrast=0.2, gamma=0.3, blur=0.3, sharpen=0.3, noise=0.03,
                      histogram_match=0.5, border_erase=0.5)
    same = chest_like(batch=1).repeat(8, 1, 1, 1)
    first, again, other = augment(same, 7, **everything), augment(same, 7, **everything), augment(same, 8, **everything)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert all(not torch.equal(first[0], first[i]) for i in range(1, 8))


def test_closed_form_affine_inverse_matches_linalg():
    from cxrkit.data.transforms import _inverse_affine, _matrices

    torch.manual_seed(0)
    matrices = _matrices(*(torch.randn(6, 16) + torch.tensor([2.0, 0, 0, 2, 0, 0]).view(6, 1)))
    assert torch.allclose(_inverse_affine(matrices), torch.linalg.inv(matrices)[:, :2], atol=1e-4)
