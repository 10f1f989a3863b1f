"""The published benchmark files, read as they are distributed (shared/spec/data.md):

- ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/<file>.JPEG``, no resize or crop;
- ImageNet-R: ``<root>/<wnid>/<file>`` for 200 of the 1,000 classes, resize 256, center crop 224,
  logits restricted to those classes;
- CIFAR-10-C and CIFAR-100-C: ``<root>/<corruption>.npy`` (severity k in rows [(k-1)n, kn), n = rows / 5) and
  ``<root>/labels.npy``.
"""

from __future__ import annotations

from pathlib import Path

from cema_cli import corruptions
from cema_cli.data.base import chosen_order
from cema_cli.data.generic import IMAGENET_CROP, PAPER_CLOUD, PAPER_EDGE, ClassTree, NpyPair, OnDiskDataset
from cema_cli.data.loading import (
    DEFAULT_OPTIONS,
    Collate,
    DataOptions,
    ImageItems,
    LoaderStream,
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

IMAGENET_C_LAYOUT = "<root>/<corruption>/<severity>/<wnid>/<file>.JPEG (e.g. gaussian_noise/5/n01440764/ILSVRC2012_val_00000293.JPEG)"
IMAGENET_R_LAYOUT = "<root>/<wnid>/<file> (200 wnid folders, e.g. n01443537/art_0.jpg)"
CIFAR_C_LAYOUT = "<root>/<corruption>.npy (uint8, 50000 x 32 x 32 x 3) and <root>/labels.npy"


def names_found(folder: Path, suffix: str = "") -> str:
    """The corruption folders (or ``.npy`` files) present, for 'missing' messages."""
    stems = [p.name.removesuffix(suffix) for p in folder.iterdir() if p.name.endswith(suffix)]
    return ", ".join(sorted(s for s in stems if s in corruptions.ALL)) or "none"


class ImageNetC(OnDiskDataset):
    """ImageNet-C as published; the 4 extra corruptions are read like the 15 common ones. The
    paper's setting is the default: ResNet-18 edge, ResNet-101 cloud (torchvision weights)."""

    name = "imagenet-c"
    num_classes = 1000
    preset = "imagenet"
    default_edge, default_cloud = PAPER_EDGE, PAPER_CLOUD

    def __init__(self, constants: str | None = None, corruption_seed: int = 0, data_root: str | None = None, options: DataOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(options, constants)
        self.root = require_root(data_root, self.name, IMAGENET_C_LAYOUT)
        if names_found(self.root) == "none":
            classes = [p.name for p in subfolders(self.root)]
            hint = " It looks like a class tree: use --dataset imagenet-r or folder." if classes and not unknown_wnids(classes) else ""
            raise CemaError(f"{self.root} does not look like ImageNet-C: expected {IMAGENET_C_LAYOUT}; found {describe(self.root)}.{hint}")
        self._domain: tuple[tuple[str, int], list[str]] | None = None  # one domain's file list at a time

    def check_domain(self, corruption: str, severity: int) -> None:
        self.domain_folder(corruption, severity)

    def domain_folder(self, corruption: str, severity: int) -> Path:
        if not (self.root / corruption).is_dir():
            raise CemaError(f"ImageNet-C corruption folder {corruption!r} is missing under {self.root} "
                            f"(found: {names_found(self.root)}); add it or drop it from --corruption.")
        folder = self.root / corruption / str(severity)
        if not folder.is_dir():
            raise CemaError(f"ImageNet-C severity folder {folder} is missing (found: {describe(folder.parent)}); "
                            "add it or change --severity.")
        return folder

    def files(self, corruption: str, severity: int) -> list[str]:
        """The domain's ``<wnid>/<file>`` paths (sorted, subset applied)."""
        if self._domain is None or self._domain[0] != (corruption, severity):
            folder = self.domain_folder(corruption, severity)
            wnids = [p.name for p in subfolders(folder)]
            bad = unknown_wnids(wnids)
            if bad or not wnids:
                raise CemaError(f"{folder} should hold ImageNet wnid folders ({IMAGENET_C_LAYOUT}); found {describe(folder)}"
                                + (f", of which {', '.join(bad[:3])} are not ImageNet wnids." if bad else "."))
            self._domain = ((corruption, severity), choose_subset(class_files(folder, wnids), self.options.subset, self.options.seed, folder))
        return self._domain[1]

    def domain_size(self, corruption: str, severity: int) -> int:
        return len(self.files(corruption, severity))

    def domain_labels(self, corruption: str, severity: int) -> list[int]:
        index = imagenet_index()
        return [index[f.split("/")[0]] for f in self.files(corruption, severity)]

    def stream(self, corruption: str, severity: int, seed: int, samples: int | None, batch_size: int, order: list[int] | None = None) -> LoaderStream:
        """Images as they are (224 x 224), labels = positions of the wnids among the 1,000."""
        files, folder = self.files(corruption, severity), self.root / corruption / str(severity)
        items = ImageItems([folder / f for f in files], self.domain_labels(corruption, severity))
        return LoaderStream(items, chosen_order(len(files), seed, samples, order), batch_size, Collate(), self.options)


class ImageNetR(OnDiskDataset):
    """ImageNet-R: one domain (the renditions), run as ``--corruption none``. Labels are positions
    among the dataset's own wnids; ``class_subset`` keeps those wnids' logits of a 1,000-class model."""

    name = "imagenet-r"
    preset = "imagenet"
    default_edge, default_cloud = PAPER_EDGE, PAPER_CLOUD

    def __init__(self, constants: str | None = None, corruption_seed: int = 0, data_root: str | None = None, options: DataOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(options, constants)
        root = require_root(data_root, self.name, IMAGENET_R_LAYOUT)
        bad = unknown_wnids([p.name for p in subfolders(root)])
        if bad:
            raise CemaError(f"{root} does not look like ImageNet-R: expected {IMAGENET_R_LAYOUT}; found {describe(root)}, "
                            f"and {', '.join(bad[:3])} are not ImageNet wnids.")
        self.tree = ClassTree.read(root, self.name, IMAGENET_R_LAYOUT)
        self.files = choose_subset(self.tree.files, options.subset, options.seed, root)
        self.num_classes = len(self.tree.classes)
        self.class_subset = self.tree.imagenet_subset()

    def domain_size(self, corruption: str, severity: int) -> int:
        self.check_domain(corruption, severity)
        return len(self.files)

    def check_domain(self, corruption: str, severity: int) -> None:
        if corruption != "none":
            raise CemaError(f"imagenet-r has one domain, the renditions themselves; pass --corruption none (not {corruption!r}).")

    def domain_labels(self, corruption: str, severity: int) -> list[int]:
        return self.tree.labels(self.files)

    def stream(self, corruption: str, severity: int, seed: int, samples: int | None, batch_size: int, order: list[int] | None = None) -> LoaderStream:
        self.check_domain(corruption, severity)
        items = ImageItems([self.tree.root / f for f in self.files], self.tree.labels(self.files), IMAGENET_CROP)
        return LoaderStream(items, chosen_order(len(self.files), seed, samples, order), batch_size, Collate(), self.options)


class Cifar10C(OnDiskDataset):
    """CIFAR-10-C as published, at its native 32 px. The default edge model is RobustBench's
    ``Standard`` WRN-28-10, the source model of the CIFAR-10-C tables of Tent, EATA, SAR, CoTTA
    and RoTTA (its file from RobustBench's model_dir); there is no default cloud model."""

    name = "cifar10-c"
    title = "CIFAR-10-C"
    num_classes = 10
    preset = "cifar10"
    default_edge = "robustbench:cifar10/corruptions/Standard"

    def __init__(self, constants: str | None = None, corruption_seed: int = 0, data_root: str | None = None, options: DataOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(options, constants)
        if options.subset is not None:
            raise CemaError(f"--subset applies to image-folder datasets; for {self.name} use --samples (a seeded prefix of the stream).")
        self.root = require_root(data_root, self.name, CIFAR_C_LAYOUT)
        if not (self.root / "labels.npy").is_file() or names_found(self.root, ".npy") == "none":
            raise CemaError(f"{self.root} does not look like {self.title}: expected {CIFAR_C_LAYOUT}; found {describe(self.root)}.")
        self._pair: tuple[str, NpyPair] | None = None

    def check_domain(self, corruption: str, severity: int) -> None:
        if not (self.root / f"{corruption}.npy").is_file():
            raise CemaError(f"{self.title} file {corruption}.npy is missing under {self.root} "
                            f"(found: {names_found(self.root, '.npy')}); add it or drop it from --corruption.")

    def pair(self, corruption: str) -> NpyPair:
        if self._pair is None or self._pair[0] != corruption:
            self.check_domain(corruption, 1)
            path = self.root / f"{corruption}.npy"
            pair = NpyPair.read(path, self.root / "labels.npy", self.name)
            if len(pair.labels) % 5:
                raise CemaError(f"{path} has {len(pair.labels)} rows; {self.title} stacks 5 severities of equal size.")
            self._pair = (corruption, pair)
        return self._pair[1]

    def domain_size(self, corruption: str, severity: int) -> int:
        return len(self.pair(corruption).labels) // 5

    def domain_labels(self, corruption: str, severity: int) -> list[int]:
        n = self.domain_size(corruption, severity)
        return self.pair(corruption).labels[(severity - 1) * n : severity * n].tolist()

    def stream(self, corruption: str, severity: int, seed: int, samples: int | None, batch_size: int, order: list[int] | None = None) -> LoaderStream:
        """Severity k is rows [(k-1)n, kn) of the corruption's file."""
        n = self.domain_size(corruption, severity)
        items = self.pair(corruption).items((severity - 1) * n, severity * n)
        return LoaderStream(items, chosen_order(n, seed, samples, order), batch_size, Collate(), self.options)


class Cifar100C(Cifar10C):
    """CIFAR-100-C as published (the CIFAR-10-C layout, 100 classes). The default edge model is
    RobustBench's ``Hendrycks2020AugMix_ResNeXt`` (ResNeXt-29), that of the CIFAR-100-C tables."""

    name = "cifar100-c"
    title = "CIFAR-100-C"
    num_classes = 100
    preset = "cifar100"
    default_edge = "robustbench:cifar100/corruptions/Hendrycks2020AugMix_ResNeXt"
