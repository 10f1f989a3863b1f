"""Shared building blocks of the corruptions (shared/spec/corruptions.md sections 1.2-3.6).

All image tensors are batched (N, C, H, W) floats on any device. Filters with a fixed border
rule are applied as dense (n x n) matrices built once on the CPU: one matrix product per axis
handles every border mode and every radius (including radii wider than the image) exactly,
and matrix products are batch-size invariant, which keeps samples independent of batching.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

WORK_DTYPE = torch.float32


def opencv():
    """The cv2 module, using as many threads as torch's intra-op pool (never more: the machine
    may be shared, and the caller chose torch's thread count)."""
    import cv2

    cv2.setNumThreads(torch.get_num_threads())
    return cv2


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table.flatten()[index] for an int32 index of any shape: a flat index_select, several
    times faster on the CPU than advanced indexing or gather with int64 indices."""
    return table.reshape(-1).index_select(0, index.reshape(-1)).reshape(index.shape)


# CPU batches of images of 64 px and more are corrupted in chunks of about this many values (one
# 224-px image): a chunk's work tensors stay in the cache and are not fresh pages for every
# operation. Smaller images go as one batch, which keeps the per-operation overhead low.
CHUNK_VALUES = 3 * 224 * 224
CHUNK_MIN_SIDE = 64


def in_chunks(images: torch.Tensor, gens: list[torch.Generator], corrupt_chunk) -> torch.Tensor:
    """corrupt_chunk(chunk, chunk_gens) over consecutive chunks of a CPU batch, as uint8.

    corrupt_chunk returns uint8 or floats in [0, 255] (truncated here, as the caller's
    conversion). Samples are independent, so the bytes do not depend on the chunking.
    """
    if images.is_cuda:
        return corrupt_chunk(images, gens)
    n = images.shape[0]
    step = max(1, CHUNK_VALUES // images[0].numel()) if min(images.shape[-2:]) >= CHUNK_MIN_SIDE else n
    out = torch.empty_like(images)
    for start in range(0, n, step):
        store_levels(out[start:start + step], corrupt_chunk(images[start:start + step], gens[start:start + step]))
    return out


def store_levels(target: torch.Tensor, levels: torch.Tensor) -> None:
    """target (uint8) = levels, uint8 or floats in [0, 255] truncated toward zero (the caller's
    conversion). CPU floats go through NumPy's cast: the same values, several times faster than
    torch's float -> uint8 copy."""
    if levels.dtype == torch.uint8 or levels.is_cuda or target.is_cuda:
        target.copy_(levels)
    else:
        np.copyto(target.numpy(), levels.numpy(), casting="unsafe")


# ----------------------------------------------------------------------------- borders (1.2)


def border_index(i: np.ndarray, n: int, border: str) -> np.ndarray:
    """Map integer positions (any range) into 0..n-1 for a border mode of section 1.2.

    "nearest" replicates the edge; "reflect" is half-sample symmetric (edge repeated) and
    "mirror" whole-sample symmetric (edge not repeated); both symmetric modes extend
    periodically, so kernels wider than the image are covered.
    """
    if border == "nearest":
        return np.clip(i, 0, n - 1)
    if border == "reflect":
        j = np.mod(i, 2 * n)
        return np.where(j < n, j, 2 * n - 1 - j)
    if border == "mirror":
        if n == 1:
            return np.zeros_like(i)
        j = np.mod(i, 2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    raise ValueError(f"unknown border {border!r}")


@lru_cache(maxsize=256)
def _filter_matrix_np(n: int, weights: tuple[float, ...], border: str) -> np.ndarray:
    radius = (len(weights) - 1) // 2
    rows = np.arange(n)[:, None]
    taps = np.arange(-radius, radius + 1)[None, :]
    cols = border_index(rows + taps, n, border)
    matrix = np.zeros((n, n), dtype=np.float64)
    np.add.at(matrix, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(np.asarray(weights), cols.shape))
    return matrix


def filter_matrix(n: int, weights: tuple[float, ...], border: str, like: torch.Tensor) -> torch.Tensor:
    """(n x n) matrix M with (M @ v)[i] = sum_t w_t v[border(i + t)], t = -r..r (correlation)."""
    return torch.from_numpy(_filter_matrix_np(n, weights, border)).to(device=like.device, dtype=like.dtype)


# Images at least this large (both sides) are filtered with OpenCV's sepFilter2D on the CPU;
# smaller ones (the CIFAR constants' 32 px) keep the dense matrices, whose bytes the embedded
# default's shipped models were trained on.
OPENCV_FILTER_MIN_SIDE = 64
# sepFilter2D only while the kernel has at most side / this many taps: beyond, the dense
# matrices' BLAS products are faster (measured at 224 px, one thread).
_OPENCV_MAX_TAPS = {torch.float32: 4, torch.float64: 8}
_OPENCV_BORDERS = {"nearest": "BORDER_REPLICATE", "mirror": "BORDER_REFLECT_101", "reflect": "BORDER_REFLECT"}


def separable_filter(x: torch.Tensor, weights: tuple[float, ...], border: str) -> torch.Tensor:
    """Correlate the last two axes of x with the same 1-D weights along rows and columns.

    Large float32/float64 CPU images with a kernel much shorter than the image side go through
    OpenCV's sepFilter2D (a direct 2r + 1 tap sum per pixel, the same border rule; it sums in a
    different order than the matrices, so a truncated level can move by one on a few pixels);
    everything else uses one dense (n x n) matrix product per axis.
    """
    h, w = x.shape[-2:]
    side = min(h, w)
    if not x.is_cuda and side >= OPENCV_FILTER_MIN_SIDE and len(weights) <= side // _OPENCV_MAX_TAPS.get(x.dtype, side + 1):
        return _separable_filter_opencv(x, weights, border)
    mh = filter_matrix(h, weights, border, x)
    mw = filter_matrix(w, weights, border, x)
    return mh @ x @ mw.T


def _separable_filter_opencv(x: torch.Tensor, weights: tuple[float, ...], border: str) -> torch.Tensor:
    """sepFilter2D on every (H, W) plane of a float32/float64 CPU tensor (correlation, kernel as given)."""
    cv2 = opencv()
    h, w = x.shape[-2:]
    kernel = np.asarray(weights, dtype=np.float32 if x.dtype == torch.float32 else np.float64)
    flag = getattr(cv2, _OPENCV_BORDERS[border])
    planes = x.contiguous().reshape(-1, h, w).numpy()
    out = np.empty_like(planes)
    for plane, target in zip(planes, out):
        cv2.sepFilter2D(plane, -1, kernel, kernel, dst=target, borderType=flag)
    return torch.from_numpy(out).reshape(x.shape)


def opencv_filter_applies(images: torch.Tensor, taps: int, dtype: torch.dtype = WORK_DTYPE) -> bool:
    """Whether :func:`separable_filter` sends a dtype copy of images through OpenCV's sepFilter2D
    (its condition)."""
    side = min(images.shape[-2:])
    return not images.is_cuda and side >= OPENCV_FILTER_MIN_SIDE and taps <= side // _OPENCV_MAX_TAPS.get(dtype, side + 1)


def opencv_filter_levels(images: torch.Tensor, weights: tuple[float, ...], border: str) -> torch.Tensor:
    """uint8 clip01(filter(images / 255)) * 255 (truncated) for uint8 CPU images: the float32
    sepFilter2D of :func:`separable_filter` on each plane, one image at a time in one reused
    buffer (the same float32 operations, so the same bytes as filtering the float batch)."""
    cv2 = opencv()
    kernel = np.asarray(weights, dtype=np.float32)
    flag = getattr(cv2, _OPENCV_BORDERS[border])
    planar = images.contiguous().numpy()
    out = np.empty_like(planar)
    unit = np.empty(planar.shape[1:], dtype=np.float32)
    for image, target in zip(planar, out):
        np.divide(image, np.float32(255.0), out=unit, dtype=np.float32)
        for plane in unit:
            cv2.sepFilter2D(plane, -1, kernel, kernel, dst=plane, borderType=flag)
        np.clip(unit, 0, 1, out=unit)
        np.multiply(unit, np.float32(255.0), out=unit)
        target[...] = unit
    return torch.from_numpy(out)


# ------------------------------------------------------------------- Gaussian filter (1.3)


@lru_cache(maxsize=64)
def gaussian_weights(sigma: float, truncate: float = 4.0) -> tuple[float, ...]:
    """Normalised 1-D Gaussian weights with scikit-image/SciPy's radius int(truncate*sigma+0.5)."""
    radius = int(truncate * float(sigma) + 0.5)
    if radius == 0 or sigma == 0:
        return (1.0,)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * t * t / (float(sigma) ** 2))
    return tuple((w / w.sum()).tolist())


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, border: str = "nearest") -> torch.Tensor:
    """Section 1.3: G_sigma over the last two axes (never across channels); radius 0 = identity."""
    weights = gaussian_weights(sigma, truncate)
    if len(weights) == 1:
        return x
    return separable_filter(x, weights, border)


def gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    return (len(gaussian_weights(sigma, truncate)) - 1) // 2


# ------------------------------------------------------------------------ clipped zoom (3.2)


def _zoom_axis(side: int, factor: float) -> tuple[int, int, int, int]:
    crop = int(math.ceil(side / factor))
    top = (side - crop) // 2
    size = round(crop * factor)  # Python round: half to even, like SciPy's zoom output size
    trim = (size - side) // 2
    return crop, top, size, trim


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Section 3.2: centre crop of side ceil(S/z), bilinear corner-aligned resize, centred trim."""
    h, w = x.shape[-2:]
    ch, top_h, nh, th = _zoom_axis(h, factor)
    cw, top_w, nw, tw = _zoom_axis(w, factor)
    crop = x[..., top_h:top_h + ch, top_w:top_w + cw]
    if (nh, nw) != (ch, cw):
        crop = F.interpolate(crop, size=(nh, nw), mode="bilinear", align_corners=True)
    return crop[..., th:th + h, tw:tw + w]


# ------------------------------------------------------------------------- motion blur (3.4)


def motion_weights(radius: float, sigma: float) -> np.ndarray:
    """One-sided half-Gaussian weights of ImageMagick's MotionBlurImage (2*ceil(R)+1 taps)."""
    taps = 2 * int(math.ceil(radius)) + 1
    i = np.arange(taps, dtype=np.float64)
    w = np.exp(-(i * i) / (2.0 * sigma * sigma))
    return w / w.sum()


def motion_offsets(taps: int, theta_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample integer tap offsets (rows, cols), each (N, taps): ceil(i cos/sin(theta) - 0.5)."""
    theta = theta_deg.to(torch.float64) * (math.pi / 180.0)
    i = torch.arange(taps, dtype=torch.float64, device=theta.device)
    cols = torch.ceil(i[None, :] * torch.cos(theta)[:, None] - 0.5).long()
    rows = torch.ceil(i[None, :] * torch.sin(theta)[:, None] - 0.5).long()
    return rows, cols


def motion_blur_u8(u: torch.Tensor, radius: float, sigma: float, theta_deg: torch.Tensor,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Section 3.4 on 8-bit values (N, C, H, W), uint8 or held in a float tensor; returns 8-bit values.

    Sample by sample (:func:`motion_blur_sample`): one image's planes stay in the cache across
    the taps. out: an optional uint8 (N, C, H, W) tensor that receives the values (and is
    returned); otherwise a float tensor.
    """
    weights = motion_weights(radius, sigma).tolist()
    rows, cols = motion_offsets(len(weights), theta_deg.to(u.device))
    results = (motion_blur_sample(x, weights, dys, dxs) for x, dys, dxs in zip(u, rows.tolist(), cols.tolist()))
    if out is None:
        return torch.stack(list(results))
    for target, result in zip(out, results):
        store_levels(target, result)  # integer values in [0, 255]: exact
    return out


def motion_blur_sample(x: torch.Tensor, weights: list[float], dys: list[int], dxs: list[int]) -> torch.Tensor:
    """Section 3.4 for one image (C, H, W) of 8-bit values (uint8 or float) with its tap offsets
    (motion_offsets); returns float 8-bit values.

    Each tap adds the edge-clamped image shifted by its offset: a window of the
    replicate-padded image, so no index tensors are built. The result is quantised like the
    reference's ImageMagick Q16 + 8-bit PNG round trip: floor(round(257 * v) / 257).
    """
    h, w = x.shape[-2:]
    if not x.is_floating_point():
        x = x.to(WORK_DTYPE)
    pad = max(max(map(abs, dys)), max(map(abs, dxs)))
    padded = F.pad(x[None], (pad, pad, pad, pad), mode="replicate")[0]
    acc = torch.zeros_like(x)
    for weight, dy, dx in zip(weights, dys, dxs):
        acc.add_(padded[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w], alpha=weight)
    return acc.mul_(257.0).round_().div_(257.0).floor_()


# ---------------------------------------------------------------------- plasma fractal (3.3)


def plasma_draw_count(mapsize: int) -> int:
    return mapsize * mapsize - 1


@lru_cache(maxsize=16)
def _plasma_wibbles(mapsize: int, decay: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw, in consumption order: (2 w, -w, w) of the level that consumes it (w = 100 / decay^level)."""
    scale, shift, mult = [], [], []
    step, wibble = mapsize, 100.0
    while step >= 2:
        count = 3 * (mapsize // step) ** 2
        scale.append(np.full(count, 2 * wibble))
        shift.append(np.full(count, -wibble))
        mult.append(np.full(count, wibble))
        step //= 2
        wibble /= decay
    return np.concatenate(scale), np.concatenate(shift), np.concatenate(mult)


def _plasma_maps(wibbles: np.ndarray, mapsize: int) -> np.ndarray:
    """Diamond-square maps (n, M + 1, M + 1) in float64 with a wrapped extra row and column
    (p[:, M] = p[:, 0]); wibbles: (n, M^2 - 1) draws already turned into (-w + 2 w u) w.

    Each level's three point sets are the reference's sums in the reference's grouping: squares
    (c[i,j] + c[i+1,j]) + (c[i,j+1] + c[i+1,j+1]), diamonds ((centre + previous centre) +
    corner) + next corner.
    """
    m, n = mapsize, wibbles.shape[0]
    p = np.zeros((n, m + 1, m + 1))
    step, used = m, 0
    while step >= 2:
        half, k = step // 2, m // step
        count = k * k
        c = p[:, 0::step, 0::step]  # (k + 1) x (k + 1) corners, wrapped
        corners, right, below = c[:, :-1, :-1], c[:, :-1, 1:], c[:, 1:, :-1]
        centres = corners + below
        centres += c[:, 1:, 1:] + right
        centres /= 4
        centres += wibbles[:, used:used + count].reshape(n, k, k)
        used += count
        p[:, half::step, half::step] = centres
        for target, axis, third in ((p[:, 0:m:step, half::step], 1, right), (p[:, half::step, 0:m:step], 2, below)):
            total = np.empty_like(centres)  # centre + the previous centre along the axis (torus)
            rest, first = [slice(None)] * 3, [slice(None)] * 3
            rest[axis], first[axis] = slice(1, None), 0
            previous, last = [slice(None)] * 3, [slice(None)] * 3
            previous[axis], last[axis] = slice(None, -1), -1
            np.add(centres[tuple(rest)], centres[tuple(previous)], out=total[tuple(rest)])
            np.add(centres[tuple(first)], centres[tuple(last)], out=total[tuple(first)])
            total += corners
            total += third
            total /= 4
            total += wibbles[:, used:used + count].reshape(n, k, k)
            used += count
            target[...] = total
        p[:, m, :m] = p[:, 0, :m]
        p[:, :, m] = p[:, :, 0]
        step = half
    return p


def plasma_fractal(uniforms: torch.Tensor, mapsize: int, decay: float, crop: tuple[int, int] | None = None) -> torch.Tensor:
    """Section 3.3: diamond-square maps on a torus, normalised to [0, 1], float64 on the CPU.

    uniforms: (N, M^2 - 1) CPU values in [0, 1) consumed in the reference order (per level:
    squares, first diamond set, second diamond set, each n x n row-major). crop (H, W): return
    only the top-left H x W of each normalised map (the full map sets the minimum and maximum).
    The whole batch at once in NumPy (callers pass small batches of large maps), with the
    reference's float64 operations in its order.
    """
    a, b, c = _plasma_wibbles(mapsize, float(decay))
    wibbles = uniforms.to(torch.float64).numpy() * a  # (u * 2 w - w) * w, as the reference
    wibbles += b
    wibbles *= c
    h, w = crop or (mapsize, mapsize)
    p = _plasma_maps(wibbles, mapsize)
    low = p.min(axis=(1, 2), keepdims=True)
    out = p[:, :h, :w] - low
    out /= p.max(axis=(1, 2), keepdims=True) - low  # = max(p - low): rounding is monotonic
    return torch.from_numpy(out)


# ------------------------------------------------------------------------- HSV (3.5)


def add_value(x: torch.Tensor, c: float) -> torch.Tensor:
    """HSV V' = clip01(V + c), H and S kept (closed form of section 3.5); x is (N, 3, H, W)."""
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    scaled = x * (v_new / v.clamp_min(1e-30))
    return torch.where(v > 0, scaled, v_new.expand_as(x))


def set_saturation(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """HSV S' = clip01(a S + b), H and V kept (closed form of section 3.5); grey pixels have hue 0.

    Coloured pixels: v - s' v (v - x) / d with d = max - min; grey ones (d = 0): (v, v (1 - s'),
    v (1 - s')). Per-pixel factors first, then few full-size passes, in place.
    """
    v = x.amax(dim=1, keepdim=True)
    d = v - x.amin(dim=1, keepdim=True)
    grey = d == 0
    s_new = torch.where(grey, torch.zeros_like(d), d / v.clamp_min(1e-30)).mul_(a).add_(b).clamp_(0, 1)
    out = torch.sub(v, x).mul_(s_new * v).div_(d.clamp_min(1e-30))
    out = torch.sub(v, out, out=out)
    out[:, :1] = torch.where(grey, v, out[:, :1])
    out[:, 1:] = torch.where(grey, v * (1 - s_new), out[:, 1:])
    return out
