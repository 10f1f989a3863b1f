"""JPEG decoding of the data path, one process and one thread (issue 27; not a test).

    python benchmarks/bench_decode.py                 # 256 generated 224-px JPEGs (quality 85), 7 rounds
    python benchmarks/bench_decode.py --folder DIR    # the JPEGs under DIR instead

Interleaved per round: Pillow (open, convert to RGB, to a uint8 (3, H, W) tensor: what
``ImageItems`` did before issue 27), ``decode_colour_jpeg`` (Pillow reads the header, OpenCV's
libjpeg-turbo decodes: the data path now), and torchvision's ``decode_jpeg`` on the CPU (for
reference; deprecated since torchvision 0.29). It first checks that every decoder gives Pillow's
bytes. Figures are images per second (median over rounds) and each decoder's median per-round
ratio to Pillow; on a shared machine, read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cema_cli.data.loading import decode_colour_jpeg, to_tensor


def generated_jpegs(folder: Path, count: int, side: int = 224) -> list[Path]:
    """Smooth random colour fields with pixel noise, saved at quality 85 (ImageNet-C's)."""
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        field = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=side, mode="bicubic")[0]
        noisy = field * 200 + 28 + 20 * torch.randn(3, side, side, generator=generator)
        path = folder / f"{i:05d}.JPEG"
        Image.fromarray(noisy.clamp(0, 255).byte().permute(1, 2, 0).numpy()).save(path, quality=85)
        paths.append(path)
    return paths


def pillow(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return to_tensor(image.convert("RGB"))


def torchvision_cpu(path: Path) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

    return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)


DECODERS = {"pillow": pillow, "decode_colour_jpeg": decode_colour_jpeg, "torchvision": torchvision_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--folder", type=Path, default=None, help="decode the *.JPEG files under this folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = sorted(args.folder.rglob("*.JPEG"))[: args.images] if args.folder else generated_jpegs(Path(tmp), args.images)
        sizes = [p.stat().st_size for p in paths]
        for name, decode in DECODERS.items():
            same = all(torch.equal(decode(p), pillow(p)) for p in paths)
            print(f"{name:<20} Pillow's bytes on all {len(paths)} images: {'yes' if same else 'NO'}")
        rates: dict[str, list[float]] = {name: [] for name in DECODERS}
        for _ in range(args.rounds):
            for name, decode in DECODERS.items():
                start = time.perf_counter()
                for path in paths:
                    decode(path)
                rates[name].append(len(paths) / (time.perf_counter() - start))
    print(f"{len(paths)} JPEGs, mean {np.mean(sizes) / 1024:.1f} kB; load {Path('/proc/loadavg').read_text().split()[0]}")
    for name, values in rates.items():
        ratio = statistics.median(v / p for v, p in zip(values, rates["pillow"]))
        print(f"{name:<20} {statistics.median(values):8.1f} img/s   x{ratio:.2f} Pillow")


if __name__ == "__main__":
    main()
