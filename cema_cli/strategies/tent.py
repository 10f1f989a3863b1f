"""Tent (Wang et al., ICLR 2021; methods.md section 2): entropy minimisation on BN affine params."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from cema_cli.models.norm import prepare_for_norm_adaptation
from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.bn import use_batch_statistics
from cema_cli.strategies.common import CloudEdgeStrategy, entropy, make_optimizer, optimised_values
from cema_cli.strategies.options import OPTIMIZERS, non_negative, one_of, unit_interval
from cema_cli.strategies.precision import minimise

PLACEMENTS = ("cloud", "edge")

# Published optimisers by dataset (fidelity/reference.md, "Published settings"): SGD lr 2.5e-4
# momentum 0.9 on ImageNet (the defaults); Adam lr 1e-3 on CIFAR-10/100 (tent cfgs/tent.yaml).
ADAM_CIFAR = {"optimizer": "adam", "lr": 0.001}


@dataclass(frozen=True)
class TentConfig:
    presets: ClassVar[dict[str, dict]] = {"imagenet": {}, "cifar10": ADAM_CIFAR, "cifar100": ADAM_CIFAR}

    lr: float = 0.00025  # ImageNet setting; the cifar10/cifar100 presets use adam, lr 1e-3
    momentum: float = 0.9  # SGD only
    optimizer: str = "sgd"
    placement: str = "cloud"  # cloud: the edge uploads every sample; edge: the original on-device Tent

    def validate(self) -> None:
        non_negative("lr", self.lr)
        unit_interval("momentum", self.momentum)
        one_of("optimizer", self.optimizer, OPTIMIZERS)


def tent_model(model: nn.Module) -> tuple[nn.Module, list[nn.Parameter]]:
    """Batch statistics in every BN layer; only BN affine parameters train (section 2)."""
    model = use_batch_statistics(model.train())
    return model, prepare_for_norm_adaptation(model)


def entropy_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor) -> torch.Tensor:
    """One forward pass, loss = mean entropy, one optimiser step; return the forward's logits."""
    logits = model(images)
    minimise(optimizer, entropy(logits).mean())
    return logits.detach()


def make_tent(context: StrategyContext, config: TentConfig) -> Strategy:
    return TentOnEdge(context, config) if config.placement == "edge" else TentCloudEdge(context, config)


class TentOnEdge(Strategy):
    """The original Tent: the device itself takes the gradient step; nothing is uploaded."""

    config_class = TentConfig

    def __init__(self, context: StrategyContext, config: TentConfig) -> None:
        super().__init__(context, config)
        self.model, params = tent_model(context.edge_model)
        self.optimizer = make_optimizer(params, config.optimizer, config.lr, config.momentum)
        self.trained_values = optimised_values(self.optimizer)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        self.work.edge_forward += len(images)
        self.work.edge_backward += len(images)
        return entropy_step(self.model, self.optimizer, images)


class BatchStatsCloudEdge(CloudEdgeStrategy):
    """Cloud-edge pair for Tent-style methods: an edge copy and a cloud copy of the source
    model, both normalising with batch statistics; the cloud trains the BN affine parameters."""

    def __init__(self, context: StrategyContext, config) -> None:
        super().__init__(context, config)
        self._edge, _ = tent_model(context.edge_model)
        self._edge.requires_grad_(False)
        self.cloud, self.cloud_params = tent_model(copy.deepcopy(context.edge_model))

    @property
    def edge(self) -> nn.Module:
        return self._edge

    def cloud_edge_model(self) -> nn.Module:
        return self.cloud

    def learn(self, images: torch.Tensor | None) -> bool:
        if images is None or len(images) < 2:  # batch statistics need two samples
            return False
        self.work.cloud_forward += len(images)
        self.work.cloud_backward += self.cloud_step(images)
        return True

    def cloud_step(self, images: torch.Tensor) -> int:
        """One adaptation step on the arrived images; returns how many entered the loss."""
        raise NotImplementedError


class TentCloudEdge(BatchStatsCloudEdge):
    """Tent in the cloud-edge setting: the edge forwards and uploads every sample; the cloud
    runs the backward pass on what arrived and sends the BN affine parameters back. With an
    unlimited channel and no delay it predicts exactly as on-device Tent."""

    config_class = TentConfig

    def __init__(self, context: StrategyContext, config: TentConfig) -> None:
        super().__init__(context, config)
        self.optimizer = make_optimizer(self.cloud_params, config.optimizer, config.lr, config.momentum)
        self.trained_values = optimised_values(self.optimizer)

    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones(len(images), dtype=torch.bool, device=images.device), entropy(logits)

    def cloud_step(self, images: torch.Tensor) -> int:
        entropy_step(self.cloud, self.optimizer, images)
        return len(images)


make_tent.config_class = TentConfig  # type: ignore[attr-defined]
make_tent.placements = PLACEMENTS  # type: ignore[attr-defined]
