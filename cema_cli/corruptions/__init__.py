"""The 19 ImageNet-C corruptions on batched uint8 torch tensors (shared/spec/corruptions.md).

Public API (stable; the rest of cema only uses these names):

- ``COMMON``: the 15 common corruptions in the standard order; ``EXTRA``: the 4 extra ones;
  ``ALL = COMMON + EXTRA``; ``CONSTANT_SETS``: "imagenet" (224 px) and "cifar" (32 px).
- ``GROUPS`` and ``expand_names(text)``: the names every command accepts: "all" = the 15
  common corruptions, "extra" = the 4 others, or corruption names, comma-separated.
- ``generated_source(name)``: what a result row records as its corruption source.
- ``corrupt(images, name, severity, *, seed, indices, constants)``: images uint8 (N, 3, H, W)
  on the CPU or a GPU -> uint8 (N, 3, H, W) on the same device. Sample i's randomness derives
  only from (seed, name, severity, indices[i]), so results do not depend on batching.
- ``constants_for_size(side)``: "imagenet" for 224 px, "cifar" for 32 px.
- ``jpeg_roundtrip(images, quality)``: the JPEG round trip (Pillow's codec settings and pixels,
  through OpenCV's libjpeg) that the published ImageNet-C files carry (quality 85), to imitate
  them (spec 2.1).

Implementation notes: the work is done in float32 (``_ops.WORK_DTYPE``) on the images' device;
the reference computes most corruptions in float64, so a truncated output value can differ by
one level from a float64 computation on a small fraction of pixels (spec section 10 allows
this). The final conversion to uint8 is truncation, as in the reference writers (spec 1.1).
JPEG, defocus_blur with the ImageNet kernels (CPU tensors) and spatter's water mask call
OpenCV's C kernels on the CPU, as the reference does, and so do the Gaussian filters of CPU
images of 64 px and more (sepFilter2D); results return to the images' device.
Random draws use per-sample CPU generators and are moved to the device, so CPU and CUDA see the
same numbers. frost blends the original frost photographs when the ``imagecorruptions`` package
is installed, else procedurally generated substitutes, "frost (procedural)" (frost.py).
Images of any size are accepted; the constants stay in absolute pixel units (like the
imagecorruptions package) and sizes a kernel or texture cannot handle are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cema_cli.corruptions import blur, digital, frost, noise, spatter, weather
from cema_cli.corruptions._random import sample_generators
from cema_cli.corruptions.digital import jpeg_roundtrip
from cema_cli.errors import CemaError, unknown_name

__all__ = [
    "ALL", "COMMON", "CONSTANT_SETS", "EXTRA", "GROUPS", "constants_for_size", "corrupt", "expand_names",
    "generated_source", "jpeg_roundtrip", "sample_generators", "validate",
]

COMMON: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL: tuple[str, ...] = COMMON + EXTRA
GROUPS: dict[str, tuple[str, ...]] = {"all": COMMON, "extra": EXTRA}  # the same words in every command
CONSTANT_SETS: tuple[str, ...] = ("imagenet", "cifar")

Corruption = Callable[[torch.Tensor, int, str, list[torch.Generator]], torch.Tensor]
_FUNCTIONS: dict[str, Corruption] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": frost.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": spatter.spatter,
    "saturate": digital.saturate,
}
# No random draws (spec section 5): no per-sample generators to build.
_DETERMINISTIC = frozenset(
    ("defocus_blur", "zoom_blur", "gaussian_blur", "brightness", "contrast", "saturate", "pixelate", "jpeg_compression")
)
_MIN_SIDE = 8  # below this no corruption is meaningful (and several 3x3/5x5 borders break)


def expand_names(text: str, also: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Comma-separated corruption names and groups ("all" = the 15 common ones in the standard
    order, "extra" = the 4 others) as names, each once, in the order given; ``also`` are
    further names a command accepts (e.g. "none")."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        for name in GROUPS.get(part, (part,) if part else ()):
            if name not in ALL and name not in also:
                raise unknown_name("corruption", name, (*GROUPS, *ALL, *also))
            if name not in names:
                names.append(name)
    if not names:
        raise CemaError("no corruption given; pass a name, a comma list such as gaussian_noise,fog, 'all' (15) or 'extra' (4).")
    return tuple(names)


def generated_source(name: str) -> str:
    """The corruption_source of a generated domain: "generated", or "generated, procedural
    frost" when frost's photographs are not installed (the substitute of spec section 8)."""
    if name == "frost" and frost.texture_source() == "procedural":
        return "generated, procedural frost"
    return "generated"


def constants_for_size(side: int) -> str:
    """The constants set defined for an image side: 32 px or less -> cifar, otherwise imagenet."""
    return "cifar" if side <= 32 else "imagenet"


def _size_limits(name: str, severity: int, constants: str) -> tuple[int, tuple[int, int] | None, str]:
    """(min side, largest (H, W) or None, what sets the limit) for one corruption setting."""
    if name == "defocus_blur":
        side = blur.defocus_kernel_size(severity, constants)
        return max(_MIN_SIDE, side // 2 + 1), None, f"the {side}x{side} defocus kernel"
    if name == "glass_blur":
        return max(_MIN_SIDE, blur.glass_min_side(severity, constants)), None, "the glass-blur shift range"
    if name == "pixelate":
        return max(_MIN_SIDE, digital.pixelate_min_side(severity, constants)), None, "the pixelate factor"
    if name == "frost":
        return _MIN_SIDE, frost.frost_max_side(constants), f"the {constants} frost textures"  # per axis (spec 4.9 step 4)
    return _MIN_SIDE, None, f"{name}"


def validate(images: torch.Tensor, name: str, severity: int, constants: str) -> str:
    """Check the inputs of :func:`corrupt`; returns the resolved constants set.

    Raises CemaError naming the problem and the fix. ``constants="auto"`` picks the set from
    the smaller image side (:func:`constants_for_size`).
    """
    if name not in ALL:
        raise unknown_name("corruption", name, ALL)
    if not isinstance(images, torch.Tensor):
        raise CemaError(f"corrupt() needs a torch.Tensor of uint8 images; got {type(images).__name__}.")
    if images.dtype != torch.uint8:
        raise CemaError(
            f"corrupt() needs uint8 images (values 0-255); got {images.dtype}. "
            "Convert floats in [0, 1] with (x * 255).round().to(torch.uint8)."
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise CemaError(
            f"corrupt() needs RGB images shaped (N, 3, H, W); got shape {tuple(images.shape)}. "
            "Repeat grayscale to 3 channels and put channels first."
        )
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise CemaError(f"severity {severity!r} is outside 1-5; pass a severity from 1 to 5.")
    if constants == "auto":
        constants = constants_for_size(min(images.shape[-2:]))
    if constants not in CONSTANT_SETS:
        raise unknown_name("constants set", constants, (*CONSTANT_SETS, "auto"))
    low, high, reason = _size_limits(name, severity, constants)
    h, w = images.shape[-2:]
    if min(h, w) < low:
        raise CemaError(
            f"{name} severity {severity} needs images of at least {low}x{low} px ({reason}); "
            f"got {h}x{w}. Resize the images up first."
        )
    if high and (h > high[0] or w > high[1]):
        raise CemaError(
            f"{name} severity {severity} handles images up to {high[0]}x{high[1]} px (H x W, {reason}); "
            f"got {h}x{w}. Resize the images to the constants' nominal size first (224 or 32 px)."
        )
    return constants


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    *,
    seed: int,
    indices: torch.Tensor | Sequence[int],
    constants: str,
) -> torch.Tensor:
    """Corrupt a uint8 batch (N, 3, H, W) with one corruption at one severity (spec section 4).

    ``indices`` holds one dataset index per sample: with ``seed`` they are the only source of
    randomness. ``constants`` is "imagenet", "cifar" or "auto". The result is truncated (not
    rounded) to uint8, as the reference writers do (spec 1.1), on the images' device.
    """
    constants = validate(images, name, severity, constants)
    index_list = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    if len(index_list) != images.shape[0]:
        raise CemaError(f"corrupt() got {images.shape[0]} images but {len(index_list)} indices; pass one index per image.")
    if images.shape[0] == 0:
        return images.clone()
    gens = [] if name in _DETERMINISTIC else sample_generators(seed, name, severity, index_list)
    out = _FUNCTIONS[name](images, severity, constants, gens)
    if out.dtype == torch.uint8:
        return out
    return out.clamp_(0, 255).to(torch.uint8)  # float -> uint8 truncates toward zero
