"""Blur corruptions: defocus, glass, motion, zoom and gaussian blur (spec 3.1, 4.4-4.7, 4.17).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale (truncated to uint8 by the caller).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import (
    OPENCV_FILTER_MIN_SIDE,
    WORK_DTYPE,
    border_index,
    clipped_zoom,
    gaussian_filter,
    gaussian_weights,
    lookup,
    motion_blur_u8,
    opencv,
    opencv_filter_applies,
    opencv_filter_levels,
)
from cema_cli.corruptions._random import per_sample, uniform


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.to(WORK_DTYPE) / 255.0


# ------------------------------------------------------------------------------ defocus


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """Section 3.1: normalised binary disk, anti-aliased with a small Gaussian, NOT renormalised.

    The anti-alias smoothing uses the reflect-101 border of the kernel grid, so disks that touch
    the grid edge (radius 8 and 10) gain mass: sums 1.01297 and 1.01079. Returns float64 (the
    reference stores float32; the difference is below 1e-7).
    """
    if radius <= 8:
        coords, window = np.arange(-8, 9), 3
    else:
        coords, window = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(coords, coords)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk = (disk / disk.sum()).astype(np.float64)
    t = np.arange(window) - window // 2
    g = np.exp(-(t * t) / (2.0 * alias_sigma**2))
    g /= g.sum()
    size = len(coords)
    smooth = np.zeros((size, size))
    index = border_index(np.arange(size)[:, None] + t[None, :], size, "mirror")  # (size, window)
    for k, weight in enumerate(g):  # columns, then rows (separable)
        smooth += weight * disk[:, index[:, k]]
    out = np.zeros_like(smooth)
    for k, weight in enumerate(g):
        out += weight * smooth[index[:, k], :]
    return out


def _support(kernel: np.ndarray) -> np.ndarray:
    """Crop all-zero outer rows/columns symmetrically: zero weights contribute nothing."""
    nonzero = np.argwhere(kernel != 0)
    centre = kernel.shape[0] // 2
    half = int(np.abs(nonzero - centre).max())
    return kernel[centre - half:centre + half + 1, centre - half:centre + half + 1]


def defocus_kernel_size(severity: int, constants: str) -> int:
    return _support(disk_kernel(*K.DEFOCUS_BLUR[constants][severity - 1])).shape[0]


def defocus_blur(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.4: per-channel correlation with the disk kernel, reflect-101 border, clip01."""
    kernel = _support(disk_kernel(*K.DEFOCUS_BLUR[constants][severity - 1]))
    if kernel.shape[0] <= 5:
        # Small kernels (CIFAR: 3x3 box, plus, tiny Gaussians) often give exact integer levels,
        # where float32 would flip the truncation; float64 is cheap there.
        return _correlate_torch(images.to(torch.float64) / 255.0, kernel).clamp_(0, 1) * 255.0
    if images.is_cuda:
        return _correlate_torch(_unit(images), kernel).clamp_(0, 1) * 255.0
    if kernel.size < DFT_MIN_TAPS:
        return _correlate_opencv(images, kernel)
    return _correlate_dft(images, kernel)


# Kernels with at least this many taps (15 x 15 and up) are correlated through a DFT, where
# OpenCV's float32 filter2D (the reference's) switches to its own DFT too.
DFT_MIN_TAPS = 130


def _correlate_torch(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Direct per-channel correlation (reflect-101 border), the device's conv2d."""
    half = kernel.shape[0] // 2
    weight = torch.from_numpy(kernel).to(x)[None, None].expand(3, 1, *kernel.shape)
    return F.conv2d(F.pad(x, (half, half, half, half), mode="reflect"), weight, groups=3)


def _correlate_opencv(images: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """The same correlation in float32 with OpenCV's direct filter2D (kernels under
    ``DFT_MIN_TAPS`` taps), plane by plane in one reused float32 buffer; returns uint8 (truncated)."""
    cv2 = opencv()
    weights = _float32_weights(kernel)
    planar = images.cpu().contiguous().numpy()
    out = np.empty(planar.shape, dtype=np.uint8)
    unit = np.empty(planar.shape[1:], dtype=np.float32)
    for image, target in zip(planar, out):
        np.divide(image, np.float32(255.0), out=unit, dtype=np.float32)
        for plane in unit:
            cv2.filter2D(plane, -1, weights, dst=plane, borderType=cv2.BORDER_REFLECT_101)
        np.clip(unit, 0, 1, out=unit)
        np.multiply(unit, np.float32(255.0), out=unit)
        target[...] = unit  # in [0, 255]: truncation, as the caller's conversion
    return torch.from_numpy(out).to(images.device)


def _correlate_dft(images: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """The same correlation in float32 through OpenCV's DFT (the reference's filter2D also
    switches to a DFT for kernels this large), with the kernel's spectrum computed once.

    Each plane is extended by the reflect-101 border to the DFT size, so the circular
    correlation's wrap-around never reaches the image's own outputs; plane by plane in reused
    float32 buffers. Returns uint8 (truncated, as the caller's conversion).
    """
    cv2 = opencv()
    n, c, h, w = images.shape
    half = kernel.shape[0] // 2
    rows, cols = cv2.getOptimalDFTSize(h + 2 * half), cv2.getOptimalDFTSize(w + 2 * half)
    spectrum = _kernel_spectrum(kernel.tobytes(), kernel.shape[0], rows, cols)
    inverse = cv2.DFT_INVERSE | cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT
    planar = images.cpu().contiguous().numpy()
    out = np.empty(planar.shape, dtype=np.uint8)
    unit = np.empty((h, w), dtype=np.float32)
    for image, target in zip(planar, out):
        for plane, channel in zip(image, target):
            np.divide(plane, np.float32(255.0), out=unit, dtype=np.float32)
            padded = cv2.copyMakeBorder(unit, half, rows - h - half, half, cols - w - half, cv2.BORDER_REFLECT_101)
            product = cv2.mulSpectrums(cv2.dft(padded), spectrum, 0, conjB=True)
            result = cv2.dft(product, flags=inverse)[half:half + h, half:half + w]
            np.clip(result, 0, 1, out=result)
            np.multiply(result, np.float32(255.0), out=result)
            channel[...] = result
    return torch.from_numpy(out).to(images.device)


def _float32_weights(kernel: np.ndarray) -> np.ndarray:
    """The kernel in float32. The sharpest disk's outer weights (about 1e-44) are float32
    subnormals, which make the arithmetic tens of times slower; they cannot move a sum of
    order 1, so they become 0."""
    weights = kernel.astype(np.float32)
    weights[np.abs(weights) < np.finfo(np.float32).tiny] = 0
    return weights


@lru_cache(maxsize=32)
def _kernel_spectrum(kernel_bytes: bytes, size: int, rows: int, cols: int) -> np.ndarray:
    """cv2.dft of the float32 kernel (size x size, float64 bytes) placed with its centre at the
    origin of a rows x cols grid (negative offsets wrap), for a correlation by conjugate product."""
    weights = _float32_weights(np.frombuffer(kernel_bytes, dtype=np.float64).reshape(size, size))
    offsets = np.arange(size) - size // 2
    grid = np.zeros((rows, cols), dtype=np.float32)
    grid[np.ix_(offsets % rows, offsets % cols)] = weights
    return opencv().dft(grid)


# -------------------------------------------------------------------------------- glass


def _glass_index(offsets: torch.Tensor, h: int, w: int, d: int) -> torch.Tensor:
    """Section 4.5's exact parallel form of the sequential pixel-copy loop, all passes composed.

    offsets: (N, passes, targets, 2) integer (dx, dy) per target in visiting order. Returns
    (N * h*w,) int32 indices into the flattened batch: for every pixel, the ORIGINAL pixel whose
    value it holds after the last pass (pass p reads pass p-1's result: index = index[source_p]).
    Within a pass, visiting order is descending raster order, so a target t whose source
    s = t + dy*w + dx has a larger flat index (dy > 0, or dy = 0 and dx > 0) links to s: if s is
    a target it was visited earlier and holds its final value; if s is never a target, linking
    changes nothing (s keeps its original value and links nowhere). Links are followed to the
    end r of each chain by pointer jumping; t then holds the original value of r's source.
    The targets are the window of rows and columns d+1..side-d, visited in reversed raster
    order, so the offsets (reversed) are added to the identity map on that window. A few
    buffers serve every pass (fresh memory costs page faults).
    """
    n, passes, count = offsets.shape[:3]
    device, size = offsets.device, n * h * w
    raster = offsets.flip(2)  # raster order of the target window
    deltas = raster[..., 1].to(torch.int32).mul_(w).add_(raster[..., 0])  # (N, passes, targets)
    source, index, spare, nxt, jumped = (torch.empty(size, dtype=torch.int32, device=device) for _ in range(5))

    def window(flat: torch.Tensor) -> torch.Tensor:
        return flat.view(n, h, w)[:, d + 1:h - d + 1, d + 1:w - d + 1]

    for p in range(passes):
        delta = deltas[:, p]
        torch.arange(size, dtype=torch.int32, device=device, out=source)  # non-targets keep their pixel
        window(source).add_(delta.view(n, h - 2 * d, w - 2 * d))
        result = source
        if d > 1:  # d = 1: every source lies up or left (delta <= 0): no links
            torch.arange(size, dtype=torch.int32, device=device, out=nxt)
            window(nxt).add_(delta.clamp_(min=0).view(n, h - 2 * d, w - 2 * d))  # links where delta > 0
            for _ in range(_GLASS_FULL_JUMPS):  # pointer jumping: each jump doubles the steps followed
                torch.index_select(nxt, 0, nxt, out=jumped)
                nxt, jumped = jumped, nxt
            # the rare pointers not yet at a chain end (chains longer than 2^jumps) jump on their own
            if not torch.equal(torch.index_select(nxt, 0, nxt, out=jumped), nxt):
                active = torch.nonzero(jumped != nxt).view(-1)
                while active.numel():
                    now = nxt[active]
                    ahead = nxt[now]
                    nxt[active] = ahead
                    active = active[ahead != now]
            result = torch.index_select(source, 0, nxt, out=jumped)
        if p == 0:
            index.copy_(result)
        else:
            torch.index_select(index, 0, result, out=spare)
            index, spare = spare, index
    return index


# Pointer jumps over all pointers before unfinished chains continue alone: 4 jumps follow 16
# links; then about one 224-px image in 100 (d = 4; fewer for smaller d) has a pointer left to move.
_GLASS_FULL_JUMPS = 4


def glass_min_side(severity: int, constants: str) -> int:
    return 2 * K.GLASS_BLUR[constants][severity - 1][1] + 1


def glass_blur(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.5: Gaussian blur, truncate to uint8, `passes` rounds of local pixel copying, blur.

    Offsets (dx, dy) are uniform in {-d, ..., d-1} (the reference's biased range), drawn per
    target in descending raster order, pass after pass. Loop bounds use the real H and W (equal
    to the reference's hard-coded S for nominal sizes).
    """
    sigma, d, passes = K.GLASS_BLUR[constants][severity - 1]
    n, c, h, w = images.shape
    count = (h - 2 * d) * (w - 2 * d)
    # int8 draws: the same values as int64 ones from the same generator, drawn faster
    offsets = per_sample(gens, lambda g: torch.randint(-d, d, (passes, count, 2), generator=g, dtype=torch.int8))
    offsets = offsets.to(images.device)
    weights = gaussian_weights(sigma)
    if not images.is_cuda and c == 3 and min(h, w) >= OPENCV_FILTER_MIN_SIDE and 1 < len(weights) <= min(h, w) // 4:
        return _glass_opencv(images, weights, offsets, d)
    index = _glass_index(offsets, h, w, d)
    u = torch.floor(255.0 * gaussian_filter(_unit(images), sigma))
    # one gather of every channel: pixel i of sample b reads plane (b, ch) at index[i] - b*h*w
    size = h * w
    shift = (size * (c - 1) * torch.arange(n, dtype=torch.int32, device=u.device)).view(n, 1, 1)
    planes = size * torch.arange(c, dtype=torch.int32, device=u.device).view(1, c, 1)
    u = lookup(u, index.view(n, 1, size) + shift + planes).view(n, c, h, w)
    return gaussian_filter(u / 255.0, sigma).clamp_(0, 1) * 255.0


def _glass_opencv(images: torch.Tensor, weights: tuple[float, ...], offsets: torch.Tensor, d: int) -> torch.Tensor:
    """glass_blur on CPU RGB images, one image at a time (its index maps fit in the cache), with
    :func:`gaussian_filter`'s float32 sepFilter2D (replicate border) on the interleaved image:
    u = floor(255 G(x / 255)) as uint8, one gather of whole pixels (packed as 32-bit RGBA words)
    by :func:`_glass_index`, then G(u / 255), clip01, scaled and truncated to uint8 (N, 3, H, W).
    """
    cv2 = opencv()
    n, c, h, w = images.shape
    kernel = np.asarray(weights, dtype=np.float32)
    planar = images.contiguous().numpy()
    out = np.empty_like(planar)
    for image, sample_offsets, target in zip(planar, offsets, out):
        x = np.divide(cv2.merge(list(image)), np.float32(255.0), dtype=np.float32)
        cv2.sepFilter2D(x, -1, kernel, kernel, dst=x, borderType=cv2.BORDER_REPLICATE)
        u = np.multiply(x, np.float32(255.0), out=x).astype(np.uint8)  # >= 0: truncation is floor
        words = torch.from_numpy(cv2.cvtColor(u, cv2.COLOR_RGB2RGBA)).view(torch.int32).view(-1)
        moved = words.index_select(0, _glass_index(sample_offsets[None], h, w, d)).view(torch.uint8).view(h, w, 4)
        y = np.divide(cv2.cvtColor(moved.numpy(), cv2.COLOR_RGBA2RGB), np.float32(255.0), dtype=np.float32)
        cv2.sepFilter2D(y, -1, kernel, kernel, dst=y, borderType=cv2.BORDER_REPLICATE)
        np.multiply(np.clip(y, 0.0, 1.0, out=y), np.float32(255.0), out=y)
        cv2.split(y.astype(np.uint8), list(target))  # astype truncates; split writes the planes
    return torch.from_numpy(out)


# ------------------------------------------------------------------------------- motion


def motion_blur(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.6: ImageMagick motion blur (3.4) at angle ~ U(-45, 45) degrees, 8-bit output."""
    radius, sigma = K.MOTION_BLUR[constants][severity - 1]
    theta = per_sample(gens, lambda g: uniform(g, (), -45.0, 45.0))
    out = torch.empty_like(images)
    return motion_blur_u8(images, radius, sigma, theta.to(images.device), out=out)


# --------------------------------------------------------------------------------- zoom


_ZOOM_LANES = 16  # channel padding: a multiple of every CPU's float vector width (AVX2 8, AVX-512 16)
# Planes resized together hold at most this many bytes: 48 float32 planes of 224 x 224, their
# zoom and the running sum stay within a server CPU's L3 cache; a 64-image batch in one piece
# (192 planes, 38 MB each) resizes ~4x slower per plane (measured at 224 px, one thread).
_ZOOM_GROUP_BYTES = 48 * 224 * 224 * 4


def zoom_blur(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.7: mean of the image and its clipped zooms (3.2) for the arange factor list.

    The batch's colour planes are resized together, up to ``_ZOOM_GROUP_BYTES`` at a time, as the
    channels of one channels-last image, which torch's bilinear resize vectorises across
    channels (several times faster than plane by plane). The planes are padded to a multiple of
    ``_ZOOM_LANES``, so every plane takes the vectorised path and a sample's result does not
    depend on its batch position.
    """
    factors = K.ZOOM_BLUR[constants][severity - 1]
    n, c, h, w = images.shape
    planes = n * c
    padded = -(-planes // _ZOOM_LANES) * _ZOOM_LANES
    flat = images.reshape(planes, h, w)
    group = max(1, _ZOOM_GROUP_BYTES // (h * w * 4 * _ZOOM_LANES)) * _ZOOM_LANES
    result = torch.empty((padded, h, w), dtype=WORK_DTYPE, device=images.device)
    for start in range(0, padded, group):
        lanes = min(group, padded - start)
        buffer = torch.zeros((1, h, w, lanes), dtype=WORK_DTYPE, device=images.device)
        buffer[0, :, :, :max(0, min(lanes, planes - start))] = flat[start:start + lanes].permute(1, 2, 0)
        x = buffer.div_(255.0).permute(0, 3, 1, 2)  # (1, lanes, H, W) in channels-last memory
        out = x.clone()  # 0 + x: the first factor is 1.0 (the identity)
        for factor in factors[1:] if factors[0] == 1.0 else factors:
            out += clipped_zoom(x, factor)
        result[start:start + lanes] = out.add_(x).div_(len(factors) + 1).clamp_(0, 1).mul_(255.0)[0]  # x + out: the same sum
    return result[:planes].reshape(n, c, h, w)


# ----------------------------------------------------------------------------- gaussian


def gaussian_blur(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.17: G_sigma (1.3: replicate border, truncate 4) per channel, clip01."""
    sigma = K.GAUSSIAN_BLUR[constants][severity - 1]
    weights = gaussian_weights(sigma)
    if len(weights) > 1 and opencv_filter_applies(images, len(weights)):
        return opencv_filter_levels(images, weights, "nearest")  # uint8, the same bytes, faster
    return gaussian_filter(_unit(images), sigma).clamp_(0, 1) * 255.0
