"""ImageNet-C at GPU speed: the paper's setting end to end on a generated JPEG tree (issue 27; not a test).

    python benchmarks/bench_gpu.py --methods tent,eata,cema                      # a GPU: R18 edge, R101 cloud, 4,096 images
    python benchmarks/bench_gpu.py --edges resnet18,resnet50 --methods all        # every method, both edges
    python benchmarks/bench_gpu.py --device cpu --images 128 --methods tent --threads 1        # CPU figures, small
    python benchmarks/bench_gpu.py --device cpu --images 512 --methods none --workers 2 --data-rounds 5   # the loader alone

The tree: ``--images`` clean 224-px images (smooth random colour fields, 100 ImageNet classes)
corrupted by ``cema corrupt``'s writer into ``<tree>/imagenet-c/gaussian_noise/5/<wnid>/*.JPEG``
at quality 85 (ImageNet-C's layout and quality; about 20-40 kB a file), plus the clean tree as
EATA's ``--clean-root``. Kept under ``--tree`` (default: a temporary folder) and reused.

The models: torchvision ResNets with random weights whose head is scaled so that ``--confident``
of the first batch (0.4 by default) falls below 0.4 ln 1000, the entropy gate of EATA and CEMA,
as a trained model's would: a random network is nearly uniform, and its filters would send
nothing to a backward pass. The scaled weights are written as checkpoints and loaded as such.

Per (edge, method), one untimed run records the model passes (bench_floor.py); then:

- ``e2e img/s``: images / wall time of the stream loop (run/api's ``stream_steps``: loader
  start, waiting for data, the steps, scoring, the channel);
- ``floor img/s``: images / time of the recorded model passes replayed alone (forwards and
  backwards, under the run's autocast; bench_floor.replay);
- ``data img/s``: images / time to read the domain through the run's loader and move it to the
  device, with no model;
- ``steady``: the same from the first batch's arrival on (the loader's start-up, paid once per
  domain, left out): the rate a 50,000-image domain runs at;
- ``wait``: the row's ``data_wait_seconds`` / the loop's wall time: the share of the loop spent
  waiting for the next batch (on a GPU: the GPU idles then, as every step ends by copying its
  predictions to the host); ``steady``: the same from the first batch's arrival on;
- ``peak MB``: torch.cuda.max_memory_allocated during the timed run (CUDA only);
- ``up``, ``bwd``: uploaded and backward samples per stream sample (what the filters let through);
- ``15x50k h``: hours for ImageNet-C's 15 x 50,000 images at the steady end-to-end rate.

``--data-rounds R`` also times the data path alone, interleaved round by round, with the run's
loader workers and in the main process (``--workers 0``). Load (/proc/loadavg) is printed: on a
shared machine read ratios.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_floor  # noqa: E402 - the recorder and replay of the model passes

from cema_cli.config import RunConfig  # noqa: E402
from cema_cli.corruptions.materialize import materialize  # noqa: E402
from cema_cli.data import open_dataset  # noqa: E402
from cema_cli.data.trees import imagenet_wnids  # noqa: E402
from cema_cli.models import ModelOptions, load_model  # noqa: E402
from cema_cli.run import api  # noqa: E402
from cema_cli.run.threads import loader_workers  # noqa: E402
from cema_cli.strategies import STRATEGIES  # noqa: E402
from cema_cli.strategies.common import entropy  # noqa: E402

SIDE, CLASSES, DOMAIN = 224, 100, ("gaussian_noise", 5)
IMAGENET_C_IMAGES = 15 * 50_000


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# --- the tree -----------------------------------------------------------------------------------

def clean_images(root: Path, first: int, stop: int) -> None:
    """Images first..stop-1: smooth random colour fields with pixel noise, 224 px, quality 95,
    spread over 100 wnid folders; image i depends on i only."""
    wnids = imagenet_wnids()[:: 1000 // CLASSES]
    for i in range(first, stop):
        generator = torch.Generator().manual_seed(i)
        field = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=SIDE, mode="bicubic")[0]
        pixels = (field * 200 + 28 + 12 * torch.randn(3, SIDE, SIDE, generator=generator)).clamp(0, 255).byte()
        path = root / wnids[i % CLASSES] / f"ILSVRC2012_val_{i:08d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(path, quality=95)


def jpeg_tree(root: Path, count: int) -> tuple[Path, Path]:
    """(the ImageNet-C tree, the clean tree), made once per size under ``root`` by a process
    per idle core: the clean images, then ``cema corrupt``'s writer."""
    clean, corrupted = root / f"clean-{count}", root / f"imagenet-c-{count}"
    if not (corrupted / DOMAIN[0] / str(DOMAIN[1])).is_dir():
        workers = loader_workers(True, 1)
        bounds = np.linspace(0, count, workers + 1).astype(int)
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.starmap(clean_images, [(clean, a, b) for a, b in zip(bounds[:-1], bounds[1:])])
        materialize(clean, corrupted, [DOMAIN[0]], [DOMAIN[1]], jpeg_quality=85, workers=workers, constants="imagenet")
    return corrupted, clean


# --- models with a trained model's confidence -----------------------------------------------------

def confidence_scale(logits: torch.Tensor, share: float, threshold: float) -> float:
    """s such that a ``share`` of the rows of softmax(s z) have entropy below ``threshold`` (each
    row's entropy falls as s grows): bisection on log s."""
    low, high = -8.0, 8.0
    for _ in range(60):
        middle = (low + high) / 2
        below = float((entropy(logits * math.exp(middle)) < threshold).float().mean())
        low, high = (low, middle) if below >= share else (middle, high)
    return math.exp(high)


def confident_checkpoint(arch: str, images: torch.Tensor, share: float, folder: Path) -> str:
    """A random-init torchvision ``arch`` with its head scaled to ``share`` confident samples
    (batch statistics, as the adapting methods see the first batch), saved as a state_dict."""
    path = folder / f"{arch}-confident{share}-{len(images)}.pt"
    if not path.is_file():
        torch.manual_seed(0)
        model = load_model(f"torchvision:{arch}", options=ModelOptions(random_init=True, num_classes=1000))
        with torch.no_grad():
            scale = confidence_scale(model.train()(images), share, 0.4 * math.log(1000))
            model.net.fc.weight.mul_(scale)
            model.net.fc.bias.mul_(scale)
        torch.save(model.net.state_dict(), path)
    return str(path)


def first_batch(tree: Path, size: int) -> torch.Tensor:
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(tree), corruptions=(DOMAIN[0],), severities=(DOMAIN[1],)))
    return next(iter(dataset.stream(*DOMAIN, 0, size, size)))[0]


# --- one measurement ---------------------------------------------------------------------------------

class Trace:
    """When the loop started, each batch arrived (and after how long a wait), and ended."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.arrivals: list[tuple[float, float, int]] = []  # (time, wait, images)

    def watch(self, batches):
        iterator = iter(batches)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            arrived = time.perf_counter()
            self.arrivals.append((arrived, arrived - asked, len(batch[1])))
            yield batch

    def steady(self) -> tuple[float, float]:
        """(images per second, share of the time waiting for data) from the first batch's
        arrival on, when every image is still to be processed: the loader's start-up, paid once
        per domain, left out."""
        span = self.end - self.arrivals[0][0]
        return sum(n for _, _, n in self.arrivals) / span, sum(w for _, w, _ in self.arrivals[1:]) / span


def timed_run(config: RunConfig) -> tuple[dict, Trace]:
    """(the row, the loop's trace) of one run, GPU peak memory reset first."""
    trace, original = Trace(), api.stream_steps

    def traced_steps(strategy, batches, *args, **kwargs):
        trace.start = time.perf_counter()
        try:
            return (yield from original(strategy, trace.watch(batches), *args, **kwargs))
        finally:
            trace.end = time.perf_counter()

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    api.stream_steps = traced_steps
    try:
        row = api.run_benchmark(config)[0]
    finally:
        api.stream_steps = original
    return row, trace


def data_path(config: RunConfig, device: torch.device) -> float:
    """Images per second through the run's loader onto ``device``, no model."""
    dataset = open_dataset(config, device.type, loader_workers)
    start, seen = time.perf_counter(), 0
    for images, _ in dataset.stream(*DOMAIN, config.seed, None, config.batch_size):
        images.to(device, non_blocking=True)
        seen += len(images)
    bench_floor.sync(device)
    return seen / (time.perf_counter() - start)


def measure(config: RunConfig, device: torch.device) -> dict[str, float]:
    passes, _ = bench_floor.record(config)  # also the warm-up
    row, trace = timed_run(config)
    floor_wall, _ = bench_floor.replay(passes, api.autocast_for(config.amp, device))
    samples, wall = row["samples"], trace.end - trace.start
    steady, steady_wait = trace.steady()
    return {
        "e2e": samples / wall, "floor": samples / floor_wall, "data": data_path(config, device), "steady": steady,
        "wait": row["data_wait_seconds"] / wall, "steady_wait": steady_wait,
        "peak": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else math.nan,
        "up": row["uploads"] / samples, "bwd": (row["edge_backward_samples"] + row["cloud_backward_samples"]) / samples,
        "workers": row["loader_workers"], "status": row["status"],
    }


# --- the report ------------------------------------------------------------------------------------

def base_config(args: argparse.Namespace, tree: Path, clean: Path, edge: str, checkpoints: dict[str, str]) -> RunConfig:
    options = {"eata": {"fisher_samples": min(2000, args.images)}}
    return RunConfig(
        methods=("source",), dataset="imagenet-c", data_root=str(tree), corruptions=(DOMAIN[0],), severities=(DOMAIN[1],),
        batch_size=args.batch_size, seed=0, device=args.device, amp=args.amp, channels_last=args.channels_last,
        edge=f"torchvision:{edge}", cloud=f"torchvision:{args.cloud}", edge_checkpoint=checkpoints[edge],
        cloud_checkpoint=checkpoints[args.cloud], clean_root=str(clean), workers=args.workers, method_options=options,
    )


HEADER = (f"{'edge':<10}{'method':<14}{'e2e img/s':>10}{'steady':>8}{'floor':>8}{'e2e/floor':>10}{'data':>8}{'wait':>6}"
          f"{'steady':>7}{'peak MB':>8}{'up':>6}{'bwd':>6}{'workers':>8}{'15x50k h':>9}  status")


def line(edge: str, method: str, r: dict[str, float]) -> str:
    hours = IMAGENET_C_IMAGES / r["steady"] / 3600
    return (f"{edge:<10}{method:<14}{r['e2e']:>10.1f}{r['steady']:>8.1f}{r['floor']:>8.1f}{r['e2e'] / r['floor']:>10.2f}{r['data']:>8.1f}"
            f"{r['wait']:>6.0%}{r['steady_wait']:>7.0%}{r['peak']:>8.0f}{r['up']:>6.2f}{r['bwd']:>6.2f}{r['workers']:>8.0f}{hours:>9.1f}  {r['status']}")


def compare_loaders(config: RunConfig, device: torch.device, rounds: int) -> None:
    """The data path alone with the run's workers and in the main process, interleaved."""
    pooled, single = [], []
    for _ in range(rounds):
        pooled.append(data_path(config, device))
        single.append(data_path(replace(config, workers=0), device))
    workers = config.workers if config.workers is not None else loader_workers(device.type != "cpu", torch.get_num_threads())
    print(f"data path alone, {rounds} interleaved rounds (median img/s): {workers} worker(s) {statistics.median(pooled):.1f}, "
          f"main process {statistics.median(single):.1f}, ratio {statistics.median(p / s for p, s in zip(pooled, single)):.2f}; load {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="all", help="comma-separated, 'all', or 'none' (the data path only)")
    parser.add_argument("--edges", default="resnet18", help="torchvision edge models, comma-separated (e.g. resnet18,resnet50)")
    parser.add_argument("--cloud", default="resnet101")
    parser.add_argument("--images", type=int, default=4096, help="images in the domain (and in the clean tree)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the run's policy)")
    parser.add_argument("--confident", type=float, default=0.4, help="share of the first batch below 0.4 ln 1000")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data-rounds", type=int, default=0, help="also compare the loader with the main process")
    parser.add_argument("--tree", type=Path, default=None, help="where the generated trees and checkpoints live (reused)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = api.resolve_device(args.device)
    methods = {"all": STRATEGIES.names(), "none": []}[args.methods] if args.methods in ("all", "none") else args.methods.split(",")
    edges = args.edges.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.tree or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        tree, clean = jpeg_tree(folder, args.images)
        sizes = [p.stat().st_size for p in (tree / DOMAIN[0] / str(DOMAIN[1])).rglob("*.JPEG")]
        print(f"tree {tree}: {len(sizes)} JPEGs, mean {np.mean(sizes) / 1024:.1f} kB (ready in {time.perf_counter() - start:.0f} s)")
        batch = first_batch(tree, args.batch_size) if methods else None
        checkpoints = {arch: confident_checkpoint(arch, batch, args.confident, folder) if methods else None for arch in {*edges, args.cloud}}
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"device {device} ({name}), amp {args.amp or 'none'}, channels_last {args.channels_last}, batch {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}, torch {torch.__version__}; load {load()}")
        if args.data_rounds:
            compare_loaders(base_config(args, tree, clean, edges[0], checkpoints), device, args.data_rounds)
        if methods:
            print(HEADER)
        for edge in edges if methods else []:
            config = base_config(args, tree, clean, edge, checkpoints)
            for method in methods:
                print(line(edge, method, measure(replace(config, methods=(method,)), device)), flush=True)
    print(f"cloud {args.cloud}; load at end {load()}")


if __name__ == "__main__":
    main()
