"""Models by name (shared/spec/data.md, "Models" and "What cannot happen on these machines"):

- ``timm:<name>`` and ``torchvision:<name>``; a bare name is an embedded model if registered,
  else a timm model;
- weights: ``--random-init`` (plumbing checks), a checkpoint file read with
  ``torch.load(weights_only=True)``, or the pretrained weights already in the library caches
  (the Hugging Face cache or TORCH_HOME). Nothing is downloaded; missing weights are an error
  that says where cema looked. There is never a silent fall-back to random weights;
- preprocessing (mean, std, input size) from each model's own config.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cema_cli.errors import CemaError
from cema_cli.models.base import MODELS, ModelOptions, import_timm
from cema_cli.models.nets import Classifier

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HOW_TO_PROVIDE = ("download them where there is network and copy the cache here (HF_HOME for timm, TORCH_HOME for "
                  "torchvision), pass --edge-checkpoint/--cloud-checkpoint FILE, or use --random-init for a plumbing check")


@dataclass
class Built:
    """A network and its own preprocessing config."""

    net: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int]
    num_classes: int


def parse_name(name: str) -> tuple[str, str]:
    """'timm:x' -> ('timm', 'x'); 'torchvision:x' -> ('torchvision', 'x'); a registered embedded
    name -> ('embedded', name); any other bare name -> ('timm', name)."""
    library, sep, arch = name.partition(":")
    if sep:
        if library not in ("timm", "torchvision") or not arch:
            raise CemaError(f"cannot read model {name!r}: use timm:<name>, torchvision:<name>, or one of {', '.join(MODELS.names())}.")
        return library, arch
    return ("embedded", name) if name in MODELS.names() else ("timm", name)


def load(name: str, options: ModelOptions, on_progress: Callable[[str, int, int], None] | None = None) -> Classifier:
    """The named model wrapped in a Classifier, in eval mode on the CPU."""
    library, arch = parse_name(name)
    builders = {"embedded": lambda: embedded_net(arch, options, on_progress), "timm": lambda: timm_net(arch, options),
                "torchvision": lambda: torchvision_net(arch, options)}
    built = builders[library]()
    if options.num_classes is not None and built.num_classes != options.num_classes:
        raise CemaError(f"model {name} outputs {built.num_classes} classes but the dataset needs {options.num_classes}; "
                        "pass a checkpoint trained on it (--edge-checkpoint/--cloud-checkpoint) or another model.")
    size = (options.input_size, options.input_size) if options.input_size else built.input_size
    model = Classifier(built.net, built.mean, built.std, options.class_subset, size, options.channels_last)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def not_found(kind: str, name: str, valid: Iterable[str], listing: str) -> CemaError:
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return CemaError(f"unknown {kind} {name!r}.{hint} See {listing}.")


# --- the three sources ------------------------------------------------------------------------

def embedded_net(arch: str, options: ModelOptions, on_progress: Callable | None) -> Built:
    """The project's own models: trained and cached on first use, unless a checkpoint or
    --random-init is given."""
    from cema_cli.models import embedded

    model = embedded.build(arch) if options.random_init or options.checkpoint else MODELS.get(arch)(arch, on_progress)
    if options.checkpoint:
        load_checkpoint(model.net, options.checkpoint, arch)
    return Built(model.net, embedded.MEAN, embedded.STD, (32, 32), model.net.fc.out_features)


def timm_net(arch: str, options: ModelOptions) -> Built:
    """A timm model; mean, std and input size from its pretrained config (the test size)."""
    timm = import_timm()
    from timm.data import resolve_data_config

    if not timm.is_model(arch):
        raise not_found("timm model", arch, timm.list_models(), "timm.list_models()")
    if options.random_init or options.checkpoint:
        kwargs = {"num_classes": options.num_classes} if options.num_classes else {}
        net = timm.create_model(arch, pretrained=False, **kwargs)
        if options.checkpoint:
            load_checkpoint(net, options.checkpoint, f"timm:{arch}")
    else:
        net = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(timm_weights_file(arch))})
    cfg = resolve_data_config({}, model=net, use_test_size=True)
    return Built(net, tuple(cfg["mean"]), tuple(cfg["std"]), tuple(cfg["input_size"][1:]), net.num_classes)


def timm_weights_file(arch: str) -> Path:
    """The cached pretrained weights of a timm model: the Hugging Face cache, then torch.hub's."""
    from timm.models import get_pretrained_cfg

    cfg, looked = get_pretrained_cfg(arch), []
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
        looked.append(f"the Hugging Face cache {constants.HF_HUB_CACHE} (repo {repo})")
    if cfg is not None and cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return path
        looked.append(str(path))
    where = " and ".join(looked) or "nowhere: timm lists no pretrained weights for it"
    raise CemaError(f"no pretrained weights for timm:{arch} on this machine (looked in {where}); {HOW_TO_PROVIDE}.")


def torchvision_net(arch: str, options: ModelOptions) -> Built:
    """A torchvision classification model; mean, std and crop size from its weights' transforms."""
    from torchvision import models

    names = models.list_models(module=models)
    if arch not in names:
        raise not_found("torchvision model", arch, names, "torchvision.models.list_models()")
    weights = models.get_model_weights(arch).DEFAULT
    if options.random_init or options.checkpoint:
        net = models.get_model(arch, weights=None, num_classes=options.num_classes or len(weights.meta["categories"]))
        if options.checkpoint:
            load_checkpoint(net, options.checkpoint, f"torchvision:{arch}")
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
        if not path.is_file():
            raise CemaError(f"no pretrained weights for torchvision:{arch} on this machine (looked for {path}); {HOW_TO_PROVIDE}.")
        net = models.get_model(arch, weights=weights)  # found in the cache: nothing is downloaded
    preset = weights.transforms()
    size = preset.crop_size[0]
    classes = getattr(net, "num_classes", None) or options.num_classes or len(weights.meta["categories"])
    return Built(net, tuple(preset.mean), tuple(preset.std), (size, size), classes)


# --- checkpoints ------------------------------------------------------------------------------

def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state_dict from a file: plain, or under "state_dict" / "model"; DataParallel's
    "module." and the Classifier's "net." prefixes are removed."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CemaError(f"checkpoint {file} does not exist; give the path of a saved state_dict.")
    try:
        obj: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise CemaError(f"cannot read checkpoint {file} with torch.load(weights_only=True) ({type(error).__name__}); "
                        "save it with torch.save(model.state_dict(), path).") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CemaError(f"checkpoint {file} holds no state_dict of tensors; save it with torch.save(model.state_dict(), path).")
    for prefix in ("module.", "net."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(net: nn.Module, path: str, name: str) -> None:
    """Load a checkpoint strictly; mismatched keys or shapes are named in the error."""
    state, expected = read_state_dict(path), net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)) if keys]
    if problems:
        raise CemaError(f"checkpoint {path} does not fit {name}: {'; '.join(problems)}. Check that the model name is the architecture the checkpoint was trained as.")
    net.load_state_dict(state)
