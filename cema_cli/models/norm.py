"""Normalisation layers: which parameters adapt, and the state the cloud sends to the edge.

Spec (shared/spec/methods.md section 0, 4.4): only the affine parameters (scale, shift) of
normalisation layers are adapted and sent, together with the running moments of BatchNorm.
"""

from __future__ import annotations

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every BatchNorm/LayerNorm/GroupNorm layer, in model order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, NORM_TYPES)]


def norm_affine_params(model: nn.Module) -> list[nn.Parameter]:
    """The weight and bias of every normalisation layer (those that exist)."""
    return [p for _, m in norm_layers(model) for p in (m.weight, m.bias) if p is not None]


def prepare_for_norm_adaptation(model: nn.Module) -> list[nn.Parameter]:
    """Freeze everything except the norm affine parameters; return the trainable ones."""
    model.requires_grad_(False)
    params = norm_affine_params(model)
    for p in params:
        p.requires_grad_(True)
    return params


def norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The downlink payload: norm affine parameters and BatchNorm running moments (detached copies)."""
    state = {}
    for name, m in norm_layers(model):
        for key in ("weight", "bias", "running_mean", "running_var"):
            value = getattr(m, key, None)
            if isinstance(value, torch.Tensor):
                state[f"{name}.{key}"] = value.detach().clone()
    return state


def load_norm_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a downlink payload into the edge model in place (no model copies)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, value in state.items():
            module_name, _, attr = key.rpartition(".")
            getattr(modules[module_name], attr).copy_(value)


def count_norm_values(model: nn.Module) -> tuple[int, int]:
    """(affine values, running-moment values) in the model's normalisation layers."""
    affine = sum(p.numel() for p in norm_affine_params(model))
    moments = sum(
        getattr(m, k).numel() for _, m in norm_layers(model) for k in ("running_mean", "running_var")
        if isinstance(getattr(m, k, None), torch.Tensor)
    )
    return affine, moments
