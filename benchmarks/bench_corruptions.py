"""Images per second per corruption: cema's batched corruptions vs a per-image reference.

    python benchmarks/bench_corruptions.py --reference [--severities 1,2,3,4,5] [--sizes 32,224]
        [--rounds 5] [--threads 1] [--batch224 16] [--batch32 64] [--corruptions a,b]

Every (size, severity, corruption) setting is timed once per round, reference then cema, and the
rounds are interleaved (round 2 starts after every setting had its round 1), so load from other
jobs on a shared machine hits both sides alike; the figures are medians over the rounds, and
the load average is printed with them. Times are CPU time of this process (one thread on each
side), which waiting for a busy core does not inflate; img/s = 1 / CPU seconds per image. The aggregate ratio of a size is the time the reference
needs to produce all 19 corruptions of one image divided by cema's time (summed over severities).

Reference (per image, NumPy, one image at a time like the published scripts):
- 224 px: the ``imagecorruptions`` package (ImageNet constants) for every function that still
  runs against current scikit-image/NumPy; otherwise (glass_blur, fog, gaussian_blur, and
  elastic_transform, whose imagecorruptions version is a different algorithm) the
  straightforward NumPy/SciPy port in tests/corruptions/reference_numpy.py.
- 32 px: the NumPy/SciPy port with the CIFAR constants (imagecorruptions would apply the
  ImageNet constants at 32 px, which is a different corruption).
Reference timings include drawing the random numbers with NumPy, as the reference does.
OpenCV and torch both get ``--threads`` threads (default 1, as on a shared machine).
Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def seconds(fn) -> float:
    """CPU seconds of this process spent in fn(): with one thread on each side this is the work
    done, unlike wall time, which on a shared, oversubscribed machine mostly measures waiting."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def reference_call(name: str, side: int, constants: str, severity: int, ic):
    """The per-image reference of one setting and its label: imagecorruptions where it computes
    this corruption (224 px, ImageNet constants), else the NumPy port."""
    if side == 224 and ic is not None and name not in IC_BROKEN_OR_DIFFERENT:
        return (lambda u: ic.corrupt(u, corruption_name=name, severity=severity)), "imagecorruptions"
    return (lambda u: np.asarray(port_call(name, u, constants, severity)).astype(np.uint8)), "numpy port"


class Setting:
    """One (size, severity, corruption): its inputs and the per-image seconds of each round."""

    def __init__(self, side: int, severity: int, name: str, batch: int, ref_count: int, ic):
        self.side, self.severity, self.name = side, severity, name
        self.constants = "cifar" if side == 32 else "imagenet"
        self.images = torch.from_numpy(np.stack([natural_image(side, v % 7) for v in range(batch)])).permute(0, 3, 1, 2).contiguous()
        self.arrays = [natural_image(side, v % 7) for v in range(ref_count)]
        self.reference, self.source = reference_call(name, side, self.constants, severity, ic)
        self.ours_s: list[float] = []
        self.ref_s: list[float] = []

    def run_ours(self) -> None:
        n = self.images.shape[0]
        corrupt(self.images, self.name, self.severity, seed=0, indices=range(n), constants=self.constants)

    def round(self, warm_up: bool) -> None:
        if warm_up:
            self.run_ours()
            self.reference(self.arrays[0])
        self.ref_s.append(seconds(lambda: [self.reference(u) for u in self.arrays]) / len(self.arrays))
        self.ours_s.append(seconds(self.run_ours) / self.images.shape[0])

    @property
    def ours(self) -> float:
        return statistics.median(self.ours_s)

    @property
    def ref(self) -> float:
        return statistics.median(self.ref_s)


def load() -> str:
    return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count() or 0)


def make_settings(args, ic) -> list[Setting]:
    settings = []
    for side in args.sizes:
        batch = args.batch224 if side == 224 else args.batch32
        for severity in args.severities:
            for name in args.corruptions:
                slow_ref = name == "glass_blur" and side == 224
                ref_count = 1 if slow_ref else (args.ref224 if side == 224 else args.ref32)
                settings.append(Setting(side, severity, name, batch, ref_count, ic))
    return settings


def report(settings: list[Setting], args) -> None:
    print(f"\nimages per CPU second, medians of {args.rounds} interleaved rounds; torch and OpenCV threads {args.threads}; "
          f"torch {torch.__version__}; {load()} (after the run)\n")
    print("| size | sev | corruption | reference img/s | cema img/s | ratio | reference |")
    print("|---:|---:|---|---:|---:|---:|---|")
    for s in settings:
        print(f"| {s.side} | {s.severity} | {s.name} | {1 / s.ref:.0f} | {1 / s.ours:.0f} | {s.ref / s.ours:.2f}x | {s.source} |")
    print(f"\nAggregate (time to produce all {len(args.corruptions)} corruptions of one image, reference / cema):\n")
    print("| size | severity | reference ms | cema ms | ratio | slowest ratio |")
    print("|---:|---|---:|---:|---:|---|")
    for side in args.sizes:
        groups = [[s for s in settings if s.side == side and s.severity == v] for v in args.severities]
        groups.append([s for s in settings if s.side == side])
        for label, group in zip([*map(str, args.severities), "all"], groups):
            ref, ours = sum(s.ref for s in group), sum(s.ours for s in group)
            worst = min(group, key=lambda s: s.ref / s.ours)
            print(f"| {side} | {label} | {1e3 * ref:.1f} | {1e3 * ours:.1f} | {ref / ours:.1f}x | "
                  f"{worst.name} sev {worst.severity}: {worst.ref / worst.ours:.2f}x |")


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", action="store_true", help="time the per-image reference too (required: the figures are ratios)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--severities", type=int_list, default=[1, 2, 3, 4, 5])
    parser.add_argument("--sizes", type=int_list, default=[32, 224])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corruptions", type=lambda text: text.split(","), default=list(ALL),
                        help="comma-separated subset (the aggregate then covers only these)")
    parser.add_argument("--batch224", type=int, default=16)
    parser.add_argument("--batch32", type=int, default=64)
    parser.add_argument("--ref224", type=int, default=2, help="reference images per round at 224 px")
    parser.add_argument("--ref32", type=int, default=16, help="reference images per round at 32 px")
    args = parser.parse_args()
    if not args.reference:
        parser.error("pass --reference: speed is only reported as a ratio to the per-image reference")
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    ic = import_imagecorruptions()
    if ic is None:
        print("imagecorruptions is not installed (pip install -e .[test]); the NumPy port is the reference everywhere", file=sys.stderr)
    settings = make_settings(args, ic)
    print(load() + " (before the run)", file=sys.stderr)
    for r in range(args.rounds):
        for s in settings:
            s.round(warm_up=r == 0)
        print(f"round {r + 1}/{args.rounds} done; {load()}", file=sys.stderr)
    report(settings, args)


if __name__ == "__main__":
    main()
