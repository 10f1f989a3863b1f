"""Random-init weight files written where torchvision, timm (the Hugging Face cache) and
RobustBench put their pretrained files, under the file names their registries give. Tests point
TORCH_HOME, HF_HOME and CEMA_ROBUSTBENCH_DIR at the folders these write into."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch


def torchvision_file(torch_home: Path, arch: str, tag: str, seed: int = 0, confident: bool = False) -> Path:
    """``<torch_home>/hub/checkpoints/<the enum url's file name>`` holding a random-init state_dict
    (``confident``: see ``confident_head``)."""
    from torchvision import models

    member = models.get_model_weights(arch)[tag]
    torch.manual_seed(seed)
    state = models.get_model(arch, weights=None, num_classes=len(member.meta["categories"])).state_dict()
    path = torch_home / "hub" / "checkpoints" / Path(urlparse(member.url).path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(confident_head(state) if confident else state, path)
    return path


def confident_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The last linear layer scaled down 1000x and its bias raised by 30 for class 0: the network
    predicts class 0 with near certainty whatever its input, so confidence-gated work (CoTTA's 32
    augmentations below its threshold) stays off and an end-to-end run on random weights is cheap."""
    weight = next(k for k in reversed(list(state)) if k.endswith(".weight") and state[k].dim() == 2)
    bias = weight.removesuffix("weight") + "bias"
    out = {**state, weight: state[weight] * 1e-3, bias: state[bias].clone()}
    out[bias][0] += 30.0
    return out


def timm_file(hf_home: Path, full_name: str, seed: int = 0) -> Path:
    """The Hugging Face cache layout of ``timm/<arch>.<tag>``: refs/main and a snapshot holding
    ``model.safetensors`` (random-init)."""
    import timm
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    torch.manual_seed(seed)
    net = timm.create_model(full_name, pretrained=False)
    repo = get_pretrained_cfg(full_name).hf_hub_id
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def random_bn_statistics(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict whose BatchNorm moments and affine parameters are random too (a freshly built
    network has mean 0, variance 1, scale 1, shift 0, which hides a misplaced normalisation)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith(("running_mean", "bias")) or (key.endswith("weight") and value.dim() == 1):
            value = torch.randn(value.shape, generator=generator) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
        out[key] = value
    return out


def robustbench_file(model_dir: Path, name: str, wrap: str = "state_dict", seed: int = 0,
                     confident: bool = False) -> tuple[Path, dict[str, torch.Tensor]]:
    """``<model_dir>/<dataset>/<threat>/<name>.pt`` as RobustBench's files hold it: the network's
    state_dict (random-init, random BN statistics) under "state_dict" with DataParallel's
    "module." prefix, or plain (``wrap="plain"``); ``confident``: see ``confident_head``.
    Returns the path and the plain state."""
    from cema_cli.models.robustbench import ZOO

    torch.manual_seed(seed)
    state = random_bn_statistics(ZOO[name].build().state_dict(), seed)
    if confident:
        state = confident_head(state)
    saved = {"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrap == "state_dict" else state
    path = model_dir / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, path)
    return path, state
