"""spatter (spec section 4.18): water droplets (severities 1-3) or mud blobs (4-5).

The water branch's mask goes through OpenCV operations in the reference (Canny, a 5x5 chamfer
distance transform, box filters, histogram equalisation, an emboss filter). Canny is OpenCV's
own; the others are ported to torch, batched, following OpenCV 4's integer and rounding rules
(OpenCV 5's distance transform sums float costs instead, so it is not called: the bytes would
depend on the OpenCV version); the test suite compares each step with OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


def _scan_row(cand: torch.Tensor, step: int, capped: int) -> torch.Tensor:
    """d[x] = min over x' on the scanned side of cand[x'] + step * |x - x'|, capped: the (0, -1)
    move of a raster pass (left to right), as one cumulative minimum over the row."""
    ramp = step * torch.arange(cand.shape[-1], dtype=cand.dtype, device=cand.device)
    return (torch.cummin(cand - ramp, dim=-1).values + ramp).clamp_max_(capped)


def _raster_pass(d: torch.Tensor, capped: int) -> None:
    """One forward raster pass of OpenCV's 5x5 chamfer mask, in place, over d (N, H + 4, W + 4)
    whose 2-pixel border holds ``capped``: each row takes the rows above (vectorised), then the
    left-to-right recurrence of the (0, -1) move."""
    w = d.shape[-1] - 4

    def above(dy: int, dx: int) -> torch.Tensor:
        return d[:, r - dy, 2 + dx:2 + dx + w]

    for r in range(2, d.shape[-2] - 2):
        cand = torch.minimum(d[:, r, 2:2 + w], above(1, 0) + _HV)
        cand = torch.minimum(cand, torch.minimum(above(1, -1), above(1, 1)) + _DIAG)
        knights = torch.minimum(torch.minimum(above(1, -2), above(1, 2)), torch.minimum(above(2, -1), above(2, 1)))
        cand = torch.minimum(cand, knights + _LONG)
        d[:, r, 2:2 + w] = _scan_row(cand, _HV, capped)


def chamfer_distance(edges: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """OpenCV distanceTransform(DIST_L2, 5) to the nearest edge pixel, truncated at ``cap``.

    OpenCV's 5x5 mask costs 1, 1.4, 2.1969 in 16.16 fixed point; its two raster passes
    (forward, then backward: the forward pass on the image rotated by 180 degrees) give the
    exact chamfer distance. Each row of a pass is vectorised over the batch and the row (the
    in-row recurrence is a cumulative minimum), in int64 (exact). Distances are clamped at the
    cap throughout (min(true distance, cap) is all that is used); pixels with no edge in reach
    get the cap, as OpenCV's huge value after truncation.
    """
    capped = int(cap * (1 << _DIST_SHIFT))
    n, _, h, w = edges.shape
    d = torch.full((n, h + 4, w + 4), capped, dtype=torch.int64, device=edges.device)
    d[:, 2:2 + h, 2:2 + w] = torch.where(edges[:, 0], 0, capped)
    _raster_pass(d, capped)
    d = d.flip(-2, -1)
    _raster_pass(d, capped)
    dist = d.flip(-2, -1)[:, None, 2:2 + h, 2:2 + w]
    return (dist.to(torch.float32) * (1.0 / (1 << _DIST_SHIFT))).clamp_max_(cap)


def box_mean3(x: torch.Tensor) -> torch.Tensor:
    """cv2.blur(x, (3, 3)): 3 x 3 sum (reflect-101 border) times 1/9, in float64."""
    p = F.pad(x.to(torch.float64), (1, 1, 1, 1), mode="reflect")
    total = sum(p[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]] for dy in range(3) for dx in range(3))
    return total * (1.0 / 9.0)


def equalize_hist(u8: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist per image of 8-bit values (N, 1, H, W), float32 LUT with round half even."""
    n = u8.shape[0]
    flat = u8.reshape(n, -1).to(torch.int64)
    total = flat.shape[1]
    hist = torch.zeros(n, 256, dtype=torch.int64, device=u8.device).scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).to(torch.int64).argmax(dim=1, keepdim=True)
    first_count = torch.gather(hist, 1, first)
    cumulative = hist.cumsum(dim=1) - first_count
    scale = torch.tensor(255.0, dtype=torch.float32, device=u8.device) / (total - first_count).clamp_min(1).to(torch.float32)
    lut = torch.round(cumulative.to(torch.float32) * scale).clamp_(0, 255)
    lut = torch.where(torch.arange(256, device=u8.device)[None, :] < first, torch.zeros_like(lut), lut)
    out = torch.gather(lut, 1, flat).reshape(u8.shape)
    constant = (first_count == total).reshape(n, 1, 1, 1)
    return torch.where(constant, u8.to(torch.float32), out)


_EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))


def emboss(u8: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D(u8, CV_8U, emboss): integer correlation (reflect-101), saturated to 0..255."""
    p = F.pad(u8.to(torch.float32), (1, 1, 1, 1), mode="reflect")
    h, w = u8.shape[-2:]
    out = sum(weight * p[..., dy:dy + h, dx:dx + w] for dy, row in enumerate(_EMBOSS) for dx, weight in enumerate(row) if weight)
    return out.clamp(0, 255)


def water_mask(liquid: torch.Tensor) -> torch.Tensor:
    """Section 4.18 water steps 4-11 up to M = Lq * E7 (before the max normalisation)."""
    lq = torch.remainder(torch.floor(255.0 * liquid.to(torch.float64)), 256)  # uint8 cast wraps
    edges = canny(lq)
    dist = chamfer_distance(edges)
    e4 = torch.floor(box_mean3(dist).to(torch.float32))
    e5 = equalize_hist(e4)
    e6 = emboss(e5)
    e7 = torch.round(box_mean3(e6)).to(torch.float32)  # uint8 blur rounds; sum/9 never ties
    return lq.to(torch.float32) * e7


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
    x = images.to(WORK_DTYPE) / 255.0
    if mud:
        blobs = gaussian_filter((liquid > threshold).to(WORK_DTYPE), strength)
        blobs = torch.where(blobs < 0.8, torch.zeros_like(blobs), blobs)
        colour = torch.tensor(MUD_RGB, dtype=WORK_DTYPE, device=x.device).view(1, 3, 1, 1) / 255.0
        return (x * (1 - blobs) + blobs * colour).clamp_(0, 1) * 255.0
    m = water_mask(liquid)
    peak = m.amax(dim=(1, 2, 3), keepdim=True)
    mn = torch.where(peak > 0, strength * m / peak.clamp_min(1e-30), torch.zeros_like(m))
    colour = torch.tensor(WATER_RGB, dtype=WORK_DTYPE, device=x.device).view(1, 3, 1, 1) / 255.0
    return (x + mn * colour).clamp_(0, 1) * 255.0
