"""SAR (Niu et al., ICLR 2023; shared/spec/methods-more.md section 7): reliable entropy
minimisation with sharpness-aware steps on a subset of the norm affine parameters, and a
recovery that resets the model when the moving average of the entropy collapses."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from cema_cli.errors import CemaError
from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.common import entropy, entropy_threshold, make_optimizer
from cema_cli.strategies.precision import backward, scaler_for, step, unscale_finite
from cema_cli.strategies.subsets import (
    NameRule, SubsetCloudEdge, SubsetRule, load_parameter_state, parameter_state, subset_model, values_in,
)

PLACEMENTS = ("cloud", "edge")
OPTIMIZERS = ("sgd", "adam")
LR_RULES = ("official", "fixed")


def official_lr(batch_size: int, transformer: bool) -> float:
    """SAR ``main.py``'s learning rate (section 7.3; DeYO's ``main.py`` copies it, section 8.3):
    ViT 0.001 x B/64; ResNets 0.00025 at B >= 32 and 2 x 0.00025 x B/64 below; doubled at B = 1."""
    if transformer:
        lr = 0.001 * batch_size / 64
    else:
        lr = 0.00025 if batch_size >= 32 else 2 * 0.00025 * batch_size / 64
    return 2 * lr if batch_size == 1 else lr


def lr_for_run(config: Any, batch_size: int, transformer: bool, explicit: set[str]) -> Any:
    """``lr_rule=official``: the lr of ``official_lr`` for this run's batch and edge model. An lr
    given by the user wins and is recorded as ``lr_rule=fixed``; so is the preset's fixed lr."""
    if config.lr_rule != "official":
        return config
    if "lr" in explicit:
        return replace(config, lr_rule="fixed")
    return replace(config, lr=official_lr(batch_size, transformer))

# Section 7.1 (DeYO copies it, section 8.1): norm affine, minus ResNet layer4, ViT blocks 9-11
# and the final norm; "norm." matches nothing in the networks of the spec's table. The official
# code names nn.BatchNorm2d, the BatchNorm of image networks; BatchNorm1d is added, so that 1-D
# sensor networks have the same subset.
SAR_SUBSET = SubsetRule("SAR norm affine", (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm), (
    NameRule("layer4"), NameRule("blocks.9"), NameRule("blocks.10"), NameRule("blocks.11"),
    NameRule("norm."), NameRule("norm", exact=True),
))


@dataclass(frozen=True)
class SARConfig:
    """Section 7.3; the defaults are the ImageNet-C column. The lr follows the official rule for
    the run's batch size and model (``lr_rule=official``, see ``official_lr``); MD's CIFAR-10
    setting fixes it at 1e-3."""

    lr: float = 0.00025  # with lr_rule=official: replaced by official_lr(batch, model) at run time
    lr_rule: str = "official"  # official (SAR main.py's batch/model rule) | fixed (lr as given)
    momentum: float = 0.9  # SGD without Nesterov (section 6, "Optimisers")
    optimizer: str = "sgd"  # the base optimiser under SAM
    e0_factor: float = 0.4  # E_0 = 0.4 ln C
    rho: float = 0.05
    reset_threshold: float = 0.2  # recovery when e_m < 0.2
    ema: float = 0.9  # e_m <- 0.9 e_m + 0.1 L2
    keep_ema_after_reset: bool = False  # true: the official code's uncleared e_m (section 7.6 trap 2)
    # true: official sam.py@492c1ad, whose SAM.load_state_dict restores SAM's own state but leaves
    # the base SGD's momentum buffers; false: item 7 as the spec states it (optimiser state reset)
    keep_momentum_after_reset: bool = False
    upload: str = "reliable"  # cloud placement: reliable samples only, or all (exact with BN, 7.5)
    placement: str = "cloud"

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "imagenet": {"lr": 0.00025, "lr_rule": "official", "optimizer": "sgd"},
        "cifar10": {"lr": 1e-3, "lr_rule": "fixed", "optimizer": "sgd"},  # MD builds SAM-SGD whatever its yaml says
    }

    def for_run(self, batch_size: int, transformer: bool, explicit: set[str]) -> "SARConfig":
        return lr_for_run(self, batch_size, transformer, explicit)

    def validate(self) -> None:
        check_options("sar", {
            "lr": (self.lr > 0, "a positive learning rate"),
            "lr_rule": (self.lr_rule in LR_RULES, f"one of {', '.join(LR_RULES)}"),
            "momentum": (0 <= self.momentum < 1, "in [0, 1)"),
            "optimizer": (self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            "e0_factor": (self.e0_factor > 0, "positive (E_0 = factor x ln C)"),
            "rho": (self.rho >= 0, "0 or more"),
            "reset_threshold": (self.reset_threshold >= 0, "0 (never reset) or more"),
            "ema": (0 <= self.ema < 1, "in [0, 1)"),
            "upload": (self.upload in ("reliable", "all"), "reliable or all"),
        }, self)


def check_options(method: str, checks: dict[str, tuple[bool, str]], config: Any) -> None:
    """One clear error for the first option whose value has no meaning; a number must also be
    finite (``rho=inf`` or ``lr=inf`` passes ``>= 0`` and wrecks the first step)."""
    for name, (ok, meaning) in checks.items():
        value = getattr(config, name)
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (ok and finite):
            raise CemaError(f"option {method}.{name}={value!r} is invalid: it must be {'' if finite else 'finite and '}{meaning}.")


class SAM:
    """Sharpness-aware minimisation around a base optimiser, non-adaptive (section 7.2 items 3
    and 6): climb to theta + rho g/||g||, take the gradient there, step from theta."""

    def __init__(self, params: list[nn.Parameter], base: torch.optim.Optimizer, rho: float) -> None:
        self.params = params
        self.base = base
        self.rho = rho
        self.saved: list[tuple[nn.Parameter, torch.Tensor]] = []

    @torch.no_grad()
    def ascend(self) -> None:
        """Add eps = rho g/(||g|| + 1e-12), remembering the old values; clear the gradients."""
        with_grad = [p for p in self.params if p.grad is not None]
        norm = torch.norm(torch.stack([p.grad.norm(2) for p in with_grad]), 2)
        self.saved = [(p, p.detach().clone()) for p in with_grad]
        for p in with_grad:
            p.add_(p.grad * (self.rho / (norm + 1e-12)))
        self.base.zero_grad(set_to_none=True)

    @torch.no_grad()
    def descend(self, scaler: torch.amp.GradScaler | None = None) -> None:
        """Put the remembered values back, then one base step with the gradients of theta + eps
        (through ``scaler`` under float16 autocast: skipped when they are not finite)."""
        for p, old in self.saved:
            p.copy_(old)
        step(self.base, scaler)
        self.base.zero_grad(set_to_none=True)


class Recovery:
    """The moving average e_m of L2 and the reset rule (section 7.2 items 5 and 7, trap 2)."""

    def __init__(self, threshold: float, factor: float, keep_after_reset: bool) -> None:
        self.threshold = threshold
        self.factor = factor
        self.keep_after_reset = keep_after_reset
        self.average: float | None = None

    def update(self, loss: float) -> None:
        """e_m <- L2 the first time, else factor e_m + (1 - factor) L2; a NaN L2 (empty S2) is skipped."""
        if math.isnan(loss):
            return
        self.average = loss if self.average is None else self.factor * self.average + (1 - self.factor) * loss

    def reset_due(self) -> bool:
        """Whether to reset now; e_m is cleared then, unless the official behaviour is asked for."""
        due = self.average is not None and self.average < self.threshold
        if due and not self.keep_after_reset:
            self.average = None
        return due


@dataclass
class SARStep:
    logits: torch.Tensor  # the first forward's, detached: the scored prediction
    reliable: int  # |S1|
    kept: int  # |S2|


class SARLearner:
    """One SAR step per batch on ``model`` (section 7.2), with the recovery snapshot taken here."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], config: SARConfig, num_classes: int) -> None:
        self.model = model
        self.params = params
        base = make_optimizer(list(params.values()), config.optimizer, config.lr, config.momentum)
        self.sam = SAM(list(params.values()), base, config.rho)
        self.e0 = entropy_threshold(config.e0_factor, num_classes)
        self.recovery = Recovery(config.reset_threshold, config.ema, config.keep_ema_after_reset)
        self.keep_momentum = config.keep_momentum_after_reset
        self.snapshot = parameter_state(params), base.state_dict()
        self.resets = 0

    def step(self, images: torch.Tensor) -> SARStep:
        """Under float16 autocast both backward passes are scaled by the base optimiser's
        GradScaler; the ascent reads unscaled gradients, and a first pass that overflowed skips
        the batch's update as a scaled step would be skipped (precision.py)."""
        logits = self.model(images)
        ent = entropy(logits)
        reliable = ent.detach() < self.e0
        scaler = scaler_for(self.sam.base, images.device.type)
        backward(ent[reliable].mean(), scaler)  # NaN loss, zero gradients when S1 is empty (7.2)
        if not unscale_finite(self.sam.base, scaler):
            self.sam.base.zero_grad(set_to_none=True)
            return SARStep(logits.detach(), int(reliable.sum()), 0)
        self.sam.ascend()
        ent2 = entropy(self.model(images))[reliable]
        kept = ent2.detach() < self.e0
        loss2 = ent2[kept].mean()
        self.recovery.update(loss2.item())
        backward(loss2, scaler)
        self.sam.descend(scaler)  # the momentum still moves the parameters when S1 or S2 is empty
        if self.recovery.reset_due():
            self.reset()
        return SARStep(logits.detach(), int(reliable.sum()), int(kept.sum()))

    def reset(self) -> None:
        """Item 7: every trainable tensor and the optimiser state back to the construction snapshot."""
        values, optimizer_state = self.snapshot
        load_parameter_state(self.model, values)
        if not self.keep_momentum:
            self.sam.base.load_state_dict(optimizer_state)
        self.resets += 1

    def log(self) -> dict[str, float]:
        average = self.recovery.average
        return {"sar_ema": math.nan if average is None else average, "sar_resets": self.resets}


def make_sar(context: StrategyContext, config: SARConfig) -> Strategy:
    return SAROnEdge(context, config) if config.placement == "edge" else SARCloudEdge(context, config)


make_sar.config_class = SARConfig  # type: ignore[attr-defined]
make_sar.placements = PLACEMENTS  # type: ignore[attr-defined]


class SAROnEdge(Strategy):
    """The original SAR on the device: two forwards and two backwards per batch, nothing uploaded."""

    config_class = SARConfig

    def __init__(self, context: StrategyContext, config: SARConfig) -> None:
        super().__init__(context, config)
        self.model, params = subset_model(context.edge_model, SAR_SUBSET)
        self.trained_values = values_in(params)
        self.learner = SARLearner(self.model, params, config, context.num_classes)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        result = self.learner.step(images)
        self.work.edge_forward += 2 * len(images)
        self.work.edge_backward += result.reliable + result.kept  # samples each loss reads
        return result.logits

    def batch_log(self) -> dict[str, float]:
        return self.learner.log()


class SARCloudEdge(SubsetCloudEdge):
    """Section 7.5: the edge forwards with batch statistics and uploads its reliable samples,
    lowest entropy first (or all, ``upload=all``); the cloud takes one SAR step on what arrived,
    recovery included, and a sync sends the SAR subset down."""

    config_class = SARConfig
    rule = SAR_SUBSET

    def __init__(self, context: StrategyContext, config: SARConfig) -> None:
        super().__init__(context, config)
        self.learner = SARLearner(self.cloud, self.cloud_params, config, context.num_classes)

    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.work.edge_forward += len(images)
        ent = entropy(logits)
        return (torch.ones_like(ent, dtype=torch.bool) if self.config.upload == "all" else ent < self.learner.e0), ent

    def learn(self, images: torch.Tensor | None) -> bool:
        if images is None or len(images) < self.min_batch:
            return False
        result = self.learner.step(images)
        self.work.cloud_forward += 2 * len(images)
        self.work.cloud_backward += result.reliable + result.kept
        return True

    def batch_log(self) -> dict[str, float]:
        return self.learner.log()
