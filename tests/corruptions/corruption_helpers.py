"""Shared helpers for the corruption tests: deterministic natural-ish images, comparisons."""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import torch


def natural_image(side: int, variant: int = 0, width: int | None = None) -> np.ndarray:
    """A deterministic uint8 H x W x 3 image: smooth colour gradients, a disc, a bar, texture.

    side x side, or side x width (H x W) when width is given."""
    width = side if width is None else width
    yy = np.broadcast_to((np.arange(side) / max(side - 1, 1))[:, None], (side, width))
    xx = np.broadcast_to((np.arange(width) / max(width - 1, 1))[None, :], (side, width))
    phase = 0.7 * variant
    r = 0.5 + 0.35 * np.sin(2.5 * xx + phase) * np.cos(1.5 * yy)
    g = 0.3 + 0.5 * yy * (1 - 0.3 * xx)
    b = 0.6 - 0.4 * xx + 0.1 * np.cos(9 * yy + phase)
    img = np.stack([r, g, b], -1)
    disc = (xx - 0.35 - 0.05 * variant) ** 2 + (yy - 0.6) ** 2 < 0.04
    img[disc] = (0.9, 0.85, 0.2)
    bar = (np.abs(xx - 0.7) < 0.06) & (yy > 0.15) & (yy < 0.8)
    img[bar] = (0.1, 0.15, 0.35)
    texture = 0.04 * np.sin(40 * xx * (1 + variant)) * np.sin(33 * yy)
    img = np.clip(img + texture[..., None], 0.02, 0.98)
    return (img * 255).astype(np.uint8)


def batch(side: int, count: int, width: int | None = None) -> torch.Tensor:
    """(count, 3, side, side or width) uint8 tensor of natural_image variants."""
    images = np.stack([natural_image(side, v, width) for v in range(count)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def hwc(t: torch.Tensor) -> np.ndarray:
    """One (3, H, W) tensor -> H x W x 3 numpy array."""
    return t.permute(1, 2, 0).cpu().numpy()


def assert_close_u8(ours: np.ndarray, ref: np.ndarray, max_diff: int = 1, max_fraction: float = 0.01) -> None:
    """uint8 results agree up to `max_diff` levels, with at most `max_fraction` of values differing.

    The tolerance covers float32 (ours) vs float64 (reference) before truncation to uint8.
    """
    diff = np.abs(ours.astype(np.int64) - np.asarray(ref).astype(np.int64))
    assert diff.max() <= max_diff, f"max difference {diff.max()} > {max_diff}"
    fraction = float((diff > 0).mean())
    assert fraction <= max_fraction, f"{fraction:.4f} of values differ (> {max_fraction})"


def psnr(clean: np.ndarray, noisy: np.ndarray) -> float:
    mse = float(np.mean((clean.astype(np.float64) - noisy.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def import_imagecorruptions():
    """Import the imagecorruptions package, shimming the removed pkg_resources if needed.

    Returns None when it is not installed.
    """
    if importlib.util.find_spec("imagecorruptions") is None:
        return None
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            return os.path.join(os.path.dirname(importlib.util.find_spec(package).origin), name)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    import imagecorruptions

    return imagecorruptions
