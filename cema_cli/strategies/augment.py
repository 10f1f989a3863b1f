"""The CoTTA augmentation (shared/spec/methods-more.md section 6.1): CoTTA's teacher averaging
and RoTTA's student input. Batched torch; one parameter draw per call for the whole batch, noise
per element; every draw from a generator seeded from (run seed, batch index) (section 6,
"Randomness"), so the edge and the cloud can reproduce the same draws.

Input and output are on cema's uint8 scale (section 6, "Input scale"): images / 255 go in, and
255 x the result (float) comes out for the model wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from cema_cli.strategies.precision import float32_region

JITTER_OPS = ("brightness", "contrast", "saturation", "hue", "gamma")


@dataclass(frozen=True)
class AugmentRanges:
    """Section 6.1's ranges (the default set; ``SOFT`` is the unused soft variant)."""

    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: tuple[float, float] = (-0.06, 0.06)
    gamma: tuple[float, float] = (0.7, 1.3)
    degrees: float = 15.0
    translate: float = 1 / 16  # of the padded side
    scale: tuple[float, float] = (0.9, 1.1)
    blur_sigma: tuple[float, float] = (0.001, 0.5)
    blur_kernel: int = 5
    flip_prob: float = 0.5
    noise_std: float = 0.005


DEFAULT = AugmentRanges()
SOFT = AugmentRanges((0.8, 1.2), (0.85, 1.15), (0.75, 1.25), (-0.03, 0.03), (0.85, 1.15), 8.0, 1 / 16, (0.95, 1.05), (0.001, 0.25))


@dataclass(frozen=True)
class AugmentParams:
    """One draw: shared by every image of the batch."""

    order: tuple[str, ...]  # the five jitter operations, in the order they apply
    factors: dict[str, float]
    angle: float
    shift: tuple[int, int]  # pixels, on the padded image
    scale: float
    blur_sigma: float
    flip: bool


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=gen))


def draw_params(gen: torch.Generator, side: int, ranges: AugmentRanges = DEFAULT) -> AugmentParams:
    """Draw one parameter set for a batch of ``side`` x ``side`` images. The shift is whole pixels,
    rounded as torchvision's RandomAffine does, up to ``translate`` x the padded side (2 side)."""
    order = tuple(JITTER_OPS[i] for i in torch.randperm(5, generator=gen).tolist())
    factors = {op: _uniform(gen, *getattr(ranges, op)) for op in JITTER_OPS}
    angle = _uniform(gen, -ranges.degrees, ranges.degrees)
    max_shift = ranges.translate * (side + 2 * (side // 2))
    shift = (round(_uniform(gen, -max_shift, max_shift)), round(_uniform(gen, -max_shift, max_shift)))
    scale = _uniform(gen, *ranges.scale)
    sigma = _uniform(gen, *ranges.blur_sigma)
    flip = bool(torch.rand(1, generator=gen) < ranges.flip_prob)
    return AugmentParams(order, factors, angle, shift, scale, sigma, flip)


def _jitter(x: torch.Tensor, op: str, factor: float) -> torch.Tensor:
    if op == "brightness":
        return TF.adjust_brightness(x, factor)
    if op == "contrast":
        return TF.adjust_contrast(x, factor)
    if op == "saturation":
        return TF.adjust_saturation(x, factor)
    if op == "hue":
        return TF.adjust_hue(x, factor)
    return TF.adjust_gamma(x.clamp(1e-8, 1.0), factor)  # the clamp comes just before the gamma


def apply_params(x: torch.Tensor, params: AugmentParams, noise: torch.Tensor, ranges: AugmentRanges = DEFAULT) -> torch.Tensor:
    """Steps 1-9 of section 6.1 on a [0, 1] batch (B x 3 x n x n); ``noise`` is the standard
    normal draw per element (scaled here by ``noise_std``)."""
    side = x.shape[-1]
    x = x.clamp(0.0, 1.0)
    for op in params.order:
        x = _jitter(x, op, params.factors[op])
    pad = side // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    x = TF.affine(x, angle=params.angle, translate=list(params.shift), scale=params.scale, shear=[0.0, 0.0],
                  interpolation=InterpolationMode.BILINEAR, fill=0.0)
    x = TF.gaussian_blur(x, [ranges.blur_kernel] * 2, [params.blur_sigma] * 2)
    x = TF.center_crop(x, [side, side])
    if params.flip:
        x = x.flip(-1)
    return (x + ranges.noise_std * noise.to(x.device)).clamp(0.0, 1.0)


def cotta_augment(images: torch.Tensor, gen: torch.Generator, ranges: AugmentRanges = DEFAULT) -> torch.Tensor:
    """One augmentation draw of a uint8-scale batch: images / 255 -> section 6.1 -> x 255 (float32,
    also under --amp: the blur's convolution is image preparation, not a model pass)."""
    params = draw_params(gen, images.shape[-1], ranges)
    noise = torch.randn(images.shape, generator=gen)
    with float32_region(images.device.type):
        return 255.0 * apply_params(images.float() / 255.0, params, noise, ranges)
