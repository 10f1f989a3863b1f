"""Weather corruptions: snow and fog (spec sections 4.8 and 4.10; frost lives in frost.py).

Each function takes uint8 images (N, 3, H, W), a severity 1..5, a constants set and one
generator per sample, and returns floats on the 0..255 scale (truncated to uint8 by the caller).
"""

from __future__ import annotations

import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import (
    WORK_DTYPE,
    clipped_zoom,
    motion_blur_sample,
    motion_offsets,
    motion_weights,
    plasma_draw_count,
    plasma_fractal,
)
from cema_cli.corruptions._random import uniform


def snow(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.8: zoomed, thresholded normal "flake" layer, truncated to 8 bit, motion-blurred
    downwards (angle ~ U(-135, -45)), added twice (itself and rotated 180 degrees) to a whitened
    scene. Draws per sample: the H x W normal field, then the angle.
    """
    mean, std, zoom, threshold, radius, sigma, blend = K.SNOW[constants][severity - 1]
    h, w = images.shape[-2:]
    weights = motion_weights(radius, sigma).tolist()
    out = torch.empty_like(images)
    for g, image, target in zip(gens, images, out):  # one image at a time: its tensors stay in the cache
        field = torch.randn((1, 1, h, w), generator=g, dtype=WORK_DTYPE)
        rows, cols = motion_offsets(len(weights), uniform(g, (1,), -135.0, -45.0))
        layer = clipped_zoom(field.mul_(std).add_(mean).to(images.device), zoom)[0]
        layer = layer.masked_fill_(layer < threshold, 0.0).clamp_(0, 1).mul_(255.0).floor_()  # a view of a fresh tensor
        flakes = motion_blur_sample(layer, weights, rows[0].tolist(), cols[0].tolist()).div_(255.0)
        x = image.to(WORK_DTYPE).div_(255.0)
        grey = (0.299 * x[0:1] + 0.587 * x[1:2] + 0.114 * x[2:3]).mul_(1.5).add_(0.5)
        whitened = torch.maximum(x, grey).mul_(1 - blend)
        x.mul_(blend).add_(whitened)  # blend x + (1 - blend) max(x, 1.5 grey + 0.5), in place
        target.copy_(x.add_(flakes).add_(torch.rot90(flakes, 2, dims=(-2, -1))).clamp_(0, 1).mul_(255.0))
    return out  # uint8: truncated, as the caller's conversion


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
    uniforms = torch.empty((1, draws), dtype=torch.float64)
    plasma = torch.empty((1, h, w), dtype=WORK_DTYPE, device=images.device)
    x = torch.empty(images.shape[1:], dtype=WORK_DTYPE, device=images.device)
    out = torch.empty_like(images)
    for g, image, target in zip(gens, images, out):  # one image at a time in reused buffers
        torch.rand(draws, generator=g, dtype=torch.float64, out=uniforms[0])
        plasma.copy_(plasma_fractal(uniforms, mapsize, decay, crop=(h, w)))
        x.copy_(image).div_(255.0)
        peak = x.max()
        x.add_(plasma.mul_(c)).mul_(peak).div_(peak + c).clamp_(0, 1).mul_(255.0)  # in place, same order
        target.copy_(x)  # values in [0, 255]: truncation, as the caller's conversion
    return out
