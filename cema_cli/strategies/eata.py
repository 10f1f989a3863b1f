"""ETA and EATA (Niu et al., ICML 2022; methods.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cema_cli.errors import CemaError
from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.common import (
    RedundancyFilter, entropy, entropy_threshold, make_optimizer, optimised_values, weighted_entropy_loss,
)
from cema_cli.strategies.options import OPTIMIZERS, non_negative, one_of, positive, positive_int, unit_interval
from cema_cli.strategies.precision import float32_region, minimise
from cema_cli.strategies.tent import ADAM_CIFAR, PLACEMENTS, BatchStatsCloudEdge, tent_model

# The redundancy margin d_margin by dataset (fidelity/reference.md, "Published settings"): 0.05
# on ImageNet (EATA main.py), 0.4 on CIFAR-10, 0.1 on CIFAR-100 (test-time-adaptation cfgs).
# With non-negative probabilities cos(p, m) stays above about 1/sqrt(C), so 0.05 passes nothing
# after the first batch when C = 10. CEMA's redundancy filter follows the same table.
REDUNDANCY_MARGINS = {"imagenet": 0.05, "cifar10": 0.4, "cifar100": 0.1}
ETA_PRESETS = {name: {"redundancy_margin": m, **({} if name == "imagenet" else ADAM_CIFAR)} for name, m in REDUNDANCY_MARGINS.items()}


@dataclass(frozen=True)
class ETAConfig:
    presets: ClassVar[dict[str, dict]] = ETA_PRESETS

    lr: float = 0.00025
    momentum: float = 0.9  # SGD only
    optimizer: str = "sgd"  # the cifar10/cifar100 presets: adam, lr 1e-3
    e0_factor: float = 0.4  # E_0 = 0.4 ln C
    redundancy_margin: float = 0.05  # keep |cos(p, m)| < 0.05 (ImageNet; see REDUNDANCY_MARGINS)
    placement: str = "cloud"  # cloud: the edge uploads the kept samples; edge: on-device EATA

    def validate(self) -> None:
        non_negative("lr", self.lr)
        unit_interval("momentum", self.momentum)
        positive("e0_factor", self.e0_factor)
        unit_interval("redundancy_margin", self.redundancy_margin)
        one_of("optimizer", self.optimizer, OPTIMIZERS)


@dataclass(frozen=True)
class EATAConfig(ETAConfig):
    # fisher_alpha of EATA's code: 2,000 on ImageNet, 1 on CIFAR-10/100.
    presets: ClassVar[dict[str, dict]] = {
        name: {**values, "fisher_beta": 2000.0 if name == "imagenet" else 1.0} for name, values in ETA_PRESETS.items()
    }

    needs_clean_samples: ClassVar[bool] = True  # the Fisher set; checked before any method runs

    fisher_beta: float = 2000.0
    fisher_samples: int = 2000  # clean in-distribution images for the Fisher (500 are enough)
    fisher_batch_size: int = 64

    def validate(self) -> None:
        super().validate()
        non_negative("fisher_beta", self.fisher_beta)
        positive_int("fisher_samples", self.fisher_samples)
        positive_int("fisher_batch_size", self.fisher_batch_size)


def fisher_diagonal(model: nn.Module, params: list[nn.Parameter], images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Diagonal Fisher of ``params``: squared gradients of the cross-entropy against the model's
    own predicted labels, accumulated per batch and divided by the number of batches (step 4).
    Always float32, also under --amp: a one-off set-up whose squared float16 gradients would underflow."""
    fisher = [torch.zeros_like(p) for p in params]
    batches = list(torch.split(images, batch_size))
    with float32_region(images.device.type):
        for batch in batches:
            logits = model(batch)
            loss = F.cross_entropy(logits, logits.argmax(dim=1))
            grads = torch.autograd.grad(loss, params)
            for f, g in zip(fisher, grads):
                f += g.detach() ** 2
    return [f / len(batches) for f in fisher]


class FisherAnchor:
    """beta * sum_k F_k (theta_k - theta0_k)^2 around the parameters before adaptation."""

    def __init__(self, params: list[nn.Parameter], fisher: list[torch.Tensor], beta: float) -> None:
        self.params = params
        self.fisher = fisher
        self.anchor = [p.detach().clone() for p in params]
        self.beta = beta

    def penalty(self) -> torch.Tensor:
        return self.beta * sum((f * (p - a) ** 2).sum() for p, f, a in zip(self.params, self.fisher, self.anchor))


class EATALearner:
    """The part of (E)ATA that takes gradient steps: weighted entropy plus the optional anchor."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], config: ETAConfig, e0: float, anchor: FisherAnchor | None) -> None:
        self.model = model
        self.optimizer = make_optimizer(params, config.optimizer, config.lr, config.momentum)
        self.e0 = e0
        self.anchor = anchor

    def update(self, logits: torch.Tensor) -> int:
        """One step on already-selected logits (which carry the graph); no samples, no step.
        Returns the number of samples in the loss (EATA's backward count)."""
        if len(logits) == 0:
            return 0
        loss = weighted_entropy_loss(logits, self.e0)
        if self.anchor is not None:
            loss = loss + self.anchor.penalty()
        minimise(self.optimizer, loss)
        return len(logits)


class SampleSelector:
    """Reliability (E < E_0) then redundancy (|cos(p, m)| < margin) filters (steps 1-2)."""

    def __init__(self, e0: float, margin: float) -> None:
        self.e0 = e0
        self.redundancy = RedundancyFilter(margin)

    def keep(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask of kept samples, their entropy)."""
        ent = entropy(logits)
        reliable = ent < self.e0
        mask = torch.zeros_like(reliable)
        mask[reliable] = self.redundancy.keep(logits[reliable].softmax(dim=1).detach())
        return mask, ent


def build_anchor(context: StrategyContext, model: nn.Module, params: list[nn.Parameter], config: ETAConfig) -> FisherAnchor | None:
    if not isinstance(config, EATAConfig):
        return None
    # Every domain starts from the same source model, so the Fisher is computed once per run;
    # its passes over clean images are set-up, not adaptation, and are not in ``work``.
    key = ("eata-fisher", config.fisher_samples, config.fisher_batch_size)
    if key not in context.cache:
        clean = context.clean_samples(config.fisher_samples)
        if len(clean) == 0:
            raise CemaError("EATA needs clean in-distribution images for its Fisher regulariser; name a clean folder, or use 'eta'.")
        context.cache[key] = fisher_diagonal(model, params, clean.to(context.device), config.fisher_batch_size)
    return FisherAnchor(params, context.cache[key], config.fisher_beta)


def make_eata(context: StrategyContext, config: ETAConfig) -> Strategy:
    return EATAOnEdge(context, config) if config.placement == "edge" else EATACloudEdge(context, config)


def make_eta(context: StrategyContext, config: ETAConfig) -> Strategy:
    return make_eata(context, config)


make_eata.config_class = EATAConfig  # type: ignore[attr-defined]
make_eta.config_class = ETAConfig  # type: ignore[attr-defined]
make_eata.placements = make_eta.placements = PLACEMENTS  # type: ignore[attr-defined]


class EATAOnEdge(Strategy):
    """The original (E)ATA: one forward on the whole batch, filter, weighted step on the device."""

    def __init__(self, context: StrategyContext, config: ETAConfig) -> None:
        super().__init__(context, config)
        self.model, params = tent_model(context.edge_model)
        e0 = entropy_threshold(config.e0_factor, context.num_classes)
        self.selector = SampleSelector(e0, config.redundancy_margin)
        self.learner = EATALearner(self.model, params, config, e0, build_anchor(context, self.model, params, config))
        self.trained_values = optimised_values(self.learner.optimizer)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        mask, _ = self.selector.keep(logits.detach())
        self.work.edge_forward += len(images)
        self.work.edge_backward += self.learner.update(logits[mask])
        return logits.detach()


class EATACloudEdge(BatchStatsCloudEdge):
    """(E)ATA in the cloud-edge setting: the edge filters and uploads the kept samples; the
    cloud's BN statistics therefore come from those samples alone (methods.md section 3, note)."""

    def __init__(self, context: StrategyContext, config: ETAConfig) -> None:
        super().__init__(context, config)
        e0 = entropy_threshold(config.e0_factor, context.num_classes)
        self.selector = SampleSelector(e0, config.redundancy_margin)
        anchor = build_anchor(context, self.cloud, self.cloud_params, config)
        self.learner = EATALearner(self.cloud, self.cloud_params, config, e0, anchor)
        self.trained_values = optimised_values(self.learner.optimizer)

    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.selector.keep(logits)

    def cloud_step(self, images: torch.Tensor) -> int:
        return self.learner.update(self.cloud(images))
