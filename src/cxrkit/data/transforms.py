"""Training augmentation on whole batches, on the training device, random per image.

`train_augmentation` turns `augment.*` into one module that takes a uint8 or float batch
(B x C x H x W) and returns floats in [0, 1]. Intensity, blur and sharpening steps come from
kornia; geometry (one composed warp per image instead of three resamplings), histogram matching
and border erasing are written here. Each image draws its
own parameters from torch's global generator on the batch's device, so a seeded run repeats.
Validation and test images are never augmented.
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.config import AugmentConfig
from cxrkit.data.normalise import unit_scale


class HistogramMatch(nn.Module):
    """With probability `p`, map an image's grey levels so its histogram matches another image's.

    The other image is a random different member of the same (shuffled) training batch, so each
    image takes the intensity profile of another training image, as a different scanner or site
    would give it. Classic CDF matching over 256 levels, vectorised over the batch.
    """

    levels = 256

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        if batch < 2:
            return images
        device = images.device
        chosen = torch.rand(batch, device=device) < self.p
        partner = (torch.arange(batch, device=device)
                   + torch.randint(1, batch, (batch,), device=device)) % batch
        quantised = (images.clamp(0, 1) * (self.levels - 1)).round().long().flatten(1)
        counts = torch.zeros(batch, self.levels, device=device)
        counts.scatter_add_(1, quantised, torch.ones_like(quantised, dtype=counts.dtype))
        cdf = counts.cumsum(1) / quantised.shape[1]
        target_cdf = cdf[partner].contiguous()
        # For each source level, the first target level whose CDF reaches the source CDF.
        lookup = torch.searchsorted(target_cdf, cdf.contiguous()).clamp_(max=self.levels - 1)
        matched = lookup.gather(1, quantised).view_as(images).to(images.dtype) / (self.levels - 1)
        return torch.where(chosen.view(-1, 1, 1, 1), matched, images)


class BorderErase(nn.Module):
    """With probability `p`, fill a random corner box or edge strip with a random grey level.

    Burned-in markers, labels and text sit in corners and along edges; hiding them at random
    stops a model from reading the site off them. Boxes and strips are at most `size` of the
    side deep (at least a third of that), strips run along a random stretch of their edge.
    """

    def __init__(self, p: float, size: float):
        super().__init__()
        self.p = p
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        device = images.device
        rand = torch.rand(batch, 8, device=device)
        chosen = rand[:, 0] < self.p
        region = (rand[:, 1] * 8).long()  # 0-3: corners, 4-7: top, bottom, left, right strips
        depth_y = self.size * (1 + 2 * rand[:, 2]) / 3
        depth_x = self.size * (1 + 2 * rand[:, 3]) / 3
        length = 0.3 + 0.7 * rand[:, 4]
        start = (1 - length) * rand[:, 5]
        corner, top_or_left = region < 4, region % 2 == 0
        horizontal = (region == 4) | (region == 5)
        vertical = (region == 6) | (region == 7)
        # Box as fractions of the image: [y0, y1) x [x0, x1).
        height_fraction = torch.where(corner | horizontal, depth_y, length)
        width_fraction = torch.where(corner | vertical, depth_x, length)
        at_top = torch.where(corner, region < 2, top_or_left)
        y0 = torch.where(vertical, start, torch.where(at_top, 0.0, 1 - height_fraction))
        x0 = torch.where(horizontal, start, torch.where(top_or_left, 0.0, 1 - width_fraction))
        ys = (torch.arange(height, device=device) + 0.5) / height
        xs = (torch.arange(width, device=device) + 0.5) / width
        inside_y = (ys >= y0[:, None]) & (ys < (y0 + height_fraction)[:, None])
        inside_x = (xs >= x0[:, None]) & (xs < (x0 + width_fraction)[:, None])
        mask = (inside_y[:, :, None] & inside_x[:, None, :] & chosen[:, None, None]).unsqueeze(1)
        fill = rand[:, 6].to(images.dtype).view(-1, 1, 1, 1)
        return torch.where(mask, fill, images)


class RandomGeometry(nn.Module):
    """Resized crop, horizontal flip and affine (rotation, translation, zoom, shear) as one warp.

    Each image draws its own parameters; the three are composed into one matrix per image and
    resampled once (bilinear, corners filled black), which is both faster and sharper than
    resampling three times. Ranges follow torchvision: `crop_scale` is the smallest crop area
    (aspect 0.9-1.1), `translate` a fraction of the side, `rotation` and `shear` (along x) degrees.
    """

    def __init__(self, crop_scale: float = 1.0, hflip: float = 0.0, rotation: float = 0.0,
                 translate: float = 0.0, scale: float = 0.0, shear: float = 0.0):
        super().__init__()
        self.crop_scale, self.hflip, self.rotation = crop_scale, hflip, rotation
        self.translate, self.scale, self.shear = translate, scale, shear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        u = torch.rand(batch, 9, device=images.device)

        def spread(column: int, half_width: float) -> torch.Tensor:  # uniform in [-half_width, half_width]
            return (2 * u[:, column] - 1) * half_width

        area = self.crop_scale + (1 - self.crop_scale) * u[:, 0]
        ratio = torch.exp(spread(1, math.log(1.1))) if self.crop_scale < 1 else torch.ones_like(area)
        half_w, half_h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        centre_x, centre_y = (2 * u[:, 2] - 1) * (1 - half_w), (2 * u[:, 3] - 1) * (1 - half_h)
        flip = torch.where(u[:, 4] < self.hflip, -1.0, 1.0)
        angle, shear = torch.deg2rad(spread(5, self.rotation)), torch.tan(torch.deg2rad(spread(6, self.shear)))
        zoom = 1 + spread(7, self.scale)
        shift = torch.stack([spread(8, 2 * self.translate), spread(0, 2 * self.translate)], dim=1)
        # Forward map, input -> output, in normalised coordinates: crop, flip, then affine.
        crop = _matrices(flip / half_w, 0 * flip, 0 * flip, 1 / half_h,
                         -flip * centre_x / half_w, -centre_y / half_h)
        cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
        affine = _matrices(cos, cos * shear - sin, sin, sin * shear + cos, shift[:, 0], shift[:, 1])
        grid = F.affine_grid(_inverse_affine(affine @ crop), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _inverse_affine(matrices: torch.Tensor) -> torch.Tensor:
    """The top two rows of the inverses of batched 3x3 affine matrices, in closed form: no device
    sync, unlike torch.linalg.inv, which checks for singular input."""
    linear, shift = matrices[:, :2, :2], matrices[:, :2, 2:]
    a, b, c, d = linear[:, 0, 0], linear[:, 0, 1], linear[:, 1, 0], linear[:, 1, 1]
    inverse = torch.stack([d, -b, -c, a], dim=1).view(-1, 2, 2) / (a * d - b * c).view(-1, 1, 1)
    return torch.cat([inverse, -inverse @ shift], dim=2)


def _matrices(a, b, c, d, tx, ty) -> torch.Tensor:
    """Batched 3x3 matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from per-image entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=1).view(-1, 3, 3)


class GaussianNoise(nn.Module):
    """Add zero-mean Gaussian noise, its standard deviation drawn per image from [0, `std`]."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        sigma = torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype) * self.std
        return (images + torch.randn_like(images) * sigma).clamp_(0, 1)


class BatchAugment(nn.Module):
    """The configured steps in a fixed order; uint8 or float batches in, float [0, 1] out."""

    def __init__(self, steps: list[nn.Module]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = unit_scale(images)
        for step in self.steps:
            batch = step(batch)
        return batch.clamp_(0, 1)


def train_augmentation(augment: AugmentConfig) -> BatchAugment | None:
    """The batch augmentation for `augment`, or None when every step is off (the default).

    Order: histogram matching and border erasing on the image as it came (where markers sit),
    then geometry (resized crop, flip, rotation/translation/scale/shear), then intensity curves
    (brightness, contrast, gamma), blur or sharpening, and noise last, as a detector adds it.
    """
    a = augment
    steps: list[nn.Module] = []
    if a.histogram_match > 0:
        steps.append(HistogramMatch(a.histogram_match))
    if a.border_erase > 0:
        steps.append(BorderErase(a.border_erase, a.border_erase_size))
    if a.resized_crop_scale < 1 or a.hflip > 0 or a.rotation > 0 or a.translate > 0 or a.scale > 0 or a.shear > 0:
        steps.append(RandomGeometry(a.resized_crop_scale, a.hflip, a.rotation, a.translate, a.scale, a.shear))
    if a.brightness > 0 or a.contrast > 0:
        steps.append(K.ColorJitter(brightness=a.brightness, contrast=a.contrast, p=1.0))
    if a.gamma > 0:
        steps.append(K.RandomGamma(gamma=(1 / (1 + a.gamma), 1 + a.gamma), p=1.0))
    if a.blur > 0:
        kernel = 2 * math.ceil(3 * a.blur_sigma) + 1
        steps.append(K.RandomGaussianBlur(kernel, sigma=(0.1, a.blur_sigma), p=a.blur))
    if a.sharpen > 0:
        steps.append(K.RandomSharpness(sharpness=(1.0, 1.0 + a.sharpen_amount), p=a.sharpen))
    if a.noise > 0:
        steps.append(GaussianNoise(a.noise))
    return BatchAugment(steps) if steps else None
