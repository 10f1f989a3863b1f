"""spatter (spec section 4.18): water droplets (severities 1-3) or mud blobs (4-5).

The water branch's mask goes through OpenCV operations in the reference (Canny, a 5x5 chamfer
distance transform, box filters, histogram equalisation, an emboss filter). They are ported to
torch here, batched and device-agnostic, following OpenCV's integer and rounding rules; the
test suite compares each step with OpenCV when it is installed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE, gaussian_filter

WATER_RGB = (175.0, 238.0, 238.0)  # pale turquoise
MUD_RGB = (63.0, 42.0, 20.0)  # dark brown


# ---------------------------------------------------------------------- OpenCV-style ops


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[y, x] = in[y + dy, x + dx] on a tensor already padded by at least |dy|, |dx|."""
    h, w = x.shape[-2], x.shape[-1]
    p = 2
    return x[..., p + dy:h - p + dy, p + dx:w - p + dx]


def canny(u8: torch.Tensor, low: float = 50, high: float = 150) -> torch.Tensor:
    """OpenCV Canny (aperture 3, L1 gradient) of 8-bit values (N, 1, H, W) -> bool edge map.

    Sobel with replicate border; magnitude |gx| + |gy|; non-maximum suppression in four
    direction bins with OpenCV's fixed-point tan(22.5) test (magnitudes outside the image
    count as 0); candidates above floor(low), seeds above floor(high); hysteresis keeps the
    candidates 8-connected to a seed.
    """
    v = u8.to(torch.float32)
    p = F.pad(v, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., :-2, 2:] + 2 * p[..., 1:-1, 2:] + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * p[..., 1:-1, :-2] + p[..., 2:, :-2])
    gy = (p[..., 2:, :-2] + 2 * p[..., 2:, 1:-1] + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * p[..., :-2, 1:-1] + p[..., :-2, 2:])
    gx, gy = gx.to(torch.int64), gy.to(torch.int64)
    mag = gx.abs() + gy.abs()
    m = F.pad(mag, (2, 2, 2, 2))  # zero magnitude outside the image

    def at(dy: int, dx: int) -> torch.Tensor:
        return _shift(m, dy, dx)

    tg22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
    ax = gx.abs()
    ay = gy.abs() << 15
    tg22x = ax * tg22
    tg67x = tg22x + (ax << 16)
    horizontal = ay < tg22x
    vertical = ay > tg67x
    s = torch.where((gx ^ gy) < 0, -1, 1)
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    # Diagonal: compare with (y-1, x-s) and (y+1, x+s).
    keep_d = torch.where(
        s < 0,
        (mag > at(-1, 1)) & (mag > at(1, -1)),
        (mag > at(-1, -1)) & (mag > at(1, 1)),
    )
    local_max = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    candidate = (mag > int(low)) & local_max
    edges = candidate & (mag > int(high))
    while True:  # hysteresis: grow seeds through 8-connected candidates
        grown = candidate & (F.max_pool2d(edges.to(torch.float32), 3, 1, 1) > 0)
        if torch.equal(grown, edges):
            return edges
        edges = grown


_DIST_SHIFT = 16
_HV, _DIAG, _LONG = (round(c * (1 << _DIST_SHIFT)) for c in (1.0, 1.4, 2.1969))


def _shifted_min(x: torch.Tensor, step: int, dim: int) -> torch.Tensor:
    """min(x[p - step], x[p + step]) along ``dim`` (-1 or -2); +inf beyond the border (no path there)."""
    pad = (step, step, 0, 0) if dim == -1 else (0, 0, step, step)
    p = F.pad(x, pad, value=float("inf"))
    n = x.shape[dim]
    return torch.minimum(p.narrow(dim, 0, n), p.narrow(dim, 2 * step, n))


def _min3(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Minimum over the centred triple along ``dim``."""
    return torch.minimum(x, _shifted_min(x, 1, dim))


def chamfer_distance(edges: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """OpenCV distanceTransform(DIST_L2, 5) to the nearest edge pixel, truncated at ``cap``.

    OpenCV's 5x5 mask costs 1, 1.4, 2.1969 in 16.16 fixed point; its two raster passes give the
    exact shortest-path distance, reproduced here by min-plus relaxation until nothing changes.
    Distances are clamped at the cap throughout (min(true distance, cap) is all that is used),
    so it converges in about cap / 2 rounds; pixels with no edge in reach get the cap, as
    OpenCV's huge value after truncation.

    Each round takes the minimum over move groups with separable min-filters, on float32 (the fixed-point
    integers stay below 2^24, so they are exact). A group's window also covers a few cells
    whose true cost is lower than the group's (the centre, the 4-neighbours in the 3x3 diagonal
    window, (0, +-2) and (+-2, 0) among the knight moves): a detour never beats a path that
    exists inside the image, so the shortest paths, and the result, are the same.
    """
    capped = float(int(cap * (1 << _DIST_SHIFT)))  # a path through a capped pixel costs more than the cap
    dist = torch.where(edges, 0.0, capped).to(torch.float32)
    while True:
        rows3 = _min3(dist, -2)  # vertical triples
        cols3 = _min3(dist, -1)
        best = torch.minimum(dist, torch.minimum(rows3, cols3) + _HV)
        best = torch.minimum(best, _min3(rows3, -1) + _DIAG)
        knights = torch.minimum(_shifted_min(rows3, 2, -1), _shifted_min(cols3, 2, -2))
        best = torch.minimum(best, knights + _LONG).clamp_max_(capped)
        if torch.equal(best, dist):
            break
        dist = best
    return (dist * (1.0 / (1 << _DIST_SHIFT))).clamp_max_(cap)


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
