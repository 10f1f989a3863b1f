"""Streams of on-disk datasets (shared/spec/data.md, "Formats users have on disk").

A torch DataLoader reads and decodes one domain in the seeded stream order, in worker processes
(their number from the cores, threads.loader_workers, unless --workers says), each keeping two
batches ready, into pinned memory when the run is on CUDA. Generated corruptions run where the
models run: in the workers on the CPU; on a GPU, in the main process on the batch just moved to
the device (the corruption library works on device tensors; its bytes can differ from the CPU's
by a level where float32 arithmetic rounds differently). The order never depends on the workers.
Memory stays bounded whatever the domain size: only the batches in flight are held, and ``.npy``
files are memory-mapped. An unreadable or truncated image is skipped with a
:class:`SkippedImageWarning` and counted in ``LoaderStream.skipped`` (the ``skipped_images``
column of the results).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cema_cli import corruptions

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# One item of a domain: (uint8 CHW image or None, label, index in the domain, why it was skipped).
Item = tuple[torch.Tensor | None, int, int, str]


class SkippedImageWarning(UserWarning):
    """An image of a stream could not be read and was skipped (and counted)."""


@dataclass(frozen=True)
class DataOptions:
    """How on-disk datasets are read; built from the run config (see ``open_dataset``)."""

    subset: str | None = None  # a count (seeded choice) or a file listing <wnid>/<file> paths
    clean_root: str | None = None  # clean in-distribution images for EATA's Fisher set
    workers: int | None = None  # DataLoader worker processes; None: worker_policy's choice
    device: str = "cpu"  # the device type the models run on: "cuda" pins memory and corrupts there
    seed: int = 0  # the run seed: fixes the subset choice
    corrupt_on: str = "auto"  # generated corruptions: "workers" (CPU), a device ("cuda", "cpu": the main process), auto
    # (models on an accelerator?, torch threads) -> workers when --workers is not given: the run
    # passes run/threads.py's loader_workers; without a policy a stream reads in the main process
    worker_policy: Callable[[bool, int], int] | None = None

    @property
    def pin_memory(self) -> bool:
        return self.device == "cuda"

    @property
    def corruption_place(self) -> str:
        """auto: on CUDA when the models run there, else in the loader workers."""
        if self.corrupt_on != "auto":
            return self.corrupt_on
        return "cuda" if self.device == "cuda" else "workers"

    @property
    def corruption_device(self) -> str:
        """The device type that computes generated corruptions (a results column)."""
        return "cpu" if self.corruption_place == "workers" else self.corruption_place

    def worker_count(self) -> int:
        """--workers, else the policy's count for this process now (decided per stream)."""
        if self.workers is not None:
            return self.workers
        return self.worker_policy(self.device != "cpu", torch.get_num_threads()) if self.worker_policy else 0


DEFAULT_OPTIONS = DataOptions()


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def jpeg_components(data: bytes) -> int | None:
    """The number of colour components in a JPEG's frame header (SOFn); None when ``data`` is
    not a JPEG or the header is not found before the data ends."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before the marker
            i += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            return data[i + 9]
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def decode_colour_jpeg(path: Path) -> torch.Tensor | None:
    """A 3-component (YCbCr or RGB) JPEG that ends in its EOI marker, decoded by OpenCV's
    libjpeg-turbo into uint8 (3, H, W): Pillow's pixels (the same library, default IDCT and
    upsampling; tested) at about 1.7x the speed (benchmarks/bench_decode.py). None for anything
    else (grey, CMYK, truncated, unreadable), which Pillow then decodes or refuses with its own
    message."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if jpeg_components(data) != 3 or not data.endswith(b"\xff\xd9"):
        return None
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.shape[2:] != (3,):
        return None
    planes = np.empty((3, *bgr.shape[:2]), dtype=np.uint8)
    for plane, channel in zip(cv2.split(bgr), (2, 1, 0)):
        planes[channel] = plane
    return torch.from_numpy(planes)


class ImageItems(torch.utils.data.Dataset):
    """Image files with their labels; ``prepare`` (PIL -> PIL, e.g. resize and crop) is optional.
    Colour JPEGs read as they are (ImageNet-C) take the faster decoder of ``decode_colour_jpeg``."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], prepare: Callable | None = None) -> None:
        self.paths, self.labels, self.prepare = list(paths), list(labels), prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Item:
        path = self.paths[i]
        fast = decode_colour_jpeg(path) if self.prepare is None and path.suffix.lower() in (".jpeg", ".jpg") else None
        if fast is not None:
            return fast, self.labels[i], i, ""
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                return to_tensor(self.prepare(image) if self.prepare else image), self.labels[i], i, ""
        except UNREADABLE as error:
            return None, self.labels[i], i, f"{path}: {error}"


class NpyItems(torch.utils.data.Dataset):
    """Rows [start, start + len(labels)) of a uint8 .npy image array, (N, H, W, 3) or (N, 3, H, W).
    The file is memory-mapped on first use in each process, so it is never loaded whole."""

    def __init__(self, path: Path, start: int, labels: Sequence[int]) -> None:
        self.path, self.start, self.labels = path, start, list(labels)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Item:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        row = torch.from_numpy(np.array(self._array[self.start + i], dtype=np.uint8))
        image = row.permute(2, 0, 1).contiguous() if row.shape[-1] == 3 else row
        return image, self.labels[i], i, ""


@dataclass(frozen=True)
class Corruption:
    """A generated corruption (cema_cli.corruptions); sample i's noise depends on its domain index
    only, so the images do not depend on the batching, the order or the worker."""

    name: str
    severity: int
    seed: int
    constants: str

    def __call__(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return corruptions.corrupt(images, self.name, self.severity, seed=self.seed, indices=indices, constants=self.constants)


# A collated batch: uint8 images, int64 labels, the images' indices in the domain, skip reasons.
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]


class Collate:
    """Items -> a Batch, the corruption applied when one is given; runs in the workers."""

    def __init__(self, corruption: Corruption | None = None) -> None:
        self.corruption = corruption

    def __call__(self, items: list[Item]) -> Batch:
        good = [item for item in items if item[0] is not None]
        skipped = [item[3] for item in items if item[0] is None]
        if good:
            shape = good[0][0].shape
            skipped += [f"image {i} of the domain is {tuple(x.shape)}, not {tuple(shape)} as the batch" for x, _, i, _ in good if x.shape != shape]
            good = [item for item in good if item[0].shape == shape]
        if not good:
            return torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped
        images, indices = torch.stack([item[0] for item in good]), torch.tensor([item[2] for item in good])
        if self.corruption is not None:
            images = self.corruption(images, indices)
        return images, torch.tensor([item[1] for item in good], dtype=torch.long), indices, skipped


PREFETCH_BATCHES = 2  # batches each worker keeps ready (the DataLoader's default)


def worker_context() -> Any:
    """Where loader workers start: from a fork server, never by forking this process. A fork
    copies OpenCV's thread pool (this process decodes and corrupts with cv2 too) in a state in
    which the child's first cv2 call waits forever. The server preloads torch and this module,
    so a worker starts in a fraction of a second; where there is no fork server, spawn."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "cema_cli.data.loading", "cema_cli.corruptions"])
    return context


class LoaderStream:
    """The batches of one domain in ``order``; iterate once. ``skipped`` counts unreadable images,
    ``workers`` the loader processes the stream ran with (decided when it starts)."""

    def __init__(self, items: torch.utils.data.Dataset, order: torch.Tensor, batch_size: int, collate: Collate, options: DataOptions) -> None:
        self.items, self.order, self.batch_size, self.collate, self.options = items, order, batch_size, collate, options
        self.skipped = 0
        self.workers: int | None = None
        self.share = 1  # streams read side by side (a mixed leg's domains) split the workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        total = self.options.worker_count()
        self.workers = max(1, total // self.share) if total else 0
        on_device = self.collate.corruption is not None and self.options.corruption_place != "workers"
        loader = torch.utils.data.DataLoader(
            self.items, batch_size=self.batch_size, sampler=self.order.tolist(), collate_fn=Collate() if on_device else self.collate,
            num_workers=self.workers, pin_memory=self.options.pin_memory, prefetch_factor=PREFETCH_BATCHES if self.workers else None,
            multiprocessing_context=worker_context() if self.workers else None,
        )
        for images, labels, indices, skipped in loader:
            self._skip(skipped)
            if len(labels):
                yield (self.corrupt_on_device(images, indices) if on_device else images), labels

    def corrupt_on_device(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The batch moved to the models' device and corrupted there (the same per-sample
        randomness as in a worker: it depends on the domain indices only)."""
        images = images.to(self.options.corruption_place, non_blocking=self.options.pin_memory)
        return self.collate.corruption(images, indices)

    def _skip(self, reasons: list[str]) -> None:
        for reason in reasons:
            warnings.warn(f"skipped an unreadable image: {reason}", SkippedImageWarning, stacklevel=3)
        self.skipped += len(reasons)


def collect(stream: LoaderStream) -> torch.Tensor:
    """Every image of a (short) stream in one tensor, e.g. EATA's clean Fisher set."""
    return torch.cat([images for images, _ in stream]) if len(stream.order) else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
