"""spatter (spec section 4.18): water droplets (severities 1-3) or mud blobs (4-5).

The water branch's mask goes through OpenCV operations in the reference (Canny, a 5x5 chamfer
distance transform, box filters, histogram equalisation, an emboss filter), and cema calls the
same OpenCV functions, except the distance transform: it is ported to torch, batched, following
OpenCV 4's integer rules (OpenCV 5's sums float costs instead, so it is not called: the bytes
would depend on the OpenCV version); the test suite compares it with OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE, gaussian_filter, opencv

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


def _raster_pass(d: np.ndarray, capped: int) -> None:
    """One forward raster pass of OpenCV's 5x5 chamfer mask, in place, over d (N, H + 4, W + 4)
    whose 2-pixel border holds ``capped``: each row takes the rows above (vectorised), then the
    left-to-right recurrence of the (0, -1) move, d[x] = min over x' <= x of cand[x'] + (x - x')
    times its cost, as one cumulative minimum over the row. The minimum of a row at columns
    x - 1 and x + 1 serves the diagonal moves of the next row and the knight moves of the one
    after. NumPy: the rows are small, and its per-operation overhead is a fraction of torch's.
    """
    w = d.shape[-1] - 4
    ramp = _HV * np.arange(w, dtype=d.dtype)
    near_before = np.minimum(d[:, 0, 1:1 + w], d[:, 0, 3:3 + w])
    for r in range(2, d.shape[-2] - 2):
        up = d[:, r - 1]
        near = np.minimum(up[:, 1:1 + w], up[:, 3:3 + w])
        knights = np.minimum(up[:, 0:w], up[:, 4:4 + w])
        np.minimum(knights, near_before, out=knights)
        knights += _LONG
        cand = np.minimum(d[:, r, 2:2 + w], up[:, 2:2 + w] + _HV)
        np.minimum(cand, near + _DIAG, out=cand)
        np.minimum(cand, knights, out=cand)
        cand -= ramp
        np.minimum.accumulate(cand, axis=1, out=cand)
        cand += ramp
        np.minimum(cand, capped, out=d[:, r, 2:2 + w])
        near_before = near


def chamfer_distance(edges: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """OpenCV distanceTransform(DIST_L2, 5) to the nearest edge pixel, truncated at ``cap``.

    OpenCV's 5x5 mask costs 1, 1.4, 2.1969 in 16.16 fixed point; its two raster passes
    (forward, then backward: the forward pass on the image rotated by 180 degrees) give the
    exact chamfer distance. Each row of a pass is vectorised over the batch and the row (the
    in-row recurrence is a cumulative minimum), in int32 (exact). Distances are clamped at the
    cap throughout (min(true distance, cap) is all that is used); pixels with no edge in reach
    get the cap, as OpenCV's huge value after truncation.
    """
    capped = int(cap * (1 << _DIST_SHIFT))
    n, _, h, w = edges.shape
    d = np.full((n, h + 4, w + 4), capped, dtype=np.int32)
    d[:, 2:2 + h, 2:2 + w] = np.where(edges[:, 0].cpu().numpy(), 0, capped)
    _raster_pass(d, capped)
    d = np.ascontiguousarray(d[:, ::-1, ::-1])
    _raster_pass(d, capped)
    dist = torch.from_numpy(np.ascontiguousarray(d[:, None, ::-1, ::-1][..., 2:2 + h, 2:2 + w])).to(edges.device)
    return (dist.to(torch.float32) * (1.0 / (1 << _DIST_SHIFT))).clamp_max_(cap)


_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)


def water_mask(liquid: torch.Tensor) -> torch.Tensor:
    """Section 4.18 water steps 4-11 up to M = Lq * E7 (before the max normalisation).

    The steps after the distance transform are the reference's own OpenCV calls (box blur,
    histogram equalisation, emboss filter, box blur), one image at a time.
    """
    lq = torch.floor(255.0 * liquid.to(torch.float64)).to(torch.int32).bitwise_and_(255)  # liquid >= 0; uint8 cast wraps
    dist = chamfer_distance(canny(lq)).cpu().numpy()
    cv2 = opencv()
    e7 = np.empty(dist.shape, dtype=np.float32)
    for d, out in zip(dist, e7):
        e4 = cv2.blur(d[0], (3, 3)).astype(np.uint8)
        out[0] = cv2.blur(cv2.filter2D(cv2.equalizeHist(e4), cv2.CV_8U, _EMBOSS), (3, 3))
    return lq.to(torch.float32) * torch.from_numpy(e7).to(liquid.device)


# ------------------------------------------------------------------------------ spatter


def spatter(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.18. Draws per sample: the H x W normal liquid field (only).

    Guard (documented deviation): if a water mask is empty (max M = 0) the reference divides by
    zero and returns black; here that image is returned unchanged.
    """
    mean, std, sigma, threshold, strength, mud = K.SPATTER[constants][severity - 1]
    h, w = images.shape[-2:]
    field = torch.stack([torch.randn((1, h, w), generator=g, dtype=torch.float64) for g in gens])
    liquid = gaussian_filter((mean + std * field).to(device=images.device, dtype=WORK_DTYPE), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    x = images.to(WORK_DTYPE).div_(255.0)  # blended in place below, in the same order
    if mud:
        blobs = gaussian_filter((liquid > threshold).to(WORK_DTYPE), strength)
        blobs = torch.where(blobs < 0.8, torch.zeros_like(blobs), blobs)
        colour = torch.tensor(MUD_RGB, dtype=WORK_DTYPE, device=x.device).view(1, 3, 1, 1) / 255.0
        return x.mul_(1 - blobs).add_(blobs * colour).clamp_(0, 1).mul_(255.0)
    m = water_mask(liquid)
    peak = m.amax(dim=(1, 2, 3), keepdim=True)
    mn = torch.where(peak > 0, strength * m / peak.clamp_min(1e-30), torch.zeros_like(m))
    colour = torch.tensor(WATER_RGB, dtype=WORK_DTYPE, device=x.device).view(1, 3, 1, 1) / 255.0
    return x.add_(mn * colour).clamp_(0, 1).mul_(255.0)
