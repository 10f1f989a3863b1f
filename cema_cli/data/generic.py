"""Datasets read from --data-root, and the two generic ones (shared/spec/data.md):

- ``folder``: any clean ImageFolder-style tree ``<root>/<class>/<file>``;
- ``npy``: a clean ``images.npy`` (uint8, (N, H, W, 3)) with ``labels.npy`` beside it;

both with corruptions generated on the fly by the corruption library, the constants set chosen
by the image size (``constants_for_size``) unless ``--constants`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cema_cli import corruptions
from cema_cli.data.base import DomainInfo, chosen_order, source_of, stream_order
from cema_cli.data.loading import (
    DEFAULT_OPTIONS,
    UNREADABLE,
    Collate,
    Corruption,
    DataOptions,
    ImageItems,
    LoaderStream,
    NpyItems,
    collect,
)
from cema_cli.data.trees import (
    choose_subset,
    class_files,
    describe,
    imagenet_index,
    require_root,
    subfolders,
    unknown_wnids,
)
from cema_cli.errors import CemaError

FOLDER_LAYOUT = "<root>/<class>/<file> (an ImageFolder tree, e.g. n01440764/ILSVRC2012_val_00000293.JPEG)"
NPY_LAYOUT = "<root>/images.npy (uint8, N x H x W x 3) and <root>/labels.npy (N integer labels)"
IMAGENET_SIDE = 224  # resize 256, center crop 224: the ImageNet evaluation convention


@dataclass(frozen=True)
class ResizeCrop:
    """Resize the shorter side to ``resize`` (bilinear, PIL), then center-crop ``crop`` x ``crop``."""

    resize: int
    crop: int

    def __call__(self, image: Image.Image) -> Image.Image:
        from torchvision.transforms import functional as F

        if min(image.size) != self.resize:
            image = F.resize(image, self.resize)
        return image if image.size == (self.crop, self.crop) else F.center_crop(image, self.crop)


IMAGENET_CROP = ResizeCrop(256, IMAGENET_SIDE)


class OnDiskDataset:
    """What every dataset read from --data-root shares: options, defaults, EATA's clean set."""

    on_disk = True
    corruption_source = "files"
    constants = ""
    default_edge: str | None = None
    default_cloud: str | None = None
    class_subset: tuple[int, ...] | None = None  # logits kept (indices into the model's classes)
    num_classes: int
    name: str

    def __init__(self, options: DataOptions, constants: str | None) -> None:
        self.options = options
        if constants is not None and self.corruption_source == "files":
            raise CemaError(f"--constants applies to generated corruptions; {self.name} reads the published files. Drop it.")

    @property
    def model_classes(self) -> int:
        """How many logits the model must produce (1,000 when a class subset is kept)."""
        return 1000 if self.class_subset is not None else self.num_classes

    def check_domain(self, corruption: str, severity: int) -> None:
        """Raise a CemaError naming what is missing for this domain (generated: nothing)."""

    def domain_info(self, corruption: str, severity: int, samples: int) -> DomainInfo:
        return DomainInfo(corruption, severity, samples, source_of(self.corruption_source, corruption), self.constants)

    def clean_samples(self, count: int, seed: int = 0) -> torch.Tensor:
        """EATA's Fisher set: ``count`` clean images from --clean-root (a class tree or an npy pair)."""
        if self.options.clean_root is None:
            raise CemaError(f"EATA needs clean in-distribution images for its Fisher regulariser: pass --clean-root "
                            f"(a clean {FOLDER_LAYOUT}, e.g. ImageNet val, or {NPY_LAYOUT}), or use method 'eta', which needs none.")
        clean = open_clean(self.options.clean_root)
        order = stream_order(clean.items_count(), seed)[:count]
        return collect(LoaderStream(clean.items(), order, 64, Collate(), self.options))


@dataclass(frozen=True)
class ClassTree:
    """``<root>/<class>/<file>``: class names sorted, files sorted, labels = class positions."""

    root: Path
    classes: list[str]
    files: list[str]

    @classmethod
    def read(cls, root: Path, dataset: str, layout: str) -> ClassTree:
        classes = [p.name for p in subfolders(root)]
        files = class_files(root, classes) if classes else []
        if not files:
            raise CemaError(f"{root} does not look like {dataset}: expected {layout}; found {describe(root)}.")
        used = sorted({f.split("/")[0] for f in files})
        return cls(root, used, files)

    def labels(self, files: Iterable[str]) -> list[int]:
        position = {c: i for i, c in enumerate(self.classes)}
        return [position[f.split("/")[0]] for f in files]

    def imagenet_subset(self) -> tuple[int, ...] | None:
        """Indices of the classes among the 1,000 ImageNet wnids when every class is a wnid."""
        if unknown_wnids(self.classes):
            return None
        return tuple(imagenet_index()[c] for c in self.classes)


def first_side(root: Path, files: list[str]) -> int:
    """The shorter side of the first readable image (the size of a folder dataset)."""
    for name in files[:20]:
        try:
            with Image.open(root / name) as image:
                return min(image.size)
        except UNREADABLE:
            continue
    raise CemaError(f"none of the first images under {root} can be read (e.g. {files[0]}); check the files.")


class FolderDataset(OnDiskDataset):
    """A clean class tree with generated corruptions. Images are brought to one square size: 224
    (resize 256, center crop 224) when the first image is at least 224 px, else the first image's
    shorter side. Wnid class folders map to ImageNet indices (logits restricted to them)."""

    name = "folder"
    corruption_source = "generated"

    def __init__(self, constants: str | None = None, corruption_seed: int = 0, data_root: str | None = None, options: DataOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(options, constants)
        tree = ClassTree.read(require_root(data_root, self.name, FOLDER_LAYOUT), self.name, FOLDER_LAYOUT)
        self.tree, self.corruption_seed = tree, corruption_seed
        self.files = choose_subset(tree.files, options.subset, options.seed, tree.root)
        self.num_classes = len(tree.classes)
        self.side = min(first_side(tree.root, self.files), IMAGENET_SIDE)
        self.prepare = IMAGENET_CROP if self.side == IMAGENET_SIDE else ResizeCrop(self.side, self.side)
        self.constants = constants or corruptions.constants_for_size(self.side)
        subset = tree.imagenet_subset()
        if subset is not None:
            self.class_subset = None if len(subset) == 1000 else subset
            self.default_edge, self.default_cloud = "torchvision:resnet18", "torchvision:resnet101"

    def domain_size(self, corruption: str, severity: int) -> int:
        return len(self.files)

    def domain_labels(self, corruption: str, severity: int) -> list[int]:
        return self.tree.labels(self.files)

    def stream(self, corruption: str, severity: int, seed: int, samples: int | None, batch_size: int, order: list[int] | None = None) -> LoaderStream:
        items = ImageItems([self.tree.root / f for f in self.files], self.tree.labels(self.files), self.prepare)
        return generated_stream(self, items, corruption, severity, seed, samples, batch_size, order)


def generated_stream(dataset, items, corruption: str, severity: int, seed: int, samples: int | None, batch_size: int,
                     order: list[int] | None = None) -> LoaderStream:
    """The seeded stream of a clean dataset with the corruption generated in the loader workers."""
    corrupt = None if corruption == "none" else Corruption(corruption, severity, dataset.corruption_seed, dataset.constants)
    return LoaderStream(items, chosen_order(len(items), seed, samples, order), batch_size, Collate(corrupt), dataset.options)


@dataclass(frozen=True)
class NpyPair:
    """A uint8 image array and its labels, checked once; the images stay memory-mapped."""

    images: Path
    labels: np.ndarray
    side: int

    @classmethod
    def read(cls, images: Path, labels: Path, dataset: str) -> NpyPair:
        if not images.is_file() or not labels.is_file():
            raise CemaError(f"{images.parent} does not look like {dataset}: expected {NPY_LAYOUT}; found {describe(images.parent)}.")
        array = load_npy(images, mmap_mode="r")
        hwc = array.ndim == 4 and array.shape[-1] == 3
        if array.dtype != np.uint8 or not (hwc or (array.ndim == 4 and array.shape[1] == 3)):
            raise CemaError(f"{images} holds {array.dtype} {array.shape}; expected uint8 images (N, H, W, 3).")
        values = load_npy(labels).astype(np.int64).reshape(-1)
        if len(values) != len(array):
            raise CemaError(f"{labels} has {len(values)} labels but {images.name} has {len(array)} images; they must match.")
        return cls(images, values, int(array.shape[1] if hwc else array.shape[2]))

    def items(self, start: int = 0, stop: int | None = None) -> NpyItems:
        return NpyItems(self.images, start, self.labels[start:stop].tolist())


def load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """np.load, with a truncated or foreign file (or a pickle, never loaded) as a CemaError."""
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (ValueError, OSError, EOFError) as error:
        raise CemaError(f"cannot read {path} as a NumPy array ({' '.join(str(error).split())}); "
                        "is it truncated? save it again with np.save.") from None


def npy_paths(root: Path) -> tuple[Path, Path]:
    """``<root>/images.npy`` and ``labels.npy``, or ``<file>.npy`` with ``labels.npy`` beside it."""
    if root.is_file() and root.suffix == ".npy":
        return root, root.parent / "labels.npy"
    return root / "images.npy", root / "labels.npy"


class NpyDataset(OnDiskDataset):
    """A clean ``.npy`` image array and labels with generated corruptions."""

    name = "npy"
    corruption_source = "generated"

    def __init__(self, constants: str | None = None, corruption_seed: int = 0, data_root: str | None = None, options: DataOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(options, constants)
        if data_root is None:
            raise CemaError(f"dataset 'npy' reads files: pass --data-root PATH holding {NPY_LAYOUT}.")
        if options.subset is not None:
            raise CemaError("--subset applies to image-folder datasets; for npy use --samples (a seeded prefix of the stream).")
        self.pair = NpyPair.read(*npy_paths(Path(data_root).expanduser()), self.name)
        self.corruption_seed = corruption_seed
        self.num_classes = int(self.pair.labels.max()) + 1
        self.constants = constants or corruptions.constants_for_size(self.pair.side)

    def domain_size(self, corruption: str, severity: int) -> int:
        return len(self.pair.labels)

    def domain_labels(self, corruption: str, severity: int) -> list[int]:
        return self.pair.labels.tolist()

    def stream(self, corruption: str, severity: int, seed: int, samples: int | None, batch_size: int, order: list[int] | None = None) -> LoaderStream:
        return generated_stream(self, self.pair.items(), corruption, severity, seed, samples, batch_size, order)


class CleanSet:
    """A clean image set for EATA's Fisher: a class tree (ImageNet-style crop) or an npy pair."""

    def __init__(self, root: Path) -> None:
        self.pair = NpyPair.read(*npy_paths(root), "a clean npy pair") if npy_paths(root)[0].is_file() else None
        self.tree = None if self.pair else ClassTree.read(root, "a clean image set", f"{FOLDER_LAYOUT}, or {NPY_LAYOUT}")

    def items_count(self) -> int:
        return len(self.pair.labels) if self.pair else len(self.tree.files)

    def items(self):
        if self.pair:
            return self.pair.items()
        side = min(first_side(self.tree.root, self.tree.files), IMAGENET_SIDE)
        prepare = IMAGENET_CROP if side == IMAGENET_SIDE else ResizeCrop(side, side)
        return ImageItems([self.tree.root / f for f in self.tree.files], self.tree.labels(self.tree.files), prepare)


def open_clean(clean_root: str) -> CleanSet:
    root = Path(clean_root).expanduser()
    if not root.exists():
        raise CemaError(f"--clean-root {root} does not exist; give a clean {FOLDER_LAYOUT} or {NPY_LAYOUT}.")
    return CleanSet(root)
