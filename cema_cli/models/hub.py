"""Models by name (shared/spec/data.md, "Models"):

- ``torchvision:<name>[@<weights>]`` (a member of torchvision's ``Weights`` enum, e.g.
  ``torchvision:resnet50@IMAGENET1K_V1``; no tag: ``DEFAULT``), ``timm:<name>[.<tag>]`` (timm's
  pretrained tags, e.g. ``timm:resnet50.a1_in1k``; ``@<tag>`` reads the same; no tag: timm's
  default), ``robustbench:<dataset>/<threat>/<name>`` (cema_cli/models/robustbench.py); a bare
  name is an embedded model if registered, else a timm model;
- weights: ``--random-init`` (plumbing checks), a checkpoint file read with
  ``torch.load(weights_only=True)``, or the pretrained weights already where the libraries put
  them (TORCH_HOME/hub/checkpoints, the Hugging Face cache, RobustBench's model_dir), found by
  the file names the libraries' own registries give (a torchvision enum's url, timm's
  pretrained_cfg). Nothing is downloaded; missing weights are an error that says where cema
  looked. There is never a silent fall-back to random weights;
- input: each model's own normalisation; images are fed at the dataset's native size (224 px
  ImageNet family, 32 px CIFAR), never resized to a library's test size. Only a network that
  cannot take another size (a ViT's fixed patch grid) or ``--input-size`` resizes.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from cema_cli.errors import CemaError
from cema_cli.models.base import MODELS, ModelOptions, import_timm
from cema_cli.models.checkpoints import WeightsSource, load_checkpoint, read_state_dict
from cema_cli.models.nets import Classifier

LIBRARIES = ("timm", "torchvision", "robustbench")
HOW_TO_PROVIDE = ("download them where there is network and copy the cache here (HF_HOME for timm, TORCH_HOME for "
                  "torchvision), pass --edge-checkpoint/--cloud-checkpoint FILE, or use --random-init for a plumbing check")


class WeightsWarning(UserWarning):
    """A pretrained file whose sha256 is not the one its library's registry names."""


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: library, architecture and weights tag (None: the library's default)."""

    library: str
    arch: str
    tag: str | None = None

    def __str__(self) -> str:
        tag = f"{'.' if self.library == 'timm' else '@'}{self.tag}" if self.tag else ""
        return f"{self.library}:{self.arch}{tag}"


@dataclass
class Built:
    """A network and its own preprocessing config (``mean`` None: the samples reach the network
    as they are, e.g. token ids; ``input_size`` None: fed at the stream's native size, never resized)."""

    net: nn.Module
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    input_size: tuple[int, int] | None
    num_classes: int
    scale: float | tuple[float, ...] = 255.0  # sample counts per unit of mean/std


def parse_name(name: str) -> ModelName:
    """'torchvision:resnet50@IMAGENET1K_V1', 'timm:resnet50.a1_in1k' (or '@a1_in1k'),
    'robustbench:cifar10/corruptions/Standard', a registered embedded name, or a bare timm name."""
    library, sep, rest = name.partition(":")
    if not sep:
        library, rest = ("embedded", name) if name in MODELS.names() else ("timm", name)
    if library not in (*LIBRARIES, "embedded") or not rest:
        raise CemaError(f"cannot read model {name!r}: use timm:<name>[.<tag>], torchvision:<name>[@<weights>], "
                        f"robustbench:<dataset>/<threat>/<name>, or one of {', '.join(MODELS.names())}.")
    arch, at, tag = rest.partition("@")
    if library == "timm" and not at:
        arch, _, tag = rest.partition(".")
    if at and (library in ("embedded", "robustbench") or not tag):
        raise CemaError(f"model {name!r}: a weights tag (@...) names torchvision weights (e.g. torchvision:resnet50@IMAGENET1K_V1) "
                        "or a timm pretrained tag (timm:resnet50.a1_in1k); drop it here.")
    return ModelName(library, arch, tag or None)


def load(name: str, options: ModelOptions, on_progress: Callable[[str, int, int], None] | None = None) -> Classifier:
    """The named model wrapped in a Classifier, in eval mode on the CPU."""
    parsed = parse_name(name)
    builders = {"embedded": lambda: embedded_net(parsed, options, on_progress), "timm": lambda: timm_net(parsed, options),
                "torchvision": lambda: torchvision_net(parsed, options), "robustbench": lambda: robustbench_net(parsed, options)}
    built = builders[parsed.library]()
    if options.num_classes is not None and built.num_classes != options.num_classes:
        raise CemaError(f"model {name} outputs {built.num_classes} classes but the dataset needs {options.num_classes}; "
                        "pass a checkpoint trained on it (--edge-checkpoint/--cloud-checkpoint) or another model.")
    sequences = parsed.library == "embedded" and built.input_size is None  # watch/sentiment nets; library nets read images
    if (options.input_size or options.channels_last) and sequences:
        raise CemaError(f"--input-size and --channels-last apply to image models; {name} reads sequences. Drop the flag.")
    size = (options.input_size, options.input_size) if options.input_size else built.input_size
    model = Classifier(built.net, built.mean, built.std, options.class_subset, size, options.channels_last, built.scale)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def weights_source(name: str, options: ModelOptions) -> WeightsSource:
    """Which weights ``load`` reads for this name and options (the rows' provenance)."""
    if options.random_init:
        return WeightsSource("random-init")
    if options.checkpoint:
        return WeightsSource(f"checkpoint:{options.checkpoint}", Path(options.checkpoint).expanduser())
    parsed = parse_name(name)
    sources = {"embedded": embedded_weights, "timm": timm_weights, "torchvision": torchvision_weights, "robustbench": robustbench_weights}
    return sources[parsed.library](parsed)


def not_found(kind: str, name: str, valid: Iterable[str], listing: str) -> CemaError:
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return CemaError(f"unknown {kind} {name!r}.{hint} See {listing}.")


def check_registry_digest(source: WeightsSource, name: str) -> None:
    """Warn when a pretrained file's sha256 is not the one its registry names: torch.hub's
    ``<name>-<sha256 prefix>.pth`` convention, or a Hugging Face blob named by its sha256."""
    if source.file is None:
        return
    real = Path(source.file).resolve().name
    expected = real if re.fullmatch(r"[0-9a-f]{64}", real) else next(iter(re.findall(r"-([0-9a-f]{6,})\.", real)), None)
    if expected and not source.sha256().startswith(expected):
        warnings.warn(f"{name}: {source.file} has sha256 {source.sha256()[:12]}..., not {expected[:12]}... as its library's "
                      "registry names: these are not the published weights (the rows record the file's sha256)", WeightsWarning, stacklevel=2)


# --- embedded ---------------------------------------------------------------------------------

def embedded_net(parsed: ModelName, options: ModelOptions, on_progress: Callable | None) -> Built:
    """The project's own models, trained at 32 px: trained and cached on first use, unless a
    checkpoint or --random-init is given."""
    from cema_cli.models import embedded

    arch = parsed.arch
    model = embedded.build(arch) if options.random_init or options.checkpoint else MODELS.get(arch)(arch, on_progress)
    if options.checkpoint:
        load_checkpoint(model.net, options.checkpoint, arch)
    mean, std, size, scale = embedded.preprocessing(arch)
    return Built(model.net, mean, std, size, model.head().out_features, scale)


def embedded_weights(parsed: ModelName) -> WeightsSource:
    from cema_cli.models.embedded import checkpoint_path, weights_digest

    path = checkpoint_path(parsed.arch)
    if not path.exists():  # a recipe neither shipped nor trained yet: a cloud model no method of the run loaded
        from cema_cli.models.embedded import recipe_of

        return WeightsSource(f"untrained:{recipe_of(parsed.arch).digest()}", None)
    kind = "shipped" if path.parent.name == "weights" else "trained"
    return WeightsSource(f"{kind}:{weights_digest(parsed.arch)}", path if path.is_file() else None)


# --- timm -------------------------------------------------------------------------------------

def timm_full_name(parsed: ModelName) -> str:
    """``arch.tag`` after checking both against timm's registry."""
    timm = import_timm()
    from timm.models import get_arch_pretrained_cfgs

    if not timm.is_model(parsed.arch):
        raise not_found("timm model", parsed.arch, timm.list_models(), "timm.list_models()")
    if parsed.tag is None:
        return parsed.arch
    tags = [key.partition(".")[2] for key in get_arch_pretrained_cfgs(parsed.arch)]
    if parsed.tag not in tags:
        raise CemaError(f"timm:{parsed.arch} has no pretrained tag {parsed.tag!r}; its tags: {', '.join(tags) or 'none'} "
                        f"(timm.list_pretrained('{parsed.arch}.*')).")
    return f"{parsed.arch}.{parsed.tag}"


def timm_net(parsed: ModelName, options: ModelOptions) -> Built:
    """A timm model; mean and std from its pretrained config. Fed at the stream's native size,
    unless the config says the input size is fixed (ViTs: then that size, not the test size)."""
    timm, full = import_timm(), timm_full_name(parsed)
    if options.random_init or options.checkpoint:
        kwargs = {"num_classes": options.num_classes} if options.num_classes else {}
        net = timm.create_model(full, pretrained=False, **kwargs)
        if options.checkpoint:
            load_checkpoint(net, options.checkpoint, f"timm:{full}")
    else:
        source = timm_weights(parsed)
        check_registry_digest(source, f"timm:{full}")
        net = timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": str(source.file)})
    cfg = net.pretrained_cfg
    size = tuple(cfg["input_size"][1:]) if cfg.get("fixed_input_size") else None
    return Built(net, tuple(cfg["mean"]), tuple(cfg["std"]), size, net.num_classes)


def timm_weights(parsed: ModelName) -> WeightsSource:
    """The cached pretrained weights of a timm model: the Hugging Face cache, then torch.hub's."""
    from timm.models import get_pretrained_cfg

    full = timm_full_name(parsed)
    cfg, looked = get_pretrained_cfg(full), []
    label = f"pretrained:{getattr(cfg, 'tag', None) or parsed.tag or 'default'}"
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
            found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(), revision=revision or None)
            if isinstance(found, str):
                return WeightsSource(label, Path(found))
        looked.append(f"the Hugging Face cache {hf_cache_dir()} (repo {repo})")
    if cfg is not None and cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return WeightsSource(label, path)
        looked.append(str(path))
    where = " and ".join(looked) or "nowhere: timm lists no pretrained weights for it"
    raise CemaError(f"no pretrained weights for timm:{full} on this machine (looked in {where}); {HOW_TO_PROVIDE}.")


def hf_cache_dir() -> str:
    """The Hugging Face hub cache as the environment names it now (HF_HUB_CACHE, else
    HF_HOME/hub), else huggingface_hub's own default: read at each call, like TORCH_HOME."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else constants.HF_HUB_CACHE


# --- torchvision ------------------------------------------------------------------------------

def torchvision_enum_member(parsed: ModelName):
    """The member of the model's ``Weights`` enum that the tag names (no tag: DEFAULT)."""
    from torchvision import models

    names = models.list_models(module=models)
    if parsed.arch not in names:
        raise not_found("torchvision model", parsed.arch, names, "torchvision.models.list_models()")
    enum = models.get_model_weights(parsed.arch)
    try:
        return enum[parsed.tag or "DEFAULT"]
    except KeyError:
        raise CemaError(f"torchvision:{parsed.arch} has no weights {parsed.tag!r}; torchvision's {enum.__name__} has "
                        f"{', '.join(m.name for m in enum)} (or DEFAULT).") from None


def hub_file(url: str) -> Path:
    """Where torch.hub keeps the file of ``url``: $TORCH_HOME/hub/checkpoints/<its name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_weights(parsed: ModelName) -> WeightsSource:
    member = torchvision_enum_member(parsed)
    path = hub_file(member.url)
    if not path.is_file():
        name = f"torchvision:{parsed.arch}@{member.name}"
        raise CemaError(f"no pretrained weights for {name} on this machine (looked for {path}, the file of {type(member).__name__}."
                        f"{member.name}){other_versions_hint(parsed, member)}; {HOW_TO_PROVIDE}.")
    return WeightsSource(f"pretrained:{member.name}", path)


def other_versions_hint(parsed: ModelName, wanted) -> str:
    """' (found resnet101-63fe2227.pth: name it torchvision:resnet101@IMAGENET1K_V1)' when the
    cache holds another version's file."""
    present = [m for m in type(wanted) if m.name != wanted.name and hub_file(m.url).is_file()]
    return "".join(f" (found {hub_file(m.url).name}: name it torchvision:{parsed.arch}@{m.name})" for m in present)


def torchvision_net(parsed: ModelName, options: ModelOptions) -> Built:
    """A torchvision classification model; mean and std from its weights' transforms."""
    from torchvision import models

    member = torchvision_enum_member(parsed)
    classes = len(member.meta["categories"])
    if options.random_init or options.checkpoint:
        net = models.get_model(parsed.arch, weights=None, num_classes=options.num_classes or classes)
        if options.checkpoint:
            load_checkpoint(net, options.checkpoint, f"torchvision:{parsed.arch}")
    else:
        check_registry_digest(torchvision_weights(parsed), f"torchvision:{parsed.arch}@{member.name}")
        net = models.get_model(parsed.arch, weights=member)  # found in the cache: nothing is downloaded
    preset = member.transforms()
    fixed = getattr(net, "image_size", None)  # torchvision's ViTs take one size only
    size = (fixed, fixed) if isinstance(fixed, int) else None
    built_classes = (options.num_classes or classes) if options.random_init or options.checkpoint else classes
    return Built(net, tuple(preset.mean), tuple(preset.std), size, built_classes)


# --- RobustBench ------------------------------------------------------------------------------

def robustbench_net(parsed: ModelName, options: ModelOptions) -> Built:
    """A RobustBench corruption model (cema_cli/models/robustbench.py), its file loaded key for key."""
    from cema_cli.models import robustbench

    zoo = robustbench.entry(parsed.arch)
    if zoo.torchvision:
        return torchvision_net(parse_name(f"torchvision:{zoo.torchvision}"), options)
    net = zoo.build()
    if not options.random_init:
        path = options.checkpoint or robustbench.checkpoint_file(parsed.arch)
        state = robustbench.drop_input_buffers(read_state_dict(path), zoo.mean_std)
        load_checkpoint(net, path, str(parsed), state)
    return Built(net, *zoo.mean_std, None, zoo.num_classes)


def robustbench_weights(parsed: ModelName) -> WeightsSource:
    from cema_cli.models import robustbench

    zoo = robustbench.entry(parsed.arch)
    if zoo.torchvision:
        return torchvision_weights(parse_name(f"torchvision:{zoo.torchvision}"))
    return WeightsSource("pretrained:robustbench", robustbench.checkpoint_file(parsed.arch))
