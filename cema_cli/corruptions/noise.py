"""Noise corruptions: gaussian, shot, impulse and speckle noise (spec sections 4.1-4.3, 4.16).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale (truncated to uint8 by the caller).
"""

from __future__ import annotations

import numpy as np
import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.to(WORK_DTYPE) / 255.0


def _normal_field(images: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """N(0, 1) per element, each sample from its own generator, drawn straight into one batch."""
    field = torch.empty(images.shape, dtype=WORK_DTYPE)
    for g, row in zip(gens, field):
        torch.randn(row.shape, generator=g, dtype=WORK_DTYPE, out=row)
    return field.to(images.device)


def _to_levels(x: torch.Tensor) -> torch.Tensor:
    """clip01(x) * 255 in place (x is a fresh work tensor)."""
    return x.clamp_(0, 1).mul_(255.0)


def gaussian_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.1: clip01(x + sigma * n), n ~ N(0, 1) per pixel and channel."""
    sigma = K.GAUSSIAN_NOISE[constants][severity - 1]
    return _to_levels(_normal_field(images, gens).mul_(sigma).add_(_unit(images)))


def shot_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.2: clip01(Poisson(c x) / c) per pixel and channel.

    The rates depend on the image, so the draw happens on the CPU, with NumPy's PCG64 Poisson
    sampler (about 4x faster than torch.poisson) seeded from the sample's own generator.
    """
    c = K.SHOT_NOISE[constants][severity - 1]
    rates = (images.to(torch.float64) / 255.0 * c).cpu().numpy()
    counts = np.empty(rates.shape, dtype=np.float32)  # counts are small integers: exact in float32
    for rate, g, row in zip(rates, gens, counts):
        row[...] = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=g))).poisson(rate)
    return _to_levels(torch.from_numpy(counts).to(images.device).div_(c))


def impulse_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.3: each element is hit with probability a; a hit becomes 1 or 0 with probability 1/2.

    Draw order per sample: the "hit" field, then the "salt" field (both for every element).
    Computed on uint8: an element not hit keeps its level exactly (255 * (v / 255) truncates to
    v for every level, in float32 and float64 alike).
    """
    amount = K.IMPULSE_NOISE[constants][severity - 1]
    fields = torch.empty((images.shape[0], 2, *images.shape[1:]), dtype=WORK_DTYPE)
    for g, row in zip(gens, fields):
        torch.rand(row.shape, generator=g, dtype=WORK_DTYPE, out=row)
    fields = fields.to(images.device)
    hit, salt = fields[:, 0] < amount, fields[:, 1] < 0.5
    return torch.where(hit, salt.to(torch.uint8) * 255, images)


def speckle_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.16: clip01(x + x * c * n), n ~ N(0, 1) per pixel and channel."""
    c = K.SPECKLE_NOISE[constants][severity - 1]
    x = _unit(images)
    return _to_levels((x * c).mul_(_normal_field(images, gens)).add_(x))
