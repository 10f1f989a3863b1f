"""spatter (spec section 4.18): water droplets (severities 1-3) or mud blobs (4-5).

The water branch's mask goes through OpenCV operations in the reference (Canny, a 5x5 chamfer
distance transform, box filters, histogram equalisation, an emboss filter), and cema calls the
same OpenCV functions, except the distance transform: it is ported to NumPy, batched, following
OpenCV 4's integer rules (OpenCV 5's sums float costs instead, so it is not called: the bytes
would depend on the OpenCV version); the test suite compares it with OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE, gaussian_filter, opencv

# Images per call at most this many pixels in all (16 at 224 px): a 64-image 224-px batch in one
# piece works on 38 MB tensors, beyond a server CPU's L3 cache, and ran ~15% slower per image.
_CHUNK_PIXELS = 16 * 224 * 224
WATER_RGB = (175.0, 238.0, 238.0)  # pale turquoise
MUD_RGB = (63.0, 42.0, 20.0)  # dark brown


# ---------------------------------------------------------------------- OpenCV-style ops


def canny(u8: torch.Tensor, low: float = 50, high: float = 150) -> torch.Tensor:
    """OpenCV's Canny (aperture 3, L1 gradient) of 8-bit levels (N, 1, H, W) -> bool edge map,
    the call the reference makes (an exact integer algorithm), one image at a time."""
    cv2 = opencv()
    levels = u8.to(torch.uint8).cpu().numpy()
    edges = np.stack([cv2.Canny(image[0], low, high) for image in levels])[:, None] > 0
    return torch.from_numpy(edges).to(u8.device)


_DIST_SHIFT = 16
_HV, _DIAG, _LONG = (round(c * (1 << _DIST_SHIFT)) for c in (1.0, 1.4, 2.1969))


def _row_pass(d: np.ndarray) -> None:
    """d[i] = min(d[i], d[i - 1] + 1 axial step) for i = 1, 2, ... in place (a 1-D chamfer pass
    along the first axis, vectorised over the others)."""
    step = np.empty_like(d[0])
    for i in range(1, d.shape[0]):
        np.add(d[i - 1], _HV, out=step)
        np.minimum(d[i], step, out=d[i])


def _down_pass(d: np.ndarray) -> None:
    """The moves of OpenCV's 5x5 mask that go down (dy > 0), rows top to bottom, in place, over
    d (H + 4, W + 4, N) whose 2-pixel border holds the cap. No move stays in its row, so each
    row is one vectorised update from the two rows above; the minimum of a row at columns
    x - 1 and x + 1 serves the diagonal moves of the next row and the knight moves of the one
    after. ``d`` is contiguous with the batch last, so every operand is a contiguous block."""
    w = d.shape[1] - 4
    near_before = np.minimum(d[1, 1:1 + w], d[1, 3:3 + w])
    near, step = np.empty_like(near_before), np.empty_like(near_before)
    for r in range(2, d.shape[0] - 2):
        up, row = d[r - 1], d[r, 2:2 + w]
        np.minimum(up[1:1 + w], up[3:3 + w], out=near)
        np.minimum(up[0:w], up[4:4 + w], out=step)
        np.minimum(step, near_before, out=step)
        step += _LONG
        np.minimum(row, step, out=row)
        np.add(near, _DIAG, out=step)
        np.minimum(row, step, out=row)
        np.add(up[2:2 + w], _HV, out=step)
        np.minimum(row, step, out=row)
        near, near_before = near_before, near


def chamfer_distance(edges: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """OpenCV 4's distanceTransform(DIST_L2, 5) to the nearest edge pixel, truncated at ``cap``.

    OpenCV's 5x5 mask costs 1, 1.4, 2.1969 in 16.16 fixed point; its two raster passes give
    the shortest paths over the mask's moves (exact, integer). A shortest path can be taken
    monotone (its moves sorted: the costs make a norm whose unit ball has the moves as its
    vertices), so it is its in-row steps on the edge's row followed by moves that all go down,
    or all go up. Hence: a horizontal pass (left to right, then right to left) over all rows
    at once, then a down pass and an up pass over it, each row one vectorised update (int32,
    exact; the test suite compares with a shortest-path relaxation). Values never exceed the
    cap, as in OpenCV after truncation (pixels with no edge within reach get the cap).
    """
    dist = _chamfer_numpy(edges[:, 0].cpu().numpy(), cap)
    return torch.from_numpy(dist)[:, None].to(edges.device)


def _chamfer_numpy(edges: np.ndarray, cap: float) -> np.ndarray:
    """chamfer_distance on a bool (N, H, W) array -> float32 (N, H, W)."""
    capped = int(cap * (1 << _DIST_SHIFT))
    n, h, w = edges.shape
    along = np.where(np.ascontiguousarray(edges.transpose(2, 1, 0)), np.int32(0), np.int32(capped))  # (W, H, N): one column per step
    _row_pass(along)
    _row_pass(along[::-1])
    d = np.full((h + 4, w + 4, n), capped, dtype=np.int32)
    d[2:2 + h, 2:2 + w] = along.transpose(1, 0, 2)
    down = d.copy()
    _down_pass(down)
    _down_pass(d[::-1])
    np.minimum(d, down, out=d)
    dist = d[2:2 + h, 2:2 + w].transpose(2, 0, 1).astype(np.float32, order="C")
    dist *= np.float32(1.0 / (1 << _DIST_SHIFT))
    return np.minimum(dist, np.float32(cap), out=dist)


_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)


def water_mask(liquid: torch.Tensor) -> torch.Tensor:
    """Section 4.18 water steps 4-11 up to M = Lq * E7 (before the max normalisation).

    The steps after the distance transform are the reference's own OpenCV calls (box blur,
    histogram equalisation, emboss filter, box blur), one image at a time.
    """
    cv2 = opencv()
    lq = (liquid[:, 0].cpu().numpy().astype(np.float64) * 255.0).astype(np.int32).astype(np.uint8)  # liquid >= 0: floor; the uint8 cast wraps
    dist = _chamfer_numpy(canny(torch.from_numpy(lq)[:, None])[:, 0].numpy(), 20.0)
    m = np.empty(dist.shape, dtype=np.float32)
    for d, level, out in zip(dist, lq, m):
        e4 = cv2.blur(d, (3, 3)).astype(np.uint8)
        e7 = cv2.blur(cv2.filter2D(cv2.equalizeHist(e4), cv2.CV_8U, _EMBOSS), (3, 3))
        np.multiply(level, e7, out=out, dtype=np.float32)  # both integer-valued, product < 2^16: exact
    return torch.from_numpy(m)[:, None].to(liquid.device)


# ------------------------------------------------------------------------------ spatter


def spatter(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.18. Draws per sample: the H x W normal liquid field (only).

    Guard (documented deviation): if a water mask is empty (max M = 0) the reference divides by
    zero and returns black; here that image is returned unchanged.
    """
    n, _, h, w = images.shape
    chunk = max(1, _CHUNK_PIXELS // (h * w))
    if n > chunk:  # samples are independent: the same bytes, a working set that stays in cache
        return torch.cat([spatter(images[i:i + chunk], severity, constants, gens[i:i + chunk]) for i in range(0, n, chunk)])
    mean, std, sigma, threshold, strength, mud = K.SPATTER[constants][severity - 1]
    field = torch.empty((n, 1, h, w), dtype=torch.float64)
    for g, row in zip(gens, field):
        torch.randn(row.shape, generator=g, dtype=torch.float64, out=row)
    liquid = gaussian_filter(field.mul_(std).add_(mean).to(device=images.device, dtype=WORK_DTYPE), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    x = images.to(WORK_DTYPE).div_(255.0)  # blended in place below, in the same order
    if mud:
        blobs = gaussian_filter((liquid > threshold).to(WORK_DTYPE), strength)
        blobs = torch.where(blobs < 0.8, torch.zeros_like(blobs), blobs)
        colour = torch.tensor(MUD_RGB, dtype=WORK_DTYPE, device=x.device).view(1, 3, 1, 1) / 255.0
        return x.mul_(1 - blobs).add_(blobs * colour).clamp_(0, 1).mul_(255.0).to(torch.uint8)  # truncates, as corrupt() would
    m = water_mask(liquid)
    peak = m.amax(dim=(1, 2, 3), keepdim=True)
    mn = m.mul_(strength).div_(peak.clamp_min(1e-30))  # m >= 0, so an empty mask (peak 0) stays 0: the guard
    colour = torch.tensor(WATER_RGB, dtype=WORK_DTYPE, device=x.device).view(1, 3, 1, 1) / 255.0
    return x.add_(mn * colour).clamp_(0, 1).mul_(255.0).to(torch.uint8)  # truncates, as corrupt() would
