"""frost (procedural): the frost corruption with generated textures (spec sections 4.9 and 8).

The reference blends the image with crops of five frost photographs that cema does not ship.
This module generates five substitute textures at the photographs' sizes with the recipe of
section 8 (a power-law Gaussian random field plus a layer of branched "ice needles", coloured
with each photograph's per-channel mean and standard deviation), from fixed seeds, so every
run and every machine gets the same textures. They match the photographs' first- and
second-order statistics, not their exact look: results are "frost (procedural)" and not
comparable to published frost numbers. frost2 and frost3 are identical (as in the reference),
keeping the 5-way texture index and its mixture weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import in_chunks, lookup


@dataclass(frozen=True)
class TextureSpec:
    """Statistics of one reference photograph (section 8 table), measured on its 8-bit RGB."""

    name: str
    width: int
    height: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    slope: float  # magnitude of the radially averaged power-spectrum slope
    needle_scale: float  # typical needle length as a fraction of the short side
    ac_width: float  # 50% autocorrelation width in pixels
    red_decorrelate: bool = False  # frost1: channel correlation about 0.57


TEXTURES: tuple[TextureSpec, ...] = (
    TextureSpec("frost1", 900, 600, (78, 149, 166), (27, 16, 15), 1.5, 0.20, 29, red_decorrelate=True),
    TextureSpec("frost2", 560, 315, (201, 205, 214), (21, 22, 23), 1.9, 0.10, 13),
    TextureSpec("frost4", 527, 350, (138, 153, 165), (28, 28, 30), 1.5, 0.05, 5),
    TextureSpec("frost5", 660, 495, (112, 123, 135), (44, 43, 42), 2.0, 0.12, 10),
)
# The reference's index 0..4 selects frost1, frost2, frost3 (= frost2), frost4, frost5.
_INDEX_TO_TEXTURE = (0, 1, 1, 2, 3)
_SEED = 20190505  # fixed: the textures are part of the definition of "frost (procedural)"
CIFAR_DECIMATION = 5  # OpenCV's 0.2x bilinear resize keeps rows/columns 2, 7, 12, ...


def _power_law_field(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
    """Gaussian random field with power spectrum ~ f^-beta (random phases, zero mean, unit var)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = np.inf  # no DC component
    shape = (h, w // 2 + 1)
    spectrum = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    field = np.fft.irfft2(spectrum * f ** (-beta / 2), s=(h, w))
    return (field - field.mean()) / field.std()


def _segments(rng: np.random.Generator, spec: TextureSpec) -> np.ndarray:
    """Needles and their side branches as (K, 4) segments (x0, y0, x1, y1)."""
    short = min(spec.width, spec.height)
    count = int(300 * spec.width * spec.height / (560 * 315))
    length = short * np.clip(rng.normal(spec.needle_scale, spec.needle_scale / 3, count), 0.03, 0.20)
    angle = rng.uniform(0, np.pi, count)
    x0, y0 = rng.uniform(0, spec.width, count), rng.uniform(0, spec.height, count)
    segs = [np.stack([x0, y0, x0 + length * np.cos(angle), y0 + length * np.sin(angle)], axis=1)]
    branches = rng.integers(2, 7, count)
    owner = np.repeat(np.arange(count), branches)
    at = rng.uniform(0.1, 0.9, owner.size)  # where along the needle the branch starts
    side = rng.choice([-1.0, 1.0], owner.size)
    b_angle = angle[owner] + side * np.deg2rad(rng.uniform(45, 70, owner.size))
    b_len = length[owner] * (1 - at) * rng.uniform(0.2, 0.5, owner.size)
    bx = x0[owner] + at * length[owner] * np.cos(angle[owner])
    by = y0[owner] + at * length[owner] * np.sin(angle[owner])
    segs.append(np.stack([bx, by, bx + b_len * np.cos(b_angle), by + b_len * np.sin(b_angle)], axis=1))
    return np.concatenate(segs)


def _periodic_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur on the torus via the FFT (the texture wraps; no SciPy needed at run time)."""
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (fx * fx + fy * fy))
    return np.fft.irfft2(np.fft.rfft2(image) * transfer, s=image.shape)


def _crystal_layer(rng: np.random.Generator, spec: TextureSpec) -> np.ndarray:
    """Anti-aliased 1-px needles (bilinear splats every half pixel), then blurred.

    Section 8 suggests a blur of sigma about 0.6; that leaves the texture's 50% autocorrelation
    width at 2-3 px, far below the photographs' 5-29 px, so the blur sigma is ac_width / 2
    (measured to land within about 20% of the table's widths).
    """
    h, w = spec.height, spec.width
    seg = _segments(rng, spec)
    lengths = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
    steps = np.maximum(2, np.ceil(2 * lengths).astype(int))
    owner = np.repeat(np.arange(len(seg)), steps)
    t = (np.arange(owner.size) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps - 1, steps)
    px = seg[owner, 0] + t * (seg[owner, 2] - seg[owner, 0])
    py = seg[owner, 1] + t * (seg[owner, 3] - seg[owner, 1])
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - ix, py - iy
    canvas = np.zeros(h * w)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = (ix + dx) % w, (iy + dy) % h  # wrap: the texture has no preferred border
        canvas += np.bincount(cy * w + cx, weights=0.5 * weight, minlength=h * w)
    sigma = max(0.6, spec.ac_width / 2)
    layer = _periodic_gaussian(np.minimum(canvas, 1.0).reshape(h, w), sigma)
    return (layer - layer.mean()) / layer.std()


def generate_texture(spec: TextureSpec, seed: int) -> np.ndarray:
    """Section 8 recipe: T = 0.6 B + 0.8 C normalised, coloured per channel; uint8 (H, W, 3) RGB."""
    rng = np.random.default_rng(seed)
    t = 0.6 * _power_law_field(rng, spec.height, spec.width, spec.slope) + 0.8 * _crystal_layer(rng, spec)
    t = (t - t.mean()) / t.std()
    channels = [t, t, t]
    if spec.red_decorrelate:  # an independent low-frequency field lowers the channel correlation
        low = _power_law_field(rng, spec.height, spec.width, 3.0)
        channels[0] = 0.57 * t + np.sqrt(1 - 0.57**2) * low
    rgb = np.stack([m + s * c for m, s, c in zip(spec.mean, spec.std, channels)], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


@lru_cache(maxsize=None)
def _texture_bank() -> tuple[np.ndarray, ...]:
    return tuple(generate_texture(spec, _SEED + i) for i, spec in enumerate(TEXTURES))


@lru_cache(maxsize=None)
def frost_textures(constants: str) -> tuple[torch.Tensor, ...]:
    """The five reachable textures (index 0..4) as uint8 (3, H, W) CPU tensors for a constants set.

    CIFAR: OpenCV's 0.2x bilinear resize samples source position 5k + 2 exactly, so it is a pure
    decimation (section 4.9 step 3); the output size is round(0.2 * size) like OpenCV's.
    """
    bank = []
    for which in _INDEX_TO_TEXTURE:
        tex = _texture_bank()[which]
        if constants == "cifar":
            h, w = tex.shape[:2]
            rows, cols = int(round(h / CIFAR_DECIMATION)), int(round(w / CIFAR_DECIMATION))
            tex = tex[2::CIFAR_DECIMATION, 2::CIFAR_DECIMATION][:rows, :cols]
        bank.append(torch.from_numpy(np.ascontiguousarray(tex.transpose(2, 0, 1))))
    return tuple(bank)


def frost_max_side(constants: str) -> tuple[int, int]:
    """Largest (H, W) a crop can have: the crop offset range [0, size - S) must be non-empty."""
    bank = frost_textures(constants)
    return min(t.shape[1] for t in bank) - 1, min(t.shape[2] for t in bank) - 1


@lru_cache(maxsize=32)
def _blend_table(ai: float, af: float) -> torch.Tensor:
    """uint8 result of truncate(clip(ai * U + af * F, 0, 255)) for every (U, F) level pair, row U.

    The per-pixel formula depends on the two levels only, so the table, computed with the same
    float64 operations, gives the same bytes as evaluating it pixel by pixel, in a fraction of
    the time. float64: ai * U + af * F often lands exactly on an integer level (float32 would
    flip it).
    """
    levels = torch.arange(256, dtype=torch.float64)
    blend = ai * levels[:, None] + af * levels[None, :]
    return blend.clamp_(0, 255).to(torch.uint8).flatten()


def frost(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.9 with the procedural textures: clip(ai * U + af * crop, 0, 255) on the 0..255 scale.

    Draws per sample: texture index in {0..4}, row offset in [0, Ht - H), column offset in
    [0, Wt - W) (exclusive upper bounds, as the reference). In chunks (in_chunks).
    """
    ai, af = K.FROST[constants][severity - 1]
    bank = frost_textures(constants)
    h, w = images.shape[-2:]
    arrays = [tex.numpy() for tex in bank]  # NumPy slicing: less per-sample overhead
    table = _blend_table(ai, af).to(images.device)

    def frost_chunk(chunk: torch.Tensor, chunk_gens: list[torch.Generator]) -> torch.Tensor:
        crops = np.empty(chunk.shape, dtype=np.uint8)
        for g, crop in zip(chunk_gens, crops):
            tex = arrays[int(torch.randint(0, 5, (), generator=g))]
            top = int(torch.randint(0, tex.shape[1] - h, (), generator=g))
            left = int(torch.randint(0, tex.shape[2] - w, (), generator=g))
            crop[...] = tex[:, top:top + h, left:left + w]
        pair = chunk.to(torch.int32).mul_(256).add_(torch.from_numpy(crops).to(chunk.device))
        return lookup(table, pair)

    return in_chunks(images, gens, frost_chunk)
