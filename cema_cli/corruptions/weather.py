"""Weather corruptions: snow and fog (spec sections 4.8 and 4.10; frost lives in frost.py).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale (truncated to uint8 by the caller).
"""

from __future__ import annotations

import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import WORK_DTYPE, clipped_zoom, motion_blur_u8, plasma_draw_count, plasma_fractal
from cema_cli.corruptions._random import per_sample, uniform


def snow(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.8: zoomed, thresholded normal "flake" layer, truncated to 8 bit, motion-blurred
    downwards (angle ~ U(-135, -45)), added twice (itself and rotated 180 degrees) to a whitened
    scene. Draws per sample: the H x W normal field, then the angle.
    """
    mean, std, zoom, threshold, radius, sigma, blend = K.SNOW[constants][severity - 1]
    h, w = images.shape[-2:]
    fields, angles = [], []
    for g in gens:
        fields.append(torch.randn((1, h, w), generator=g, dtype=WORK_DTYPE))
        angles.append(uniform(g, (), -135.0, -45.0))
    layer = mean + std * torch.stack(fields).to(images.device)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(255.0 * layer.clamp(0, 1))
    flakes = motion_blur_u8(layer, radius, sigma, torch.stack(angles).to(images.device)) / 255.0
    x = images.to(WORK_DTYPE).div_(255.0)
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    whitened = torch.maximum(x, grey * 1.5 + 0.5).mul_(1 - blend)
    x.mul_(blend).add_(whitened)  # blend x + (1 - blend) max(x, 1.5 grey + 0.5), in place
    return x.add_(flakes).add_(torch.rot90(flakes, 2, dims=(-2, -1))).clamp_(0, 1).mul_(255.0)


def fog_mapsize(h: int, w: int) -> int:
    """Plasma map side: the next power of two >= the image side (256 at 224 px, 32 at 32 px)."""
    side = 1
    while side < max(h, w):
        side *= 2
    return max(side, 2)


def fog(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.10: grey plasma fog (3.3) cropped top-left, rescaled to keep the image maximum."""
    c, decay = K.FOG[constants][severity - 1]
    h, w = images.shape[-2:]
    mapsize = fog_mapsize(h, w)
    draws = plasma_draw_count(mapsize)
    uniforms = torch.empty((len(gens), draws), dtype=torch.float64)
    for g, row in zip(gens, uniforms):
        torch.rand(draws, generator=g, dtype=torch.float64, out=row)
    plasma = plasma_fractal(uniforms, mapsize, decay, crop=(h, w)).to(WORK_DTYPE)[:, None].to(images.device)
    x = images.to(WORK_DTYPE).div_(255.0)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    out = x.add_(plasma.mul_(c)).mul_(peak).div_(peak + c).clamp_(0, 1).mul_(255.0)  # in place, same order
    return out.to(torch.uint8)  # values in [0, 255]: truncation, as the caller's conversion
