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
    in_chunks,
    motion_blur_u8,
    plasma_draw_count,
    plasma_fractal,
)
from cema_cli.corruptions._random import uniform


def snow(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.8: zoomed, thresholded normal "flake" layer, truncated to 8 bit, motion-blurred
    downwards (angle ~ U(-135, -45)), added twice (itself and rotated 180 degrees) to a whitened
    scene. Draws per sample: the H x W normal field, then the angle. In chunks (in_chunks).
    """
    params = K.SNOW[constants][severity - 1]
    return in_chunks(images, gens, lambda chunk, chunk_gens: _snow(chunk, params, chunk_gens))


def _snow(images: torch.Tensor, params: tuple, gens: list[torch.Generator]) -> torch.Tensor:
    mean, std, zoom, threshold, radius, sigma, blend = params
    h, w = images.shape[-2:]
    fields, angles = [], []
    for g in gens:
        fields.append(torch.randn((1, h, w), generator=g, dtype=WORK_DTYPE))
        angles.append(uniform(g, (), -135.0, -45.0))
    layer = clipped_zoom(torch.stack(fields).mul_(std).add_(mean).to(images.device), zoom)  # mean + std n
    layer = layer.masked_fill_(layer < threshold, 0.0).clamp_(0, 1).mul_(255.0).floor_()  # a view of a fresh tensor
    flakes = motion_blur_u8(layer, radius, sigma, torch.stack(angles).to(images.device)).div_(255.0)
    x = images.to(WORK_DTYPE).div_(255.0)
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).mul_(1.5).add_(0.5)
    whitened = torch.maximum(x, grey).mul_(1 - blend)
    x.mul_(blend).add_(whitened)  # blend x + (1 - blend) max(x, 1.5 grey + 0.5), in place
    return x.add_(flakes).add_(torch.rot90(flakes, 2, dims=(-2, -1))).clamp_(0, 1).mul_(255.0)


def fog_mapsize(h: int, w: int) -> int:
    """Plasma map side: the next power of two >= the image side (256 at 224 px, 32 at 32 px)."""
    side = 1
    while side < max(h, w):
        side *= 2
    return max(side, 2)


def fog(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.10: grey plasma fog (3.3) cropped top-left, rescaled to keep the image maximum.
    In chunks (in_chunks)."""
    c, decay = K.FOG[constants][severity - 1]
    h, w = images.shape[-2:]
    mapsize = fog_mapsize(h, w)
    draws = plasma_draw_count(mapsize)

    def fog_chunk(chunk: torch.Tensor, chunk_gens: list[torch.Generator]) -> torch.Tensor:
        uniforms = torch.empty((len(chunk_gens), draws), dtype=torch.float64)
        for g, row in zip(chunk_gens, uniforms):
            torch.rand(draws, generator=g, dtype=torch.float64, out=row)
        plasma = plasma_fractal(uniforms, mapsize, decay, crop=(h, w)).to(WORK_DTYPE)[:, None].to(chunk.device)
        x = chunk.to(WORK_DTYPE).div_(255.0)
        peak = x.amax(dim=(1, 2, 3), keepdim=True)
        return x.add_(plasma.mul_(c)).mul_(peak).div_(peak + c).clamp_(0, 1).mul_(255.0)  # in place, same order

    return in_chunks(images, gens, fog_chunk)
