"""Images per second per corruption: cema's batched torch corruptions vs a per-image reference.

    python benchmarks/bench_corruptions.py [--threads 2] [--severity 3] [--batch224 32] [--batch32 256]

Reference (per image, NumPy, one image at a time like the published scripts):
- 224 px: the ``imagecorruptions`` package (ImageNet constants) for every function that still
  runs against current scikit-image/NumPy; otherwise (glass_blur, fog, gaussian_blur, and
  elastic_transform, whose imagecorruptions version is a different algorithm) the
  straightforward NumPy/SciPy port in tests/corruptions/reference_numpy.py.
- 32 px: the NumPy/SciPy port with the CIFAR constants (imagecorruptions would apply the
  ImageNet constants at 32 px, which is a different corruption).
Reference timings include drawing the random numbers with NumPy, as the reference does.
Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "corruptions"))

import reference_numpy as ref  # noqa: E402
from corruption_helpers import import_imagecorruptions, natural_image  # noqa: E402

from cema_cli.corruptions import ALL, corrupt  # noqa: E402
from cema_cli.corruptions import constants as K  # noqa: E402
from cema_cli.corruptions.frost import frost_textures  # noqa: E402
from cema_cli.corruptions.weather import fog_mapsize  # noqa: E402

IC_BROKEN_OR_DIFFERENT = {"glass_blur", "fog", "gaussian_blur", "elastic_transform"}


def port_call(name: str, u: np.ndarray, constants: str, severity: int) -> np.ndarray:
    """One reference corruption of one H x W x 3 image with the NumPy port (draws included)."""
    s = severity - 1
    h, w = u.shape[:2]
    if name == "gaussian_noise":
        return ref.gaussian_noise(u, K.GAUSSIAN_NOISE[constants][s], np.random.normal(size=u.shape))
    if name == "shot_noise":
        return ref.shot_noise(u, K.SHOT_NOISE[constants][s], np.random)
    if name == "impulse_noise":
        return ref.impulse_noise(u, K.IMPULSE_NOISE[constants][s], np.random.rand(*u.shape), np.random.rand(*u.shape))
    if name == "speckle_noise":
        return ref.speckle_noise(u, K.SPECKLE_NOISE[constants][s], np.random.normal(size=u.shape))
    if name == "defocus_blur":
        return ref.defocus_blur(u, *K.DEFOCUS_BLUR[constants][s])
    if name == "glass_blur":
        sigma, d, passes = K.GLASS_BLUR[constants][s]
        offsets = np.random.randint(-d, d, size=(passes, (h - 2 * d) * (w - 2 * d), 2))
        return ref.glass_blur(u, sigma, d, passes, offsets)
    if name == "motion_blur":
        return ref.motion_blur_u8(u.astype(np.float64), *K.MOTION_BLUR[constants][s], np.random.uniform(-45, 45))
    if name == "zoom_blur":
        return ref.zoom_blur(u, K.ZOOM_BLUR[constants][s])
    if name == "snow":
        p = K.SNOW[constants][s]
        return ref.snow(u, p, np.random.normal(size=(h, w)), np.random.uniform(-135, -45))
    if name == "frost":
        tex = frost_textures(constants)[np.random.randint(5)].permute(1, 2, 0).numpy()
        top, left = np.random.randint(0, tex.shape[0] - h), np.random.randint(0, tex.shape[1] - w)
        return ref.frost(u, *K.FROST[constants][s], tex[top:top + h, left:left + w])
    if name == "fog":
        m = fog_mapsize(h, w)
        return ref.fog(u, *K.FOG[constants][s], m, np.random.rand(m * m - 1))
    if name == "brightness":
        return ref.brightness(u, K.BRIGHTNESS[constants][s])
    if name == "contrast":
        return ref.contrast(u, K.CONTRAST[constants][s])
    if name == "elastic_transform":
        p = K.ELASTIC[constants][s]
        jitter = np.random.uniform(-p[2], p[2], size=(3, 2))
        return ref.elastic_transform(u, p, jitter, np.random.uniform(-1, 1, (h, w)), np.random.uniform(-1, 1, (h, w)))
    if name == "pixelate":
        return ref.pixelate(u, K.PIXELATE[constants][s])
    if name == "jpeg_compression":
        return ref.jpeg_compression(u, K.JPEG[constants][s])
    if name == "gaussian_blur":
        return ref.gaussian_blur(u, K.GAUSSIAN_BLUR[constants][s])
    if name == "spatter":
        return ref.spatter(u, K.SPATTER[constants][s], np.random.normal(size=(h, w)))
    if name == "saturate":
        return ref.saturate(u, *K.SATURATE[constants][s])
    raise KeyError(name)


def rate(fn, count: int, min_seconds: float) -> float:
    """Images per second of fn() processing `count` images, repeated for at least min_seconds."""
    fn()  # warm-up (caches, textures, allocator)
    done, start = 0, time.perf_counter()
    while True:
        fn()
        done += count
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def bench(side: int, constants: str, batch: int, ref_images: int, severity: int, min_seconds: float, ic) -> list[tuple]:
    images = torch.from_numpy(np.stack([natural_image(side, v % 7) for v in range(batch)])).permute(0, 3, 1, 2).contiguous()
    arrays = [natural_image(side, v % 7) for v in range(ref_images)]
    rows = []
    for name in ALL:
        ours = rate(lambda: corrupt(images, name, severity, seed=0, indices=range(batch), constants=constants), batch, min_seconds)
        use_ic = side == 224 and ic is not None and name not in IC_BROKEN_OR_DIFFERENT
        count = ref_images if name != "glass_blur" or side == 32 else 1
        if use_ic:
            def reference():
                for u in arrays[:count]:
                    ic.corrupt(u, corruption_name=name, severity=severity)
        else:
            def reference():
                for u in arrays[:count]:
                    np.asarray(port_call(name, u, constants, severity)).astype(np.uint8)
        theirs = rate(reference, count, min_seconds)
        rows.append((name, ours, theirs, "imagecorruptions" if use_ic else "numpy port"))
        print(f"  {side:>3} px {name:18s} ours {ours:9.1f}/s  ref {theirs:9.1f}/s  x{ours / theirs:6.1f}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--batch224", type=int, default=32)
    parser.add_argument("--batch32", type=int, default=256)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ic = import_imagecorruptions()
    r224 = bench(224, "imagenet", args.batch224, 4, args.severity, args.min_seconds, ic)
    r32 = bench(32, "cifar", args.batch32, 64, args.severity, args.min_seconds, None)
    print(f"\nseverity {args.severity}, torch threads {args.threads}, torch {torch.__version__}; images/s (higher is better)\n")
    print("| corruption | 224 px ours | 224 px reference | speedup | 32 px ours | 32 px reference | speedup |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (name, o224, t224, src), (_, o32, t32, _) in zip(r224, r32):
        mark = "" if src == "imagecorruptions" else " *"
        print(f"| {name} | {o224:.0f} | {t224:.0f}{mark} | {o224 / t224:.1f}x | {o32:.0f} | {t32:.0f} | {o32 / t32:.1f}x |")
    print("\n* 224-px reference is the NumPy port (imagecorruptions fails or differs); 32-px reference is always the port.")


if __name__ == "__main__":
    main()
