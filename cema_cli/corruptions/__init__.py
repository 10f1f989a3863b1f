"""The 19 ImageNet-C corruptions on batched uint8 torch tensors (shared/spec/corruptions.md).

Public API (stable; the rest of cema only uses these names):

- ``COMMON``: the 15 common corruptions in the standard order; ``EXTRA``: the 4 extra ones;
  ``ALL = COMMON + EXTRA``.
- ``corrupt(images, name, severity, *, seed, indices, constants)``: images uint8 (N, 3, H, W)
  -> uint8 (N, 3, H, W). Sample i's randomness derives only from
  (seed, name, severity, indices[i]), so results do not depend on batching.
- ``constants_for_size(side)``: "imagenet" for 224 px, "cifar" for 32 px.
"""

from __future__ import annotations

import hashlib

import torch

from cema_cli.errors import CemaError, unknown_name

COMMON: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL: tuple[str, ...] = COMMON + EXTRA
CONSTANT_SETS: tuple[str, ...] = ("imagenet", "cifar")

# Section 4.1: gaussian noise standard deviation per severity.
_GAUSSIAN_SIGMA = {"imagenet": (0.08, 0.12, 0.18, 0.26, 0.38), "cifar": (0.04, 0.06, 0.08, 0.09, 0.10)}


def constants_for_size(side: int) -> str:
    """The constants set defined for an image side: 32 px -> cifar, otherwise imagenet."""
    return "cifar" if side <= 32 else "imagenet"


def sample_generators(seed: int, name: str, severity: int, indices: torch.Tensor) -> list[torch.Generator]:
    """One torch.Generator per sample, seeded from (seed, corruption, severity, sample index)."""
    gens = []
    for index in indices.tolist():
        digest = hashlib.blake2b(f"{seed}/{name}/{severity}/{index}".encode(), digest_size=8).digest()
        gens.append(torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1)))
    return gens


def _validate(images: torch.Tensor, name: str, severity: int, constants: str) -> None:
    if name not in ALL:
        raise unknown_name("corruption", name, ALL)
    if constants not in CONSTANT_SETS:
        raise unknown_name("constants set", constants, CONSTANT_SETS)
    if not 1 <= severity <= 5:
        raise CemaError(f"severity {severity} is outside 1-5; pass a severity from 1 to 5.")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise CemaError(
            f"corrupt() needs uint8 images shaped (N, 3, H, W); got {images.dtype} {tuple(images.shape)}."
        )


def gaussian_noise(x: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.1: x + N(0, sigma^2), clipped to [0, 1]; x is float in [0, 1]."""
    sigma = _GAUSSIAN_SIGMA[constants][severity - 1]
    noise = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in gens])
    return (x + sigma * noise.to(x.device)).clamp_(0, 1)


_FUNCTIONS = {"gaussian_noise": gaussian_noise}


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    *,
    seed: int,
    indices: torch.Tensor,
    constants: str,
) -> torch.Tensor:
    """Corrupt a uint8 batch; the result is truncated to uint8 as the reference writers do."""
    _validate(images, name, severity, constants)
    if name not in _FUNCTIONS:
        raise CemaError(f"corruption {name!r} is not implemented yet; available: {', '.join(_FUNCTIONS)}.")
    gens = sample_generators(seed, name, severity, indices)
    out = _FUNCTIONS[name](images.double() / 255.0, severity, constants, gens)
    return (out * 255.0).to(torch.uint8)
