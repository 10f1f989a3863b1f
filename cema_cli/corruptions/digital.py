"""Digital corruptions: brightness, contrast, elastic, pixelate, jpeg, saturate (spec 4.11-4.15, 4.19).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale or uint8 (truncated to uint8 by
the caller).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import (
    OPENCV_FILTER_MIN_SIDE,
    WORK_DTYPE,
    add_value,
    filter_matrix,
    in_chunks,
    gaussian_filter,
    gaussian_weights,
    lookup,
    opencv,
    set_saturation,
)
from cema_cli.corruptions._random import uniform


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.to(WORK_DTYPE) / 255.0


def _unit64(images: torch.Tensor) -> torch.Tensor:
    """float64 for the cheap pointwise colour formulas: their results often land exactly on
    integer levels, where float32 rounding would flip the truncated value much more often."""
    return images.to(torch.float64) / 255.0


def brightness(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.11: HSV value V' = clip01(V + c) (closed form of 3.5), clip01.

    A channel's result depends only on its own level and the pixel's V = max(R, G, B), so the
    float64 formula is evaluated once for every (V, level) pair and looked up: the same
    operations on the same values, so the same bytes as evaluating every pixel.
    """
    c = K.BRIGHTNESS[constants][severity - 1]
    table = _brightness_table(float(c)).to(images.device)

    def brightness_chunk(chunk: torch.Tensor, _: list[torch.Generator]) -> torch.Tensor:
        value = chunk.amax(dim=1, keepdim=True).to(torch.int32).mul_(256)
        return lookup(table, chunk.to(torch.int32).add_(value))

    return in_chunks(images, gens, brightness_chunk)


@lru_cache(maxsize=16)
def _brightness_table(c: float) -> torch.Tensor:
    """uint8 brightness result for every (V, level) pair with level <= V, flat as V * 256 + level."""
    levels = torch.arange(256, dtype=torch.uint8)
    value, level = torch.meshgrid(levels, levels, indexing="ij")
    pixels = torch.stack([value, level, torch.zeros_like(level)])[None]  # (1, 3, 256, 256): max is V when level <= V
    return (add_value(_unit64(pixels), c).clamp_(0, 1) * 255.0)[0, 1].to(torch.uint8).flatten()


def saturate(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.19: HSV saturation S' = clip01(a S + b) (closed form of 3.5); neutral pixels
    have hue 0, so b > 0 tints them red, as in the reference."""
    a, b = K.SATURATE[constants][severity - 1]
    if images.numel() < SATURATE_TABLE_MIN_VALUES:
        return set_saturation(images.to(torch.float64).div_(255.0), a, b).clamp_(0, 1).mul_(255.0)
    return saturate_by_table(images, a, b)


# Batches with at least this many values look saturate up in a table of every (max, min, level)
# triple (same bytes; building it takes about half a second once per severity).
SATURATE_TABLE_MIN_VALUES = 2_000_000


def saturate_by_table(images: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Section 4.19 through :func:`_saturate_tables`: uint8 results, the bytes of the formula."""
    table, start = (t.to(images.device) for t in _saturate_tables(float(a), float(b)))
    return in_chunks(images, [], lambda chunk, _: _saturate_lookup(chunk, table, start))


def _saturate_lookup(images: torch.Tensor, table: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    high = images.amax(dim=1, keepdim=True).to(torch.int32)
    low = images.amin(dim=1, keepdim=True).to(torch.int32)
    channel = torch.arange(3, dtype=torch.int32, device=images.device).view(1, 3, 1, 1)
    grey = channel * (high == low)  # grey pixels: entry c of their block is channel c
    base = lookup(start, high.mul_(256).add_(low)).sub_(low)  # block start of (V, MN), minus MN
    return lookup(table, images.to(torch.int32).add_(base).add_(grey))


@lru_cache(maxsize=10)
def _saturate_tables(a: float, b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 saturate results for every (V, MN, level) with MN <= level <= V, V = max(R, G, B),
    MN = min(R, G, B): a channel's result depends on these three levels only, except for grey
    pixels (V = MN), whose three channels differ. Block (V, MN) starts at start[V * 256 + MN]:
    V - MN + 1 entries (level - MN) for V > MN, three (one per channel) for V = MN. Computed
    with set_saturation on synthetic pixels (V, level, MN) and (V, V, V): the same float64
    operations, so the same bytes as evaluating every pixel.
    """
    high, low = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    valid = low <= high
    sizes = torch.where(high == low, 3, high - low + 1) * valid
    start = (torch.cumsum(sizes.flatten(), 0) - sizes.flatten()).to(torch.int32)
    pair_high, pair_low, pair_size = high[valid], low[valid], sizes[valid]
    owner = torch.repeat_interleave(torch.arange(pair_high.numel()), pair_size)
    rank = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(pair_size, 0) - pair_size, pair_size)
    v, mn = pair_high[owner], pair_low[owner]
    coloured = v > mn
    level = torch.where(coloured, mn + rank, v)
    pixels = torch.stack([v, level, mn]).to(torch.float64).div_(255.0)[None, :, :, None]  # (1, 3, E, 1)
    out = (set_saturation(pixels, a, b).clamp_(0, 1).mul_(255.0)).to(torch.uint8)[0, :, :, 0]  # (3, E)
    channel = torch.where(coloured, 1, rank)  # grey blocks: entry c is channel c
    return out.gather(0, channel[None])[0], start


def contrast(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.12: clip01((x - mu) * c + mu) with one mean per image and channel.

    The formula is evaluated once per level for each (image, channel) and looked up: the same
    float64 operations on the same values, so the same bytes as evaluating every pixel. In
    chunks (in_chunks).
    """
    c = K.CONTRAST[constants][severity - 1]

    def contrast_chunk(chunk: torch.Tensor, _: list[torch.Generator]) -> torch.Tensor:
        mu = chunk.to(torch.float64).div_(255.0).mean(dim=(2, 3), keepdim=True)[..., 0]  # (N, 3, 1)
        n = chunk.shape[0]
        rows = 256 * torch.arange(3 * n, dtype=torch.int32, device=chunk.device).view(n, 3, 1, 1)
        return lookup(_contrast_table(mu, c, chunk.device), chunk.to(torch.int32).add_(rows))

    return in_chunks(images, gens, contrast_chunk)


def _contrast_table(mu: torch.Tensor, c: float, device: torch.device) -> torch.Tensor:
    """uint8 clip01((L / 255 - mu) * c + mu) * 255 for every level L (float64), per mean in mu (..., 1)."""
    levels = _unit64(torch.arange(256, dtype=torch.uint8, device=device))
    return ((levels - mu) * c + mu).clamp_(0, 1).mul_(255.0).to(torch.uint8)


# ------------------------------------------------------------------------------ elastic


def _affine_inverse(jitter: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 2, 3) inverse of the affine map A with A(P_k) = P_k + jitter_k (section 4.13 step 2).

    Source points (x, y): (cx+q, cy+q), (cx+q, cy-q), (cx-q, cy-q) with cx = floor(W / 2),
    cy = floor(H / 2) and q = floor(min side / 3): centred on the image. (The reference reads
    shape[:2] = (H, W) as (x, y), which is the same point only when H = W.)
    """
    cy, cx, q = h // 2, w // 2, min(h, w) // 3
    src = torch.tensor([[cx + q, cy + q], [cx + q, cy - q], [cx - q, cy - q]], dtype=torch.float64)
    dst = src[None] + jitter.to(torch.float64)  # (N, 3, 2)
    ones = torch.ones(jitter.shape[0], 3, 1, dtype=torch.float64)
    # Solve [dst_k, 1] @ B = src_k for B (3 x 2): the inverse map, dst -> src.
    inverse = torch.linalg.solve(torch.cat([dst, ones], dim=2), src[None].expand_as(dst))
    return inverse.transpose(1, 2)  # (N, 2, 3): [x_src, y_src] = B^T [x, y, 1]


def elastic_transform(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.13: random affine warp (reflect-101 border), then a smooth random displacement
    (Gaussian truncate 3, half-sample symmetric border extended periodically), bilinear both.

    Draws per sample: 6 jitters U(-a, a) (float32, order P1.x, P1.y, P2.x, ...), the Ux field
    U(-1, 1), the Uy field U(-1, 1). CPU images of at least ``OPENCV_FILTER_MIN_SIDE`` px go
    through :func:`_elastic_opencv` (float32, the same formulas) when OpenCV samples exactly.
    """
    alpha, sigma, a = K.ELASTIC[constants][severity - 1]
    n, _, h, w = images.shape
    device = images.device
    use_opencv = not images.is_cuda and min(h, w) >= OPENCV_FILTER_MIN_SIDE and _opencv_samples_exactly()
    jitters = torch.empty((n, 3, 2), dtype=torch.float32)
    fields = torch.empty((n, 2, h, w), dtype=torch.float32 if use_opencv else torch.float64)
    draws = torch.empty((2, h, w), dtype=torch.float64) if use_opencv else None  # one sample's, then float32
    for g, jitter, field in zip(gens, jitters, fields):
        jitter.copy_(uniform(g, (3, 2), -a, a))
        if draws is None:
            torch.rand(field.shape, generator=g, dtype=torch.float64, out=field)
        else:
            field.copy_(torch.rand(draws.shape, generator=g, dtype=torch.float64, out=draws))
    fields.mul_(2.0).add_(-1.0)  # U(-1, 1) as -1 + 2 U[0, 1), the same values as uniform() (float32: rounded)
    if use_opencv:
        return _elastic_opencv(images, alpha, sigma, _affine_inverse(jitters, h, w), fields)
    x = _unit(images)
    # Step 3: x1(p) = x(A^-1 p), sampled on pixel centres with the reflect-101 border.
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # (H, W, 3)
    src = torch.einsum("hwk,nck->nhwc", points, _affine_inverse(jitters, h, w))  # (N, H, W, 2) as (x, y)
    sides = torch.tensor([w, h], dtype=torch.float64)
    grid = src.mul_(2.0).div_(sides - 1).sub_(1.0).to(device=device, dtype=x.dtype).contiguous()  # einsum's layout is slow to sample
    x1 = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    # Steps 4-5: smooth displacement fields; half-sample symmetric border, normalised accordingly.
    disp = gaussian_filter(fields.to(device), sigma, truncate=3.0, border="reflect").mul_(alpha)
    coords = disp.permute(0, 2, 3, 1).add(torch.stack([xs, ys], dim=-1).to(device))  # (N, H, W, 2): col, row
    grid = coords.mul_(2.0).add_(1.0).div_(sides.to(device)).sub_(1.0).to(x.dtype)
    out = F.grid_sample(x1, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp_(0, 1) * 255.0


@lru_cache(maxsize=1)
def _opencv_samples_exactly() -> bool:
    """OpenCV 5 interpolates at the exact float position; 4.x rounds it to 1/32 px (spec 4.13)."""
    return int(opencv().__version__.split(".")[0]) >= 5


def _elastic_opencv(images: torch.Tensor, alpha: float, sigma: float, inverse: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """Section 4.13 steps 3-5 in float32 with OpenCV, per image: warpAffine (bilinear at the
    inverse-mapped position, reflect-101) and remap (bilinear at (col + dx, row + dy),
    BORDER_REFLECT = half-sample symmetric) compute grid_sample's formulas. The fields are
    smoothed in float32 (:func:`gaussian_filter`'s kernels) with alpha folded into the column
    pass. Returns uint8 (N, 3, H, W), truncated like the caller would.
    """
    cv2 = opencv()
    n, c, h, w = images.shape
    disp = _displacement_float32(fields, sigma, alpha)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    planar = images.contiguous().numpy()
    out = np.empty_like(planar)
    warp = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for image, b, (dx, dy), target in zip(planar, inverse.numpy(), disp.numpy(), out):
        x = np.divide(cv2.merge(list(image)), np.float32(255.0), dtype=np.float32)
        x1 = cv2.warpAffine(x, b, (w, h), flags=warp, borderMode=cv2.BORDER_REFLECT_101)
        np.add(dx, xs, out=dx)
        np.add(dy, ys, out=dy)
        y = cv2.remap(x1, dx, dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        np.multiply(np.clip(y, 0.0, 1.0, out=y), np.float32(255.0), out=y)
        cv2.split(y.astype(np.uint8), list(target))  # astype truncates; split writes the planes
    return torch.from_numpy(out)


def _displacement_float32(fields: torch.Tensor, sigma: float, alpha: float) -> torch.Tensor:
    """alpha * G(field) for float32 CPU fields (N, 2, H, W), section 4.13 step 4 (truncate 3,
    half-sample symmetric border): sepFilter2D for kernels of at most side / 4 taps, else the
    dense border-folded matrices (which cover radii wider than the image), alpha folded into
    the column weights."""
    weights = gaussian_weights(sigma, truncate=3.0)
    h, w = fields.shape[-2:]
    if len(weights) == 1:
        return fields.mul_(alpha)
    if len(weights) <= min(h, w) // 4:
        cv2 = opencv()
        rows = np.asarray(weights, dtype=np.float32)
        cols = (np.asarray(weights) * alpha).astype(np.float32)
        for plane in fields.view(-1, h, w).numpy():
            cv2.sepFilter2D(plane, -1, cols, rows, dst=plane, borderType=cv2.BORDER_REFLECT)  # in place
        return fields
    mh = filter_matrix(h, weights, "reflect", fields)
    cols = fields.view(-1, w) @ _scaled_filter_matrix(w, weights, alpha)
    for plane, col in zip(fields.view(-1, h, w), cols.view(-1, h, w)):
        torch.mm(mh, col, out=plane)  # back into the fields' buffer: fewer fresh pages to fault in
    return fields


@lru_cache(maxsize=16)
def _scaled_filter_matrix(n: int, weights: tuple[float, ...], alpha: float) -> torch.Tensor:
    """float32 (alpha * M).T for the half-sample symmetric border (right factor of the column pass)."""
    return (filter_matrix(n, weights, "reflect", torch.empty(0, dtype=torch.float64)) * alpha).T.to(torch.float32).contiguous()


# ----------------------------------------------------------------------------- pixelate


# Pillow resizes at most this many bytes of images per call: 32-px images go 64 to a call (the
# per-call overhead dominates them), 224-px images one at a time (a taller stack leaves the
# cache and ran ~10% slower per image than single calls).
_PIXELATE_CALL_BYTES = 256 * 1024


def pixelate(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.14: Pillow BOX resize down to int(side * factor), then back up, per image.

    Down: Pillow itself, one axis per call. Section 3.6: BOX is separable with uint8 rounding
    between its passes, the horizontal pass first, and Pillow skips the pass of an axis whose
    size does not change, so a group of images takes two calls (stacked vertically, shrunk in
    width; side by side, shrunk in height): the bytes of the reference's one call per image
    without its overhead. (Recent Pillow runs the vertical pass first in a single call on images
    much taller than wide; the two calls keep the spec's order at every shape.) Up: BOX copies
    one sample per output pixel (section 3.6), so Pillow's index map is taken once per size pair
    and applied as a gather (OpenCV's INTER_NEAREST_EXACT where its map is the same: faster).
    """
    factor = K.PIXELATE[constants][severity - 1]
    n, c, h, w = images.shape
    small_size = (int(w * factor), int(h * factor))
    planar = images.cpu().contiguous().numpy()
    out = np.empty_like(planar)
    group = max(1, _PIXELATE_CALL_BYTES // planar[0].nbytes)  # small working buffers: no fresh batch-sized ones
    for start in range(0, n, group):
        _pixelate_group(planar[start:start + group], out[start:start + group], small_size)
    return torch.from_numpy(out).to(images.device)


def _pixelate_group(planar: np.ndarray, out: np.ndarray, size: tuple[int, int]) -> None:
    """pixelate a few uint8 (N, C, H, W) images into ``out``: interleaved for Pillow (OpenCV's
    merge is the fast transpose), shrunk, enlarged and split back into planes."""
    cv2 = opencv()
    interleaved = np.stack([cv2.merge(list(image)) for image in planar])
    for image, target in zip(_box_shrink(interleaved, size), out):
        cv2.split(_box_enlarge(image, target.shape[1:]), list(target))


def _box_shrink(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's BOX resize of each interleaved uint8 image (N, H, W, C) to ``size`` (W', H'),
    horizontal pass first (section 3.6)."""
    n, h, w, c = images.shape
    (small_w, small_h) = size
    if n == 1:  # Pillow to Pillow: no array round trip between the passes
        return np.asarray(Image.fromarray(images[0]).resize((small_w, h), Image.BOX).resize(size, Image.BOX))[None]
    narrow = np.asarray(Image.fromarray(images.reshape(n * h, w, c)).resize((small_w, n * h), Image.BOX))
    side_by_side = np.ascontiguousarray(narrow.reshape(n, h, small_w, c).transpose(1, 0, 2, 3)).reshape(h, n * small_w, c)
    small = np.asarray(Image.fromarray(side_by_side).resize((n * small_w, small_h), Image.BOX))
    return small.reshape(small_h, n, small_w, c).transpose(1, 0, 2, 3)


def _box_enlarge(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pillow's BOX resize of one interleaved uint8 image (h, w, C) up to ``shape`` (H, W)."""
    (h, w), (small_h, small_w) = shape, image.shape[:2]
    if _opencv_nearest_agrees(small_h, h) and _opencv_nearest_agrees(small_w, w):
        return opencv().resize(np.ascontiguousarray(image), (w, h), interpolation=opencv().INTER_NEAREST_EXACT)
    rows, cols = _box_upsample_index(small_h, h), _box_upsample_index(small_w, w)
    return image[rows][:, cols]


@lru_cache(maxsize=64)
def _box_upsample_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of n_out samples that Pillow's BOX resize up from n_in copies, read
    off Pillow's own resize of an index ramp (float mode: exact). The sample it copies is
    floor((k + 0.5) n_in / n_out) as Pillow rounds that product in double; OpenCV's
    INTER_NEAREST_EXACT rounds it differently where it is a whole number (e.g. 54 -> 57)."""
    ramp = Image.fromarray(np.arange(n_in, dtype=np.float32)[None, :])  # mode F
    index = np.asarray(ramp.resize((n_out, 1), Image.BOX))[0]
    if not np.array_equal(index, np.floor(index)):  # never seen: would mean BOX up-sampling averages
        raise RuntimeError(f"Pillow BOX resize {n_in} -> {n_out} is not a copy of single samples")
    return index.astype(np.intp)


@lru_cache(maxsize=64)
def _opencv_nearest_agrees(n_in: int, n_out: int) -> bool:
    """Does OpenCV's INTER_NEAREST_EXACT copy the same samples as Pillow's BOX for this pair?"""
    cv2 = opencv()
    ramp = np.arange(n_in, dtype=np.float32)[None, :]
    index = cv2.resize(ramp, (n_out, 1), interpolation=cv2.INTER_NEAREST_EXACT)[0]
    return bool(np.array_equal(index, _box_upsample_index(n_in, n_out)))


def pixelate_min_side(severity: int, constants: str) -> int:
    factor = K.PIXELATE[constants][severity - 1]
    return int(np.ceil(1 / factor))


# --------------------------------------------------------------------------------- jpeg


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Section 3.7: JPEG encode (quality q, 4:2:0, standard tables) and decode, per image.

    images: uint8 (N, 3, H, W) on any device; returns uint8 on the same device. libjpeg(-turbo)
    through OpenCV: the same codec settings as Pillow's ``save(..., "JPEG", quality=q)`` and the
    same decoded pixels (the fidelity tests compare with Pillow), with less per-image overhead.
    OpenCV merges the planes into its interleaved BGR order and splits the result back.
    """
    if images.dtype != torch.uint8:
        raise TypeError("jpeg_roundtrip needs uint8 images")
    cv2 = opencv()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    planar = images.cpu().contiguous().numpy()
    out = np.empty_like(planar)
    for image, target in zip(planar, out):
        decoded = cv2.imdecode(cv2.imencode(".jpg", cv2.merge(image[::-1]), params)[1], cv2.IMREAD_COLOR)
        for plane, channel in zip(cv2.split(decoded), (2, 1, 0)):
            target[channel] = plane
    return torch.from_numpy(out).to(images.device)


def jpeg_compression(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.15: a JPEG round trip (3.7) at the severity's quality (CPU; uint8 result)."""
    return jpeg_roundtrip(images, K.JPEG[constants][severity - 1])
