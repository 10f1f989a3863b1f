"""Shared conventions of shared/spec/methods-more.md section 6: parameter subsets chosen by rules
on the bare network's module names, their downlink state, and the cloud-edge pair of the
methods that train such a subset under batch-statistics BN (SAR section 7, DeYO section 8).

Rules read the names of the bare network, relative to its root, in torchvision/timm naming:
cema's ``Classifier`` holds it as ``net``, so its names are matched without that prefix (section
7.6 trap 1 shows what a prefix breaks: the rule "equals ``norm``").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from cema_cli.link.channel import encode_uplink
from cema_cli.errors import CemaError
from cema_cli.models.nets import Classifier
from cema_cli.strategies.base import StrategyContext
from cema_cli.strategies.common import CloudEdgeStrategy
from cema_cli.strategies.tent import tent_model


def bare_network(model: nn.Module) -> nn.Module:
    """The network a name rule reads: the wrapper's ``net``, or the model itself."""
    return model.net if isinstance(model, Classifier) else model


@dataclass(frozen=True)
class NameRule:
    """A module-name test: the name contains ``text``, or (``exact``) equals it."""

    text: str
    exact: bool = False

    def matches(self, name: str) -> bool:
        return name == self.text if self.exact else self.text in name

    def __str__(self) -> str:
        return f"{'equals' if self.exact else 'contains'} {self.text!r}"


@dataclass(frozen=True)
class SubsetRule:
    """The weight and bias of every layer of ``layer_types`` whose bare module name matches none
    of ``exclude``: the parameters a method trains."""

    name: str
    layer_types: tuple[type[nn.Module], ...]
    exclude: tuple[NameRule, ...] = ()

    def select(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """{bare parameter name: parameter}, in model order; a CemaError when nothing matches."""
        net = bare_network(model)
        chosen = {f"{name}.{key}": p for name, m in net.named_modules() if self._keeps(name, m)
                  for key, p in m.named_parameters(recurse=False) if key in ("weight", "bias")}
        if not chosen:
            raise CemaError(f"rule {self} matched no parameter of model {type(net).__name__}; use a model that has "
                            "such layers (e.g. timm:resnet18) or another method.")
        return chosen

    def _keeps(self, name: str, module: nn.Module) -> bool:
        return isinstance(module, self.layer_types) and not any(rule.matches(name) for rule in self.exclude)

    def __str__(self) -> str:
        types = ", ".join(t.__name__ for t in self.layer_types)
        skipped = f" except names that {' or '.join(map(str, self.exclude))}" if self.exclude else ""
        return f"{self.name!r} (weight and bias of {types}{skipped})"


def values_in(params: dict[str, nn.Parameter]) -> int:
    """The number of scalar values in a parameter subset (what method_config's count reports)."""
    return sum(p.numel() for p in params.values())


def subset_model(model: nn.Module, rule: SubsetRule) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """Batch-statistics BN as Tent (section 6), every parameter frozen except ``rule``'s subset."""
    model, _ = tent_model(model)
    model.requires_grad_(False)
    params = rule.select(model)
    for p in params.values():
        p.requires_grad_(True)
    return model, params


def parameter_state(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """Detached copies of the subset, keyed by bare name: a downlink payload."""
    return {name: p.detach().clone() for name, p in params.items()}


def load_parameter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a ``parameter_state`` into ``model``'s bare network in place."""
    net = bare_network(model)
    with torch.no_grad():
        for name, value in state.items():
            net.get_parameter(name).copy_(value)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class SubsetCloudEdge(CloudEdgeStrategy):
    """Cloud placement of a method that trains ``rule``'s subset under batch-statistics BN
    (section 6, "Placements"): the edge forwards with its copy, the cloud trains its own copy,
    and a sync sends exactly the subset, the only tensors the cloud changes and the edge reads
    (no running moments: both sides use batch statistics).

    Uploads can carry per-sample side information (``side_bytes`` each, set in
    ``outgoing_side`` by ``select``). The cloud puts what arrived back in stream order, so that
    its batch statistics and sums round exactly as the original's."""

    rule: SubsetRule
    side_bytes = 0

    def __init__(self, context: StrategyContext, config) -> None:
        super().__init__(context, config)
        cloud_source = copy.deepcopy(context.edge_model)
        self._edge, _ = subset_model(context.edge_model, self.rule)
        self._edge.requires_grad_(False)
        self.cloud, self.cloud_params = subset_model(cloud_source, self.rule)
        self.trained_values = values_in(self.cloud_params)
        self.min_batch = 2 if has_batchnorm(self.cloud) else 1  # batch statistics need two samples
        self.outgoing_side = torch.empty(0)
        self.arrived_side = torch.empty(0)

    @property
    def edge(self) -> nn.Module:
        return self._edge

    def cloud_edge_model(self) -> nn.Module:
        return self.cloud

    def downlink_state(self) -> dict[str, torch.Tensor]:
        return parameter_state(self.cloud_params)

    def load_downlink_state(self, state: dict[str, torch.Tensor]) -> None:
        load_parameter_state(self.edge, state)

    def upload(self, images: torch.Tensor, priority: torch.Tensor) -> None:
        config = self.channel.config
        payload, sizes = encode_uplink(images, config.uplink_encoding, config.jpeg_quality)
        side = self.outgoing_side if self.side_bytes else [None] * len(images)
        packets = list(zip(range(len(images)), payload, side))
        self.channel.uplink.send(packets, [size + self.side_bytes for size in sizes], priority.tolist())

    def arrived_images(self) -> torch.Tensor | None:
        packets = sorted(self.channel.uplink.receive(), key=lambda p: (p.sent_tick, p.payload[0]))
        if not packets:
            return None
        if self.side_bytes:
            self.arrived_side = torch.stack([p.payload[2] for p in packets])
        return torch.stack([p.payload[1] for p in packets])
