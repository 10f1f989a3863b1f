"""RobustBench's corruption models by their zoo names: ``robustbench:<dataset>/<threat>/<name>``,
e.g. ``robustbench:cifar10/corruptions/Standard``.

The ``robustbench`` package (1.1.1) pins timm==1.0.9 and pulls gdown, geotorch and pyautoattack,
so it cannot install beside this project's timm; the few architectures the TTA tables use are
defined in cema_cli/models/robust_nets.py instead, so that RobustBench's checkpoint files load
unchanged from its ``model_dir`` layout, ``<model_dir>/<dataset>/<threat>/<name>.pt``
(RobustBench ``utils.load_model``; mariodoebler/test-time-adaptation keeps them under ``ckpt/``).
``model_dir`` is ``$CEMA_ROBUSTBENCH_DIR``, else ``./models`` (RobustBench's default).

Input conventions (RobustBench ``model_zoo/cifar10.py``, ``cifar100.py``, ``imagenet.py``): every
model takes [0, 1] images; ``Standard`` uses them as they are, the AugMix models normalise with
mean = std = 0.5 inside the network (buffers ``mu``/``sigma`` that the files do not hold), and
``Standard_R50`` is torchvision's ResNet-50 with the V1 ImageNet weights behind an ImageNet
normaliser. Here the normalisation is the Classifier's (mean, std), so the networks' keys are
exactly the files' keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cema_cli.errors import CemaError, unknown_name
from cema_cli.models.robust_nets import CifarResNeXt, WideResNet

MODEL_DIR_VARIABLE = "CEMA_ROBUSTBENCH_DIR"
RAW, HALF = ((0.0,) * 3, (1.0,) * 3), ((0.5,) * 3, (0.5,) * 3)


@dataclass(frozen=True)
class ZooEntry:
    """One RobustBench model: how to build it, its classes and the (mean, std) of its input."""

    build: Callable[[], nn.Module] | None  # None: a torchvision model (``torchvision``)
    num_classes: int
    mean_std: tuple[tuple[float, ...], tuple[float, ...]]
    about: str
    torchvision: str | None = None  # the torchvision name@weights it is


ZOO = {
    "cifar10/corruptions/Standard": ZooEntry(lambda: WideResNet(28, 10, 10), 10, RAW, "WRN-28-10, standard training"),
    "cifar10/corruptions/Hendrycks2020AugMix_WRN": ZooEntry(lambda: WideResNet(40, 2, 10), 10, HALF, "WRN-40-2, AugMix"),
    "cifar10/corruptions/Hendrycks2020AugMix_ResNeXt": ZooEntry(lambda: CifarResNeXt(29, 4, 32, 10), 10, HALF, "ResNeXt-29 4x32d, AugMix"),
    "cifar100/corruptions/Hendrycks2020AugMix_WRN": ZooEntry(lambda: WideResNet(40, 2, 100), 100, HALF, "WRN-40-2, AugMix"),
    "cifar100/corruptions/Hendrycks2020AugMix_ResNeXt": ZooEntry(lambda: CifarResNeXt(29, 4, 32, 100), 100, HALF, "ResNeXt-29 4x32d, AugMix"),
    "imagenet/corruptions/Standard_R50": ZooEntry(None, 1000, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                                  "ResNet-50, torchvision's V1 weights", torchvision="resnet50@IMAGENET1K_V1"),
}


def entry(name: str) -> ZooEntry:
    """The zoo entry of ``<dataset>/<threat>/<name>``; an unknown name lists the known ones."""
    if name not in ZOO:
        raise unknown_name("RobustBench model", name, ZOO)
    return ZOO[name]


def model_dir() -> Path:
    return Path(os.environ.get(MODEL_DIR_VARIABLE, "models")).expanduser()


def checkpoint_file(name: str) -> Path:
    """``<model_dir>/<dataset>/<threat>/<name>.pt``, or an error saying where cema looked."""
    path = model_dir() / f"{name}.pt"
    if not path.is_file():
        raise CemaError(f"no RobustBench checkpoint for robustbench:{name} on this machine (looked for {path.resolve()}); "
                        f"copy RobustBench's file there (its load_model downloads it to <model_dir>/{name}.pt), set "
                        f"{MODEL_DIR_VARIABLE} to your model_dir, pass --edge-checkpoint/--cloud-checkpoint FILE, or use --random-init.")
    return path


def drop_input_buffers(state: dict[str, torch.Tensor], mean_std: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, torch.Tensor]:
    """A file saved from RobustBench's AugMix net after loading holds its ``mu``/``sigma``
    buffers: they are the normalisation the Classifier applies, so they are dropped when they
    hold exactly those values (and left for the key check to refuse otherwise)."""
    held = {k: state[k] for k in ("mu", "sigma") if k in state}
    expected = dict(zip(("mu", "sigma"), mean_std))
    if held and all(torch.allclose(v.flatten().float(), torch.tensor(expected[k])) for k, v in held.items()):
        return {k: v for k, v in state.items() if k not in held}
    return state
