"""Noise corruptions: gaussian, shot, impulse and speckle noise (spec sections 4.1-4.3, 4.16).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale (truncated to uint8 by the caller).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE, in_chunks


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
    """Section 4.1: clip01(x + sigma * n), n ~ N(0, 1) per pixel and channel (in chunks, in_chunks)."""
    sigma = K.GAUSSIAN_NOISE[constants][severity - 1]
    return in_chunks(images, gens, lambda x, g: _to_levels(_normal_field(x, g).mul_(sigma).add_(_unit(x))))


_GUIDE_BINS = 2048  # guide-table bins per level (a power of two, so u * bins is exact)


@lru_cache(maxsize=16)
def _poisson_tables(c: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse-CDF tables of Poisson(c * L / 255) for every level L = 0..255 (rate in float64).

    Flat over (level L, count k), K counts per level: ``cdf[L*K + k]`` = P(count <= k) (the last
    count of a level takes the remaining mass, below 1e-30); ``to_level[L*K + k]`` = the uint8
    output clip01(k / c) * 255 (in float32, truncated). The guide table, flat over (level L,
    bin b of M): for u in [b/M, (b+1)/M) with no CDF step inside the bin, the output level
    itself; for a bin holding a step, -1 - (L*K + the smallest count the bin can give).
    """
    rates = torch.arange(256, dtype=torch.float64) / 255.0 * c
    top = float(rates.max())
    counts = int(top + 12.0 * math.sqrt(top) + 40)
    k = torch.arange(counts, dtype=torch.float64)
    log_rate = torch.log(rates.clamp_min(1e-300))[:, None]
    pmf = torch.exp(k[None, :] * log_rate - rates[:, None] - torch.lgamma(k + 1)[None, :])
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # level 0: rate 0, no photons
    cdf = torch.cumsum(pmf, dim=1).clamp_(max=1.0)
    cdf[:, -1] = 1.0
    edges = (torch.arange(_GUIDE_BINS, dtype=torch.float64) / _GUIDE_BINS).expand(256, -1).contiguous()
    low = torch.searchsorted(cdf, edges, right=True)  # the count of u = b / M
    high = torch.searchsorted(cdf, edges + 1.0 / _GUIDE_BINS, right=False)  # the largest count in the bin
    to_level = (k.to(torch.float32) / float(c)).clamp_(0, 1).mul_(255.0).to(torch.uint8)
    first = low + torch.arange(256)[:, None] * counts
    guide = torch.where(high > low, -1 - first, to_level.to(torch.int64)[low])
    return cdf.flatten(), guide.flatten().to(torch.int32), to_level.repeat(256)


def shot_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.2: clip01(Poisson(c x) / c) per pixel and channel (uint8 result).

    Sampled by inversion: one U[0, 1) float64 draw per element from the sample's generator;
    the count is the number of CDF values <= u at the element's rate. Only the 256 rates
    c L / 255 occur, so their CDFs are tabulated once and a guide table over u resolves most
    elements in one lookup; the few whose bin holds a CDF step walk the steps.
    """
    c = K.SHOT_NOISE[constants][severity - 1]
    cdf, guide, to_level = _poisson_tables(float(c))
    u = torch.empty(images.shape, dtype=torch.float64)
    for g, row in zip(gens, u):
        torch.rand(row.shape, generator=g, dtype=torch.float64, out=row)
    u = u.view(-1)
    index = images.cpu().reshape(-1).to(torch.int32).mul_(_GUIDE_BINS).add_(u.mul(_GUIDE_BINS).to(torch.int32))
    out = guide.index_select(0, index)
    steps = (out < 0).nonzero().squeeze(1)
    if steps.numel():
        flat = -1 - out.index_select(0, steps).to(torch.int64)
        v = u.index_select(0, steps)
        active = torch.arange(steps.numel())
        while active.numel():
            moved = v.index_select(0, active) >= cdf.index_select(0, flat.index_select(0, active))
            active = active[moved]
            flat.index_add_(0, active, torch.ones_like(active))
        out.index_copy_(0, steps, to_level.index_select(0, flat).to(torch.int32))
    return out.to(torch.uint8).view(images.shape).to(images.device)


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
    """Section 4.16: clip01(x + x * c * n), n ~ N(0, 1) per pixel and channel (in chunks, in_chunks)."""
    c = K.SPECKLE_NOISE[constants][severity - 1]

    def speckle_chunk(chunk: torch.Tensor, chunk_gens: list[torch.Generator]) -> torch.Tensor:
        x = _unit(chunk)
        return _to_levels((x * c).mul_(_normal_field(chunk, chunk_gens)).add_(x))

    return in_chunks(images, gens, speckle_chunk)
