"""Noise corruptions: gaussian, shot, impulse and speckle noise (spec sections 4.1-4.3, 4.16).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale (truncated to uint8 by the caller).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE, in_chunks
from cema_cli.corruptions._random import numpy_twin, uniform64_from_raw


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


# Images with fewer elements draw with torch itself: setting a twin up costs ~10 us per sample,
# more than torch's sampling of a 32 x 32 x 3 image saves (the bytes are the same either way).
_TWIN_MIN_ELEMENTS = 3 * 64 * 64


def _twin_raw(g: torch.Generator, count: int) -> np.ndarray | None:
    """The next ``count`` raw MT19937 values of sample generator ``g`` (uint32, drawn by its
    NumPy twin in section 5's order), or None where torch's generator cannot be twinned."""
    bits = numpy_twin(g)
    if bits is None:
        return None
    return np.random.Generator(bits).integers(0, 2**32, size=count, dtype=np.uint32)  # the raw values, in order


@lru_cache(maxsize=16)
def _guide_marks(c: float) -> torch.Tensor:
    """The guide table in int16 (half the cache footprint): the output level, or -1 where the
    bin holds a CDF step (the walk's first count then comes from the int32 table)."""
    guide = _poisson_tables(c)[1]
    return torch.where(guide < 0, -1, guide).to(torch.int16)


def shot_noise(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.2: clip01(Poisson(c x) / c) per pixel and channel (uint8 result).

    Sampled by inversion: one U[0, 1) float64 draw per element from the sample's generator;
    the count is the number of CDF values <= u at the element's rate. Only the 256 rates
    c L / 255 occur, so their CDFs are tabulated once and a guide table over u resolves most
    elements in one lookup; the few whose bin holds a CDF step walk the steps. The draws come
    from the generators' NumPy twins where possible (_random.py: the same numbers): the guide
    bin of u = top 11 of its 53 bits is read off the raw values, and u itself is formed only
    for the elements that walk.
    """
    c = K.SHOT_NOISE[constants][severity - 1]
    cdf, guide, to_level = _poisson_tables(float(c))
    count = images[0].numel()
    if count < _TWIN_MIN_ELEMENTS:
        return _shot_noise_torch(images, cdf, guide, to_level, gens)
    levels = images.cpu().numpy().reshape(len(gens), count)
    marks = _guide_marks(float(c))
    out = np.empty((len(gens), count), dtype=np.int16)
    walkers, walker_u, walker_first = [], [], []
    for i, (g, level, row) in enumerate(zip(gens, levels, out)):
        raw = _twin_raw(g, 2 * count)
        if raw is None:
            return _shot_noise_torch(images, cdf, guide, to_level, gens)
        high, low = raw[0::2], raw[1::2]  # u = ((high mod 2^21) 2^32 + low) 2^-53
        index = (high >> np.uint32(10)).view(np.int32)
        index &= _GUIDE_BINS - 1  # floor(u * bins): u's top 11 bits
        index += level.astype(np.int32) * _GUIDE_BINS
        torch.index_select(marks, 0, torch.from_numpy(index), out=torch.from_numpy(row))  # faster than np.take here
        steps = np.flatnonzero(row < 0)
        walkers.append(steps + i * count)
        walker_u.append(uniform64_from_raw(high[steps], low[steps]))
        walker_first.append(-1 - guide.numpy()[index[steps]])
    flat_out = out.reshape(-1)
    steps = np.concatenate(walkers)
    if steps.size:
        flat_out[steps] = _walk_steps(np.concatenate(walker_u), np.concatenate(walker_first), cdf.numpy(), to_level.numpy())
    return torch.from_numpy(out.astype(np.uint8)).view(images.shape).to(images.device)


def _walk_steps(u: np.ndarray, first: np.ndarray, cdf: np.ndarray, to_level: np.ndarray) -> np.ndarray:
    """Output levels of the elements whose guide bin holds a CDF step: from the bin's smallest
    count (flat index ``first``), one count up while u >= the CDF there."""
    flat = first.astype(np.int64)
    active = np.arange(u.size)
    while active.size:
        active = active[u[active] >= cdf[flat[active]]]
        flat[active] += 1
    return to_level[flat]


def _shot_noise_torch(images: torch.Tensor, cdf: torch.Tensor, guide: torch.Tensor, to_level: torch.Tensor,
                      gens: list[torch.Generator]) -> torch.Tensor:
    """shot_noise with the uniforms drawn by torch itself (small images, or no NumPy twin)."""
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
    v for every level, in float32 and float64 alike). With the generators' NumPy twins
    (_random.py: the same numbers), the float32 tests u < a and u < 1/2 are read off the raw
    values: u = m 2^-24 with m the raw value's low 24 bits, so u < float32(a) iff
    m < ceil(float32(a) 2^24), and u < 1/2 iff bit 23 is clear.
    """
    amount = K.IMPULSE_NOISE[constants][severity - 1]
    count = images[0].numel()
    if count < _TWIN_MIN_ELEMENTS:
        return _impulse_noise_torch(images, amount, gens)
    out = images.cpu().numpy().reshape(len(gens), count).copy()
    hit_below = np.uint32(math.ceil(float(np.float32(amount)) * 2.0**24))
    for g, row in zip(gens, out):
        raw = _twin_raw(g, 2 * count)
        if raw is None:
            return _impulse_noise_torch(images, amount, gens)
        hit = ((raw[:count] & np.uint32(0xFFFFFF)) < hit_below).view(np.uint8)
        hit *= np.uint8(255)
        salt = ((raw[count:] & np.uint32(0x800000)) == 0).view(np.uint8)
        salt *= np.uint8(255)
        row &= ~hit  # bytes: where hit, the salt (255) or pepper (0) level; elsewhere the image
        row |= salt & hit
    return torch.from_numpy(out).view(images.shape).to(images.device)


def _impulse_noise_torch(images: torch.Tensor, amount: float, gens: list[torch.Generator]) -> torch.Tensor:
    """impulse_noise with the uniforms drawn by torch itself (small images, or no NumPy twin)."""
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
