"""Models by name. The embedded default's models are trained by the project and cached."""

from __future__ import annotations

from cema_cli.registry import Registry

MODELS = Registry("model")
MODELS.register("mnist-edge", "cema_cli.models.embedded:load_or_train", "BatchNorm ResNet, 78k parameters, clean digits (edge default)")
MODELS.register(
    "mnist-foundation", "cema_cli.models.embedded:load_or_train",
    "BatchNorm ResNet, 1.1M parameters, trained with the 4 extra corruptions (cloud default)",
)


def load_model(name: str, on_progress=None):
    """A model in eval mode on the CPU; the caller moves it to its device."""
    return MODELS.get(name)(name, on_progress)
