"""Models by name. The embedded default's models are trained by the project and cached;
``timm:<name>``, ``torchvision:<name>`` and ``robustbench:<name>`` load from those libraries'
files (cema_cli/models/hub.py)."""

from __future__ import annotations

from cema_cli.models.base import MODELS, ModelOptions, import_timm

__all__ = ["MODELS", "ModelOptions", "import_timm", "load_model", "weights_source"]


def load_model(name: str, on_progress=None, options: ModelOptions | None = None):
    """A Classifier in eval mode on the CPU; the caller moves it to its device.
    Names: an embedded model, ``timm:<name>``, ``torchvision:<name>``, ``robustbench:<name>``,
    or a bare timm name."""
    from cema_cli.models import hub

    return hub.load(name, options or ModelOptions(), on_progress)


def weights_source(name: str, options: ModelOptions):
    """The weights ``load_model`` reads for this name and options: the label the rows record
    (random-init, checkpoint:<file>, shipped:<digest>, pretrained:<tag>) and the file, whose
    sha256 the rows record too (cema_cli/models/checkpoints.py)."""
    from cema_cli.models import hub

    return hub.weights_source(name, options)
