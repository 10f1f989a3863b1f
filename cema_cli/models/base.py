"""The model registry and how a named model is built (weights, classes, input): what the
loaders (``hub.py``, ``embedded.py``) and the package's entry points share."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cema_cli.registry import Registry

MODELS = Registry("model")
MODELS.register("mnist-edge", "cema_cli.models.embedded:load_or_train", "BatchNorm ResNet, 78k parameters, clean digits (edge default)")
MODELS.register(
    "mnist-foundation", "cema_cli.models.embedded:load_or_train",
    "BatchNorm ResNet, 1.1M parameters, trained with the 4 extra corruptions (cloud default)",
)


@dataclass(frozen=True)
class ModelOptions:
    """How a named model is built: its weights, the classes the dataset needs, its input."""

    checkpoint: str | None = None  # a state_dict file, loaded with torch.load(weights_only=True)
    random_init: bool = False  # random weights, for plumbing checks only
    num_classes: int | None = None  # logits the dataset needs (None: the model's own)
    class_subset: tuple[int, ...] | None = None  # logits kept before the argmax (ImageNet-R)
    input_size: int | None = None  # overrides the model config's input side
    channels_last: bool = False


def import_timm():
    """timm, with the Hugging Face hub set offline first (spec: no weights from a hub at run
    time); cema reads cached files only and never asks timm to download."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import timm

    return timm
