"""Models by name. The embedded default's models are trained by the project and cached;
``timm:<name>`` and ``torchvision:<name>`` load from those libraries (cema_cli/models/hub.py)."""

from __future__ import annotations

from cema_cli.models.base import MODELS, ModelOptions, import_timm

__all__ = ["MODELS", "ModelOptions", "import_timm", "load_model", "weights_label"]


def load_model(name: str, on_progress=None, options: ModelOptions | None = None):
    """A Classifier in eval mode on the CPU; the caller moves it to its device.
    Names: an embedded model, ``timm:<name>``, ``torchvision:<name>``, or a bare timm name."""
    from cema_cli.models import hub

    return hub.load(name, options or ModelOptions(), on_progress)


def weights_label(name: str, options: ModelOptions) -> str:
    """How a model's weights were obtained, for the results: random-init, checkpoint:<file>,
    trained (embedded) or pretrained (library cache)."""
    if options.random_init:
        return "random-init"
    if options.checkpoint:
        return f"checkpoint:{options.checkpoint}"
    if name in MODELS.names():
        from cema_cli.models.embedded import checkpoint_path, weights_digest

        kind = "shipped" if checkpoint_path(name).parent.name == "weights" else "trained"
        return f"{kind}:{weights_digest(name)}"
    return "pretrained"
