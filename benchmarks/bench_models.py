"""Images per second of each method with real model sizes: a ResNet-18 edge and a ResNet-50 cloud
(torchvision, random weights) on 224-px JPEGs in the ImageNet-C layout (issue 6).

    python benchmarks/bench_models.py                          # CPU, 256 samples per method
    python benchmarks/bench_models.py --device cuda --amp bf16 --samples 2048

The stream is a temporary ImageNet-C tree of random 224x224 JPEGs (quality 85) read through the
real loader. ``img/s`` is the engine's figure (strategy step and scoring, not the loading);
``wall img/s`` includes loading and model set-up. With random weights the entropy filters of
ETA/EATA/CEMA see near-uniform predictions (entropy close to ln 1000), so they select few samples:
read the ``uploads`` column before comparing methods' costs, or pass ``--select-all``, which
raises the entropy thresholds above ln 1000 so every sample passes them (the worst-case cost).
EATA's Fisher set is cut to ``--fisher-samples`` clean images so its set-up stays short on a
CPU. One untimed warm-up run (source, one batch) comes first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cema_cli.run.api import run_benchmark
from cema_cli.config import RunConfig
from cema_cli.strategies import STRATEGIES

WNIDS = ("n01440764", "n01443537", "n02123045", "n15075141")


def write_tree(root: Path, count: int, prefix: str = "") -> Path:
    """``count`` random 224x224 JPEGs spread over a few wnid folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / prefix / WNIDS[i % len(WNIDS)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / f"img_{i:05d}.JPEG", quality=85)
    return root


SELECT_ALL = {"eta": {"e0_factor": "1.01"}, "eata": {"e0_factor": "1.01"}, "cema": {"e_max_factor": "1.01", "e_min_factor": "0"},
              "cema-official": {"e_max_factor": "1.01", "e_min_factor": "0"}}


def measure(method: str, args: argparse.Namespace, data: Path, clean: Path, samples: int | None = None) -> dict:
    options = {method: dict(SELECT_ALL.get(method, {})) if args.select_all else {}}
    if method == "eata":
        options["eata"]["fisher_samples"] = str(args.fisher_samples)
    config = RunConfig(
        methods=(method,), dataset="imagenet-c", data_root=str(data), clean_root=str(clean), corruptions=("gaussian_noise",),
        severities=(5,), samples=samples or args.samples, batch_size=args.batch_size, edge="torchvision:resnet18",
        cloud="torchvision:resnet50", random_init=True, device=args.device, amp=args.amp, channels_last=args.channels_last,
        workers=args.workers, method_options=options,
    )
    start = time.perf_counter()
    row = run_benchmark(config)[0]
    return {**row, "wall_images_per_s": row["samples"] / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", default=",".join(STRATEGIES.names()))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default=None, choices=("bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--fisher-samples", type=int, default=64)
    parser.add_argument("--select-all", action="store_true", help="entropy thresholds above ln 1000: every sample passes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_tree(Path(tmp), args.samples, "imagenet-c/gaussian_noise/5") / "imagenet-c"
        clean = write_tree(Path(tmp), args.fisher_samples, "clean") / "clean"
        measure("source", args, data, clean, samples=args.batch_size)  # warm-up, untimed
        rows = [measure(m, args, data, clean) for m in args.methods.split(",")]
    print(f"device {rows[0]['device']}, amp {args.amp or 'none'}, {args.samples} samples, batch {args.batch_size}, "
          f"edge resnet18, cloud resnet50, random weights, 224 px{', select-all' if args.select_all else ''}")
    print(f"{'method':<15}{'img/s':>8}{'wall img/s':>12}{'uploads':>9}")
    for row in rows:
        print(f"{row['method']:<15}{row['images_per_s']:>8.1f}{row['wall_images_per_s']:>12.1f}{row['uploads']:>9}")


if __name__ == "__main__":
    main()
