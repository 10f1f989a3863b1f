"""CoTTA (Wang et al., CVPR 2022; shared/spec/methods-more.md section 11): a student trained on
every parameter against an EMA teacher, whose prediction is averaged over 32 augmentations
(section 6.1) when a frozen anchor is unconfident, and a stochastic restore towards the source.

Placements (section 11.5): ``cloud`` (default) keeps the anchor and a teacher on the edge and the
student plus its own teacher copy in the cloud; every sample goes up with the batch's augmentation
flag, and the whole teacher comes down at each sync. ``edge`` runs the original on the device.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cema_cli.link.channel import encode_uplink
from cema_cli.strategies.augment import cotta_augment
from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.bn import use_batch_statistics
from cema_cli.strategies.common import CloudEdgeStrategy, make_optimizer, optimised_values
from cema_cli.strategies.options import OPTIMIZERS, non_negative, one_of, positive_int, unit_interval
from cema_cli.strategies.randomness import batch_generator

PLACEMENTS = ("cloud", "edge")
SGD_MOMENTUM = 0.9  # section 6, "Optimisers"
LOSSES = ("symmetric", "teacher_ce")
AUGMENT_STREAM, RESTORE_STREAM = 0, 1  # independent per-batch generators (section 6, "Randomness")


@dataclass(frozen=True)
class CoTTAConfig:
    """Section 11.3; defaults are the official ImageNet-C values, ``presets`` the CIFAR ones."""

    lr: float = 0.01
    optimizer: str = "sgd-n"  # SGD with Nesterov momentum 0.9 (section 6, "Optimisers"); adam on CIFAR
    teacher_momentum: float = 0.999  # m
    restore_prob: float = 0.001  # p
    ap: float = 0.1  # anchor confidence threshold
    augmentations: int = 32
    loss: str = "symmetric"  # ImageNet form; teacher_ce is the CIFAR form (as MD, by dataset family)
    placement: str = "cloud"

    presets: ClassVar[dict[str, dict]] = {
        "imagenet": {},
        "cifar10": {"lr": 1e-3, "optimizer": "adam", "restore_prob": 0.01, "ap": 0.92, "loss": "teacher_ce"},
        "cifar100": {"lr": 1e-3, "optimizer": "adam", "restore_prob": 0.01, "ap": 0.72, "loss": "teacher_ce"},
    }

    def validate(self) -> None:
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        one_of("loss", self.loss, LOSSES)
        non_negative("lr", self.lr)
        unit_interval("teacher_momentum", self.teacher_momentum)
        unit_interval("restore_prob", self.restore_prob)
        unit_interval("ap", self.ap)
        positive_int("augmentations", self.augmentations)


def frozen_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).requires_grad_(False)


def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_T <- m theta_T + (1 - m) theta_S for every parameter; buffers untouched (item 6)."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(momentum).add_(s, alpha=1 - momentum)


def restorable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every parameter named ``weight`` or ``bias`` of its own module, in module order."""
    return [(f"{mn}.{pn}" if mn else pn, p) for mn, m in model.named_modules()
            for pn, p in m.named_parameters(recurse=False) if pn in ("weight", "bias")]


def stochastic_restore(model: nn.Module, source: dict[str, torch.Tensor], prob: float, gen: torch.Generator) -> None:
    """Item 7: an independent Bernoulli(p) per element; where it is 1, the source value returns."""
    with torch.no_grad():
        for name, p in restorable(model):
            mask = (torch.rand(p.shape, generator=gen) < prob).to(p.device)
            p.copy_(torch.where(mask, source[name], p))


def cotta_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, form: str) -> torch.Tensor:
    """Item 4, averaged over the batch, the teacher detached."""
    t = teacher_logits.detach()
    cross = -(t.softmax(1) * student_logits.log_softmax(1)).sum(1)
    if form == "teacher_ce":
        return cross.mean()
    return (0.5 * cross - 0.5 * (student_logits.softmax(1) * t.log_softmax(1)).sum(1)).mean()


def cotta_model(model: nn.Module) -> nn.Module:
    """Batch-statistics BN, train mode (the official mode); copies are made after this."""
    return use_batch_statistics(model.train())


class CoTTACore:
    """What both placements share: the teacher's prediction with or without augmentation, and
    the student's learning step (items 1, 3-7), seeded per batch index."""

    def __init__(self, config: CoTTAConfig, seed: int) -> None:
        self.config, self.seed = config, seed

    def anchor_unconfident(self, anchor: nn.Module, images: torch.Tensor) -> bool:
        """Item 2-3's decision: the batch's mean top-1 anchor probability is below AP."""
        return bool(anchor(images).softmax(1).max(1).values.mean() < self.config.ap)

    @torch.no_grad()
    def teacher_logits(self, teacher: nn.Module, images: torch.Tensor, augment: bool, index: int) -> torch.Tensor:
        """teacher(x), or the mean of ``augmentations`` teacher(aug(x)) draws (item 3)."""
        if not augment:
            return teacher(images)
        gen = batch_generator(self.seed, index, AUGMENT_STREAM)
        draws = [teacher(cotta_augment(images, gen).to(images.device)) for _ in range(self.config.augmentations)]
        return torch.stack(draws).mean(0)

    def teacher_forwards(self, augment: bool) -> int:
        return self.config.augmentations if augment else 1

    def learn(self, student, teacher, optimizer, source, images, augment: bool, index: int) -> torch.Tensor:
        """Items 1 and 3-7 on one batch; returns the teacher's logits (computed before the update)."""
        student_logits = student(images)
        teacher_logits = self.teacher_logits(teacher, images, augment, index)
        loss = cotta_loss(student_logits, teacher_logits, self.config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema_update(teacher, student, self.config.teacher_momentum)
        stochastic_restore(student, source, self.config.restore_prob, batch_generator(self.seed, index, RESTORE_STREAM))
        return teacher_logits


def student_setup(model: nn.Module, config: CoTTAConfig) -> tuple[nn.Module, dict[str, torch.Tensor], torch.optim.Optimizer]:
    """The student (every parameter trainable), the source values it restores to, its optimiser."""
    student = model.requires_grad_(True)
    source = {name: p.detach().clone() for name, p in restorable(student)}
    return student, source, make_optimizer(list(student.parameters()), config.optimizer, config.lr, SGD_MOMENTUM)


def make_cotta(context: StrategyContext, config: CoTTAConfig) -> Strategy:
    return CoTTAOnEdge(context, config) if config.placement == "edge" else CoTTACloudEdge(context, config)


class CoTTAOnEdge(Strategy):
    """The original CoTTA on the device: anchor, teacher and student, backward included."""

    config_class = CoTTAConfig

    def __init__(self, context: StrategyContext, config: CoTTAConfig) -> None:
        super().__init__(context, config)
        self.core = CoTTACore(config, context.seed)
        model = cotta_model(context.edge_model)
        self.anchor, self.teacher = frozen_copy(model), frozen_copy(model)
        self.student, self.source, self.optimizer = student_setup(model, config)
        self.trained_values = optimised_values(self.optimizer)
        self.batches = 0

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        augment = self.core.anchor_unconfident(self.anchor, images)
        return self.core.teacher_logits(self.teacher, images, augment, self.batches)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            augment = self.core.anchor_unconfident(self.anchor, images)
        logits = self.core.learn(self.student, self.teacher, self.optimizer, self.source, images, augment, self.batches)
        n = len(images)
        self.work.edge_forward += n * (2 + self.core.teacher_forwards(augment))  # anchor, student, teacher
        self.work.edge_backward += n
        self.batches += 1
        return logits


class CoTTACloudEdge(CloudEdgeStrategy):
    """Section 11.5: the edge runs the anchor and its teacher and uploads every sample with the
    batch's augmentation flag (1 byte, carried by the batch's first packet, which goes first);
    the cloud recomputes the teacher's target with the same per-batch draws, trains the student,
    and sends every teacher parameter down. Exact with an unlimited channel and no delay."""

    config_class = CoTTAConfig
    placements = PLACEMENTS

    def __init__(self, context: StrategyContext, config: CoTTAConfig) -> None:
        super().__init__(context, config)
        self.core = CoTTACore(config, context.seed)
        model = cotta_model(context.edge_model)
        self.anchor, self._edge = frozen_copy(model), frozen_copy(model)
        self.cloud_teacher = frozen_copy(model)
        self.student, self.source, self.optimizer = student_setup(copy.deepcopy(model), config)
        self.trained_values = optimised_values(self.optimizer)
        self.batches = 0
        self.augment_flag = False

    @property
    def edge(self) -> nn.Module:
        return self._edge

    def cloud_edge_model(self) -> nn.Module:
        return self.cloud_teacher

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.augment_flag = self.core.anchor_unconfident(self.anchor, images)  # travels with the batch
        return self.core.teacher_logits(self._edge, images, self.augment_flag, self.batches)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = super().step(images)
        self.batches += 1
        return logits

    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.work.edge_forward += len(images) * (1 + self.core.teacher_forwards(self.augment_flag))
        priority = torch.zeros(len(images))
        priority[:1] = -1.0  # the packet that carries the flag goes first
        return torch.ones(len(images), dtype=torch.bool, device=images.device), priority

    def upload(self, images: torch.Tensor, priority: torch.Tensor) -> None:
        config = self.channel.config
        payload, sizes = encode_uplink(images, config.uplink_encoding, config.jpeg_quality)
        sizes = [s + (1 if i == 0 else 0) for i, s in enumerate(sizes)]
        packets = [(image, self.augment_flag, self.batches) for image in payload]
        self.channel.uplink.send(packets, sizes, priority.tolist())

    def arrived_images(self) -> Any:
        """The arrived samples grouped by edge batch: [(batch index, flag, images)]."""
        groups: dict[int, tuple[bool, list[torch.Tensor]]] = {}
        for packet in self.channel.uplink.receive():
            image, flag, index = packet.payload
            groups.setdefault(index, (flag, []))[1].append(image)
        return [(index, flag, torch.stack(images)) for index, (flag, images) in groups.items()]

    def learn(self, groups: Any) -> bool:
        for index, flag, images in groups:
            self.core.learn(self.student, self.cloud_teacher, self.optimizer, self.source, images, flag, index)
            self.work.cloud_forward += len(images) * (1 + self.core.teacher_forwards(flag))
            self.work.cloud_backward += len(images)
        return bool(groups)

    def downlink_state(self) -> dict[str, torch.Tensor]:
        """Every teacher parameter; no BN moments (batch statistics)."""
        return {name: p.detach().clone() for name, p in self.cloud_teacher.named_parameters()}

    def load_downlink_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self._edge.named_parameters():
                p.copy_(state[name])


make_cotta.config_class = CoTTAConfig  # type: ignore[attr-defined]
make_cotta.placements = PLACEMENTS  # type: ignore[attr-defined]
