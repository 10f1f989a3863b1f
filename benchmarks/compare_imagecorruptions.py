"""Bytes of cema's corruptions against the ``imagecorruptions`` package's own output, same seed.

    python benchmarks/compare_imagecorruptions.py [--image FILE] [--seed 0] [--index 0]

One image (default: a 500 x 375 synthetic photograph), resized to 256 and centre-cropped to 224
as ``cema corrupt`` does, then every corruption at every severity with the ImageNet constants:
cema's ``corrupt(seed, index)`` beside ``imagecorruptions.corrupt`` after ``np.random.seed(s)``,
where s is the 32-bit MT19937 seed of that sample's generator (spec section 5: torch's CPU
generator and NumPy's legacy generator run the same engine from the same seed). For each
corruption the table gives how many severities are byte-equal, the share of differing values and
the largest difference, and why they differ where they do (spec sections 4, 6 and 11).

imagecorruptions 1.1.2 predates NumPy 2 and scikit-image 0.19: its ``np.float_`` and
``multichannel=True`` are mapped to ``np.float64`` and ``channel_axis=-1`` here so that its fog,
gaussian_blur and glass_blur run at all; nothing else of it is changed. frost is also shown
with its 1.1x texture enlargement taken out (the one step it adds to make_imagenet_c.py).
Not a test; tests/corruptions/test_properties.py asserts the frost equality.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "corruptions"))

from corruption_helpers import import_imagecorruptions, natural_image  # noqa: E402

from cema_cli.corruptions import ALL, corrupt, sample_generators  # noqa: E402
from cema_cli.corruptions.frost import texture_label  # noqa: E402
from cema_cli.corruptions.materialize import imagenet_crop  # noqa: E402

WHY = {  # why bytes differ where they do (spec sections 4, 6, 11)
    "gaussian_noise": "same formula; torch's normal sampler, not NumPy's legacy polar method",
    "shot_noise": "same formula; Poisson counts by CDF inversion of torch uniforms, not NumPy's sampler",
    "impulse_noise": "same formula; scikit-image draws from its own unseeded generator (not even IC repeats)",
    "defocus_blur": "same kernel; float32 (OpenCV) vs float64 before truncation: ties move one level",
    "glass_blur": "same algorithm; offsets by torch.randint (modulo), not np.random.randint (masked rejection)",
    "motion_blur": "IC: float shift-and-add; cema: ImageMagick's Q16 quantisation (as make_imagenet_c.py); own angle draw",
    "zoom_blur": "same algorithm; float32 rounding of the summed zooms",
    "snow": "IC rounds the flake layer and skips the centred trim; own normal sampler",
    "frost": "IC enlarges the photograph 1.1x (bicubic) before cropping; make_imagenet_c.py does not",
    "fog": "same algorithm; the plasma uniforms are torch's 53-bit reading of the MT19937 stream, not NumPy's",
    "brightness": "closed-form HSV (float32) vs scikit-image's float64 round trip",
    "contrast": "float32 vs float64 before truncation",
    "elastic_transform": "IC replaces it with another algorithm (no affine step, other constants)",
    "pixelate": "",
    "jpeg_compression": "",
    "speckle_noise": "same formula; torch's normal sampler, not NumPy's",
    "gaussian_blur": "float32 (OpenCV sepFilter2D) vs scikit-image float64 before truncation",
    "spatter": "same algorithm; own normal sampler for the liquid layer",
    "saturate": "closed-form HSV (float32) vs scikit-image's float64 round trip",
}


def shim_old_apis(ic_functions) -> None:
    """Let imagecorruptions 1.1.2 run on NumPy 2 and scikit-image >= 0.19 (renamed APIs only)."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    original = ic_functions.gaussian

    def gaussian(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return original(image, *args, **kwargs)

    ic_functions.gaussian = gaussian


class WithoutResize:
    """OpenCV for imagecorruptions' frost with its texture resize taken out."""

    def __init__(self, cv2) -> None:
        self.cv2 = cv2

    def __getattr__(self, name: str):
        return getattr(self.cv2, name)

    def resize(self, image, *args, **kwargs):
        return image


def theirs(ic, image: np.ndarray, name: str, severity: int, seed32: int) -> np.ndarray | str:
    np.random.seed(seed32)
    try:
        return ic.corrupt(image, severity, name)
    except Exception as error:  # report, do not stop: one broken function must not hide the others
        return f"{type(error).__name__}: {error}"


def compare(ours: np.ndarray, other: np.ndarray | str) -> tuple[bool, float, int] | str:
    if isinstance(other, str):
        return other
    diff = np.abs(ours.astype(int) - other.astype(int))
    return bool(diff.max() == 0), float((diff > 0).mean()), int(diff.max())


def severities(ic, batch: torch.Tensor, image: np.ndarray, name: str, seed: int, index: int) -> list:
    """compare() at severities 1-5: cema's sample (seed, index) against imagecorruptions seeded
    with that sample's 32-bit MT19937 seed."""
    results = []
    for severity in range(1, 6):
        ours = corrupt(batch, name, severity, seed=seed, indices=[index], constants="imagenet")[0].permute(1, 2, 0).numpy()
        seed32 = sample_generators(seed, name, severity, [index])[0].initial_seed() & 0xFFFFFFFF
        results.append(compare(ours, theirs(ic, image, name, severity, seed32)))
    return results


def table_row(name: str, results: list) -> str:
    errors = [r for r in results if isinstance(r, str)]
    if errors:
        return f"| {name} | - | - | - | imagecorruptions fails: {errors[0][:70]} |"
    equal = sum(r[0] for r in results)
    share = max(r[1] for r in results)
    largest = max(r[2] for r in results)
    why = WHY[name] if equal < len(results) else "byte-equal"
    return f"| {name} | {equal}/{len(results)} | {share:.4%} | {largest} | {why} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, help="an image file (default: a synthetic 500 x 375 photograph)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=0, help="the image's dataset index (part of its randomness)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ic = import_imagecorruptions()
    if ic is None:
        sys.exit("imagecorruptions is not installed: pip install -e '.[photos]'")
    import cv2
    import imagecorruptions.corruptions as ic_functions

    shim_old_apis(ic_functions)
    source = Image.open(args.image).convert("RGB") if args.image else Image.fromarray(natural_image(375, 0, 500))
    image = np.array(imagenet_crop(source))
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    print(f"image {image.shape[1]}x{image.shape[0]} (from {source.size[0]}x{source.size[1]}), seed {args.seed}, "
          f"index {args.index}, frost textures: {texture_label()}\n")
    print("| corruption | byte-equal severities | differing values (worst severity) | largest difference | why |")
    print("|---|---|---|---|---|")
    for name in ALL:
        print(table_row(name, severities(ic, batch, image, name, args.seed, args.index)))
    ic_functions.cv2 = WithoutResize(cv2)
    row = table_row("frost", severities(ic, batch, image, "frost", args.seed, args.index))
    print(row.replace("| frost |", "| frost, IC without its 1.1x enlargement |", 1))


if __name__ == "__main__":
    main()
