"""Noise corruptions: gaussian, shot, impulse and speckle noise (spec sections 4.1-4.3, 4.16).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale (truncated to uint8 by the caller).
"""

from __future__ import annotations

import numpy as np
import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE
from cema_cli.corruptions._random import per_sample


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.to(WORK_DTYPE) / 255.0


def _normal_field(images: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    shape = tuple(images.shape[1:])
    field = per_sample(gens, lambda g: torch.randn(shape, generator=g, dtype=WORK_DTYPE))
    return field.to(images.device)


def gaussian_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.1: clip01(x + sigma * n), n ~ N(0, 1) per pixel and channel."""
    sigma = K.GAUSSIAN_NOISE[constants][severity - 1]
    x = _unit(images)
    return (x + sigma * _normal_field(images, gens)).clamp_(0, 1) * 255.0


def shot_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.2: clip01(Poisson(c x) / c) per pixel and channel.

    The rates depend on the image, so the draw happens on the CPU, with NumPy's PCG64 Poisson
    sampler (about 4x faster than torch.poisson) seeded from the sample's own generator.
    """
    c = K.SHOT_NOISE[constants][severity - 1]
    rates = (images.to(torch.float64) / 255.0 * c).cpu().numpy()
    counts = np.stack([
        np.random.default_rng(int(torch.randint(0, 2**62, (), generator=g))).poisson(rate)
        for rate, g in zip(rates, gens)
    ])
    return (torch.from_numpy(counts).to(device=images.device, dtype=WORK_DTYPE) / c).clamp_(0, 1) * 255.0


def impulse_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.3: each element is hit with probability a; a hit becomes 1 or 0 with probability 1/2.

    Draw order per sample: the "hit" field, then the "salt" field (both for every element).
    """
    amount = K.IMPULSE_NOISE[constants][severity - 1]
    shape = tuple(images.shape[1:])
    fields = per_sample(gens, lambda g: torch.rand((2, *shape), generator=g, dtype=WORK_DTYPE)).to(images.device)
    hit, salt = fields[:, 0] < amount, fields[:, 1] < 0.5
    x = _unit(images)
    return torch.where(hit, salt.to(x.dtype), x) * 255.0


def speckle_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.16: clip01(x + x * c * n), n ~ N(0, 1) per pixel and channel."""
    c = K.SPECKLE_NOISE[constants][severity - 1]
    x = _unit(images)
    return (x + x * c * _normal_field(images, gens)).clamp_(0, 1) * 255.0
