"""The data path that feeds a GPU (issue 27): JPEG decoding, loader workers, streaming without
holding a domain, generated corruptions on the models' device, and what the rows record."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cema_cli.config import RunConfig
from cema_cli.data import open_dataset
from cema_cli.data.loading import PREFETCH_BATCHES, DataOptions, ImageItems, decode_colour_jpeg, jpeg_components, worker_context
from cema_cli.data.streams import Leg, MixedStream

WNIDS = ["n01440764", "n01443537", "n02123045"]


def noisy_jpeg(path: Path, seed: int, side: int = 24, subsampling: int = 2) -> None:
    """A random colour image at quality 85 (ImageNet-C's), 4:2:0 unless said otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=85, subsampling=subsampling)


def imagenet_c(root: Path, per_class: int = 5, domains=(("gaussian_noise", 5),)) -> Path:
    for k, (corruption, severity) in enumerate(domains):
        for c, wnid in enumerate(WNIDS):
            for i in range(per_class):
                noisy_jpeg(root / corruption / str(severity) / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", 100 * k + 10 * c + i)
    return root


def batches_of(stream) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in stream]


def pillow_tensor(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


# --- decoding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
def test_the_fast_jpeg_decoder_gives_pillows_bytes(tmp_path, subsampling):
    for seed in range(3):
        path = tmp_path / f"{seed}.JPEG"
        noisy_jpeg(path, seed, side=37, subsampling=subsampling)
        assert torch.equal(decode_colour_jpeg(path), pillow_tensor(path))


def test_grey_cmyk_truncated_and_foreign_files_are_left_to_pillow(tmp_path):
    for mode, value in (("L", 7), ("CMYK", (10, 200, 30, 40))):
        buffer = io.BytesIO()
        Image.new(mode, (16, 16), value).save(buffer, "JPEG")
        (tmp_path / f"{mode}.jpg").write_bytes(buffer.getvalue())
        assert jpeg_components(buffer.getvalue()) == len(mode)
        assert decode_colour_jpeg(tmp_path / f"{mode}.jpg") is None
    whole = tmp_path / "whole.JPEG"
    noisy_jpeg(whole, 0)
    (tmp_path / "cut.JPEG").write_bytes(whole.read_bytes()[:-300])
    (tmp_path / "text.JPEG").write_bytes(b"not an image")
    assert decode_colour_jpeg(tmp_path / "cut.JPEG") is None and decode_colour_jpeg(tmp_path / "text.JPEG") is None
    items = ImageItems([tmp_path / "CMYK.jpg", tmp_path / "cut.JPEG"], [0, 1])
    assert torch.equal(items[0][0], pillow_tensor(tmp_path / "CMYK.jpg"))  # Pillow's own conversion
    assert items[1][0] is None and "truncated" in items[1][3]


# --- workers, order, streaming ---------------------------------------------------------------------

def test_the_worker_path_yields_the_single_process_batches(tmp_path):
    root = imagenet_c(tmp_path / "c")
    single = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), workers=0)).stream("gaussian_noise", 5, 3, None, 4)
    pooled = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), workers=2)).stream("gaussian_noise", 5, 3, None, 4)
    one, many = batches_of(single), batches_of(pooled)
    assert (single.workers, pooled.workers) == (0, 2) and len(one) == 4  # 15 images: 4, 4, 4, 3
    assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(one, many, strict=True))
    order = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), workers=0)).stream("gaussian_noise", 5, 4, None, 4)
    assert not torch.equal(torch.cat([b for b, _ in batches_of(order)]), torch.cat([b for b, _ in one]))  # the seed orders


class CountedItems(ImageItems):
    """ImageItems that count, across the worker processes, the images read so far."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.read = worker_context().Value("i", 0)  # in the workers' own start context

    def __getitem__(self, i: int):
        with self.read.get_lock():
            self.read.value += 1
        return super().__getitem__(i)


@pytest.mark.parametrize(("workers", "subset", "images"), [(0, None, 36), (2, None, 36), (2, "21", 21)])
def test_a_domain_streams_with_only_the_batches_in_flight_read(tmp_path, workers, subset, images):
    """The whole domain or a --subset: never more images read than those taken plus the
    batches the loader keeps ready."""
    root = imagenet_c(tmp_path / "c", per_class=12)
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), workers=workers, subset=subset))
    stream = dataset.stream("gaussian_noise", 5, 0, None, 3)
    stream.items = CountedItems(stream.items.paths, stream.items.labels)
    in_flight = max(1, workers * PREFETCH_BATCHES)  # batches the loader may hold beyond those taken
    most = 0
    for taken, _ in enumerate(stream, start=1):
        most = max(most, stream.items.read.value - 3 * taken)
        assert stream.items.read.value <= 3 * (taken + in_flight)
    assert stream.items.read.value == images and most <= 3 * in_flight


def test_a_mixed_legs_domains_share_one_worker_pool(tmp_path):
    domains = (("gaussian_noise", 5), ("snow", 5), ("fog", 5))
    root = imagenet_c(tmp_path / "c", per_class=2, domains=domains)
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), workers=3, corruptions=("gaussian_noise", "snow", "fog")))
    order = [(d, i) for i in range(6) for d in range(3)]
    stream = MixedStream(dataset, Leg(domains, order, reset=True, segment=0, mixed=True), seed=0, batch_size=4)
    assert sum(len(labels) for _, labels, _ in stream) == 18
    assert [s.workers for s in stream.sources] == [1, 1, 1] and stream.workers == 3


# --- generated corruptions on the models' device -------------------------------------------------

def test_corrupting_in_the_main_process_gives_the_worker_bytes(tmp_path):
    """What a GPU run does (the batch moved to the device, corrupted there), run on the CPU:
    the bytes equal the loader workers' (per-sample randomness from the domain index only)."""
    root = tmp_path / "npy"
    root.mkdir()
    np.save(root / "images.npy", np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.arange(10) % 3)
    dataset = open_dataset(RunConfig(dataset="npy", data_root=str(root), workers=2))
    for corruption in ("gaussian_noise", "glass_blur", "jpeg_compression"):
        in_workers = batches_of(dataset.stream(corruption, 3, 0, None, 4))
        dataset.options = DataOptions(workers=2, corrupt_on="cpu")
        in_main = batches_of(dataset.stream(corruption, 3, 0, None, 4))
        dataset.options = DataOptions(workers=2)
        assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(in_workers, in_main, strict=True))


def test_where_corruptions_run_follows_the_models_device():
    assert DataOptions(device="cuda").corruption_place == "cuda" and DataOptions(device="cuda").pin_memory
    assert DataOptions(device="cpu").corruption_place == "workers" and not DataOptions().pin_memory
    assert DataOptions(device="mps").corruption_device == "cpu"  # the corruption library is tested on CUDA and the CPU
    assert DataOptions(corrupt_on="cpu").corruption_device == "cpu"


# --- rows ------------------------------------------------------------------------------------------

def test_rows_record_the_loader_the_precision_and_the_wait(cli, tmp_path):
    root = imagenet_c(tmp_path / "c", per_class=4)
    out = tmp_path / "run"
    args = ["bench", "--method", "tent", "--dataset", "imagenet-c", "--data-root", str(root), "--edge", "timm:resnet10t",
            "--cloud", "timm:resnet10t", "--random-init", "--input-size", "32", "--batch-size", "4", "--device", "cpu",
            "--workers", "2", "--amp", "bf16", "--out", str(out)]
    assert cli(*args).exit_code == 0
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert (row["loader_workers"], row["amp"], row["amp_dtype"], row["loss_scaling"], row["channels_last"]) == (2, "bf16", "bfloat16", "none", False)
    assert pd.isna(row["corruption_device"]) and 0 < row["data_wait_seconds"] and row["status"] == "ok"


def test_without_workers_given_the_runs_policy_decides_per_stream():
    asked = []
    policy = lambda accelerator, threads: asked.append((accelerator, threads)) or 3  # noqa: E731
    assert DataOptions(device="cuda", worker_policy=policy).worker_count() == 3 and asked == [(True, torch.get_num_threads())]
    assert DataOptions(workers=1, worker_policy=policy).worker_count() == 1 and len(asked) == 1
    assert DataOptions().worker_count() == 0  # no policy (a dataset opened outside a run): the main process reads


def test_the_loop_counts_the_time_it_waits_for_each_batch_and_shares_it_by_domain():
    from cema_cli.run.engine import run_stream

    def slow_batches():
        for _ in range(3):
            time.sleep(0.05)  # at least this long: the wait is a lower bound, not a speed
            yield torch.zeros(4, 3, 4, 4, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 0, 1])

    class Step:
        def step(self, images):
            return torch.zeros(len(images), 2)

    class Ticks:
        def tick(self):
            pass

    tally = run_stream(Step(), slow_batches(), Ticks(), torch.device("cpu"))
    assert tally.wait_seconds >= 0.15
    assert tally.parts[0].wait_seconds == pytest.approx(0.75 * tally.wait_seconds)
    assert tally.parts[0].wait_seconds + tally.parts[1].wait_seconds == pytest.approx(tally.wait_seconds)


def test_loader_workers_never_start_as_a_fork_of_the_run():
    """A fork copies the run's OpenCV and OpenMP thread pools in a state in which the child's
    first cv2 call can wait forever (the full suite hung there): workers come from a fork
    server (spawn where there is none), with torch and the corruptions preloaded."""
    import multiprocessing

    context = worker_context()
    assert context.get_start_method() == ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
