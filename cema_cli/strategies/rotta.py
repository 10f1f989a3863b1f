"""RoTTA (Yuan et al., CVPR 2023; shared/spec/methods-more.md section 12): robust BN (12.1),
the category-balanced memory bank with timeliness and uncertainty (CSTU, 12.2), and an update of
the student's RBN affine every 64 stream samples against an EMA teacher, with a
timeliness-reweighted loss (12.3).

Placements (section 12.6): ``cloud`` (default) keeps the teacher and a metadata mirror of the
bank on the edge; every sample's (class, uncertainty) goes up (6 bytes each, one packet per
batch) and the image only when the bank admits it; the cloud runs the bank, the updates and the
EMA, and sends the teacher's RBN affine and moments down. ``edge`` runs the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cema_cli.link.channel import encode_uplink
from cema_cli.errors import CemaError
from cema_cli.strategies.augment import cotta_augment
from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.common import CloudEdgeStrategy, make_optimizer, optimised_values
from cema_cli.strategies.cotta import PLACEMENTS, SGD_MOMENTUM, frozen_copy
from cema_cli.strategies.options import OPTIMIZERS, non_negative, one_of, positive_int, unit_interval
from cema_cli.strategies.randomness import batch_generator

METADATA_BYTES = 6  # class as int16, uncertainty as float32, per sample (section 12.6)


@dataclass(frozen=True)
class RoTTAConfig:
    """Section 12.4: the same constants on ImageNet-C and CIFAR-10-C."""

    memory: int = 64  # K, the bank's capacity
    update_every: int = 64  # samples between updates
    nu: float = 0.001  # teacher EMA
    alpha: float = 0.05  # RBN momentum
    lambda_t: float = 1.0
    lambda_u: float = 1.0
    lr: float = 1e-3
    optimizer: str = "adam"
    placement: str = "cloud"

    presets: ClassVar[dict[str, dict]] = {"imagenet": {}, "cifar10": {}, "cifar100": {}}

    def validate(self) -> None:
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        positive_int("memory", self.memory)
        positive_int("update_every", self.update_every)
        unit_interval("nu", self.nu)
        unit_interval("alpha", self.alpha)
        non_negative("lambda_t", self.lambda_t)
        non_negative("lambda_u", self.lambda_u)
        non_negative("lr", self.lr)


class RobustBN(nn.Module):
    """Section 12.1: train mode normalises with (1 - alpha) running + alpha batch moments (biased
    variance; gradient through the batch part) and stores them; eval mode uses the running ones."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, alpha: float) -> None:
        super().__init__()
        if bn.running_mean is None or bn.weight is None:
            raise CemaError("RoTTA needs BatchNorm layers with running statistics and affine parameters; this model's lack them.")
        self.alpha, self.eps = alpha, bn.eps
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            dims = [0, *range(2, x.ndim)]
            var, mean = torch.var_mean(x, dim=dims, unbiased=False)
            mean = (1 - self.alpha) * self.running_mean + self.alpha * mean
            var = (1 - self.alpha) * self.running_var + self.alpha * var
            self.running_mean, self.running_var = mean.detach().clone(), var.detach().clone()
        else:
            mean, var = self.running_mean, self.running_var
        x = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return x * self.weight.view(shape) + self.bias.view(shape)


def use_robust_bn(model: nn.Module, alpha: float) -> nn.Module:
    """Replace every BatchNorm by a RobustBN (in place); an error if there is none."""
    def swap(parent: nn.Module) -> int:
        count = 0
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, RobustBN(child, alpha).to(child.weight.device))
                count += 1
            else:
                count += swap(child)
        return count

    if swap(model) == 0:
        raise CemaError("RoTTA replaces BatchNorm layers by robust BN, and this model has none; use a BatchNorm network.")
    return model


def robust_bn_layers(model: nn.Module) -> list[tuple[str, RobustBN]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RobustBN)]


def rbn_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, m in robust_bn_layers(model) for p in (m.weight, m.bias)]


def rbn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The downlink of section 12.6: every RBN's weight, bias, running mean and variance."""
    return {f"{name}.{key}": getattr(m, key).detach().clone()
            for name, m in robust_bn_layers(model) for key in ("weight", "bias", "running_mean", "running_var")}


def load_rbn_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, m in robust_bn_layers(model):
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(m, key).copy_(state[f"{name}.{key}"])


@dataclass
class MemoryItem:
    data: Any  # the uint8 image; None in the edge's metadata mirror
    uncertainty: float
    age: int = 0


class CSTUBank:
    """Section 12.2, item by item: per-class lists; a real-valued quota K/C; eviction of the
    highest score among the majority classes (or within the class at its quota); ages grow after
    every insertion attempt."""

    def __init__(self, capacity: int, num_classes: int, lambda_t: float = 1.0, lambda_u: float = 1.0) -> None:
        self.capacity, self.num_classes = capacity, num_classes
        self.lambda_t, self.lambda_u = lambda_t, lambda_u
        self.quota = capacity / num_classes
        self.classes: list[list[MemoryItem]] = [[] for _ in range(num_classes)]

    def __len__(self) -> int:
        return sum(len(items) for items in self.classes)

    def score(self, age: float, uncertainty: float) -> float:
        return self.lambda_t / (1 + math.exp(-age / self.capacity)) + self.lambda_u * uncertainty / math.log(self.num_classes)

    def add(self, data: Any, label: int, uncertainty: float) -> bool:
        """Insert if the rules allow; return whether the item was admitted."""
        admitted = self._make_room(label, self.score(0, uncertainty))
        if admitted:
            self.classes[label].append(MemoryItem(data, uncertainty))
        for items in self.classes:
            for item in items:
                item.age += 1
        return admitted

    def _make_room(self, label: int, new_score: float) -> bool:
        if len(self.classes[label]) >= self.quota:
            return self._evict([label], new_score)
        if len(self) < self.capacity:
            return True
        counts = [len(items) for items in self.classes]
        return self._evict([c for c, n in enumerate(counts) if n == max(counts)], new_score)

    def _evict(self, classes: list[int], new_score: float) -> bool:
        """Remove the highest-scoring item of ``classes`` (ties: the last found) if it scores
        above ``new_score``; True when there is room (or no item to compare)."""
        worst, worst_score = None, None
        for c in classes:
            for i, item in enumerate(self.classes[c]):
                s = self.score(item.age, item.uncertainty)
                if worst_score is None or s >= worst_score:
                    worst, worst_score = (c, i), s
        if worst is None:
            return True
        if worst_score > new_score:
            self.classes[worst[0]].pop(worst[1])
            return True
        return False

    def drop_last(self, label: int) -> None:
        """Remove the item just admitted to ``label`` (its image never arrived)."""
        self.classes[label].pop()

    def read(self) -> tuple[list[Any], torch.Tensor]:
        """All items, classes ascending, insertion order within a class; ages / K."""
        items = [item for items in self.classes for item in items]
        return [item.data for item in items], torch.tensor([item.age / self.capacity for item in items])


def timeliness_weights(ages: torch.Tensor) -> torch.Tensor:
    """w_j = exp(-a_j) / (1 + exp(-a_j)) (section 12.3)."""
    return torch.exp(-ages) / (1 + torch.exp(-ages))


def teacher_scores(logits: torch.Tensor) -> tuple[list[int], list[float]]:
    """Item 1: pseudo-labels and u = -sum p log(p + 1e-6), as Python numbers in batch order."""
    p = logits.softmax(1)
    return p.argmax(1).tolist(), (-(p * torch.log(p + 1e-6)).sum(1)).float().tolist()


class RoTTALearner:
    """The student, the teacher it averages into, the bank and the sample counter (items 2-3)."""

    def __init__(self, model: nn.Module, config: RoTTAConfig, num_classes: int, seed: int) -> None:
        self.config, self.seed = config, seed
        self.student = use_robust_bn(model, config.alpha).requires_grad_(False)
        self.teacher = frozen_copy(self.student)
        params = rbn_params(self.student)
        for p in params:
            p.requires_grad_(True)
        self.optimizer = make_optimizer(params, config.optimizer, config.lr, SGD_MOMENTUM)
        self.bank = CSTUBank(config.memory, num_classes, config.lambda_t, config.lambda_u)
        self.seen = 0
        self.updated_samples = 0  # samples through the update's forwards (each is 1 teacher + 1 student)

    def add(self, image: torch.Tensor | None, label: int, uncertainty: float) -> bool:
        """Insert one sample; run the update when the counter reaches a multiple of
        ``update_every``; return whether it was admitted."""
        admitted = self.bank.add(image, label, uncertainty)
        if admitted and image is None:
            self.bank.drop_last(label)  # admitted but its image is missing (a dropped upload)
        self.seen += 1
        if self.seen % self.config.update_every == 0:
            self.update()
        return admitted

    def update(self) -> None:
        images, ages = self.bank.read()
        if not images:
            return
        memory = torch.stack(images)
        strong = cotta_augment(memory, batch_generator(self.seed, self.seen)).to(memory.device)
        self.student.train(), self.teacher.train()
        with torch.no_grad():
            teacher_logits = self.teacher(memory)
        student_logits = self.student(strong)
        weights = timeliness_weights(ages).to(student_logits.device)
        loss = (weights * -(teacher_logits.softmax(1) * student_logits.log_softmax(1)).sum(1)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.student.eval(), self.teacher.eval()
        self.ema()
        self.updated_samples += len(memory)

    def ema(self) -> None:
        """theta_T <- (1 - nu) theta_T + nu theta_S on the trainable RBN affine only (trap 8)."""
        with torch.no_grad():
            for t, s in zip(rbn_params(self.teacher), rbn_params(self.student)):
                t.mul_(1 - self.config.nu).add_(s, alpha=self.config.nu)


def make_rotta(context: StrategyContext, config: RoTTAConfig) -> Strategy:
    return RoTTAOnEdge(context, config) if config.placement == "edge" else RoTTACloudEdge(context, config)


class RoTTAOnEdge(Strategy):
    """The original RoTTA on the device; the teacher, in eval mode, is scored."""

    config_class = RoTTAConfig

    def __init__(self, context: StrategyContext, config: RoTTAConfig) -> None:
        super().__init__(context, config)
        self.learner = RoTTALearner(context.edge_model.eval(), config, context.num_classes, context.seed)
        self.trained_values = optimised_values(self.learner.optimizer)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.learner.teacher.eval()(images)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.predict(images)
        before = self.learner.updated_samples
        for image, label, u in zip(images, *teacher_scores(logits)):
            self.learner.add(image, label, u)
        self.work.edge_forward += len(images) + 2 * (self.learner.updated_samples - before)
        self.work.edge_backward += self.learner.updated_samples - before
        return logits


class RoTTACloudEdge(CloudEdgeStrategy):
    """Section 12.6 (see the module docstring). With an unlimited channel, no delay and a sync
    every batch, it predicts exactly as ``edge``. An admitted image that the channel drops is
    removed from the cloud's bank; the edge's mirror, which hears nothing back, keeps it."""

    config_class = RoTTAConfig
    placements = PLACEMENTS

    def __init__(self, context: StrategyContext, config: RoTTAConfig) -> None:
        super().__init__(context, config)
        model = context.edge_model.eval()
        self._edge = use_robust_bn(frozen_copy(model), config.alpha).requires_grad_(False).eval()
        self.mirror = CSTUBank(config.memory, context.num_classes, config.lambda_t, config.lambda_u)
        self.cloud = RoTTALearner(model, config, context.num_classes, context.seed)
        self.trained_values = optimised_values(self.cloud.optimizer)
        self.batches = 0
        self.metadata: list[tuple[int, float]] = []  # this batch's (class, uncertainty), sent up
        self.positions: list[int] = []  # this batch's admitted samples

    @property
    def edge(self) -> nn.Module:
        return self._edge

    def cloud_edge_model(self) -> nn.Module:
        return self.cloud.teacher

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = super().step(images)
        self.batches += 1
        return logits

    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels, uncertainties = teacher_scores(logits)
        self.metadata = list(zip(labels, uncertainties))
        admitted = torch.tensor([self.mirror.add(None, y, u) for y, u in self.metadata], dtype=torch.bool)
        self.positions = admitted.nonzero().flatten().tolist()
        self.work.edge_forward += len(images)
        return admitted.to(images.device), torch.zeros(len(images))

    def upload(self, images: torch.Tensor, priority: torch.Tensor) -> None:
        """One metadata packet for the batch (first; a control packet: its bytes count, it is no
        upload), then the admitted images with their position."""
        config = self.channel.config
        payload, sizes = encode_uplink(images, config.uplink_encoding, config.jpeg_quality)
        packets = [("meta", self.batches, self.metadata)]
        packets += [("image", self.batches, (i, image)) for i, image in zip(self.positions, payload)]
        self.channel.uplink.send(packets, [METADATA_BYTES * len(self.metadata), *sizes], [-1.0, *priority.tolist()],
                                 control=[True] + [False] * len(sizes))

    def arrived_images(self) -> Any:
        """Per edge batch whose metadata arrived: (metadata, {position: image})."""
        batches: dict[int, list] = {}
        for packet in self.channel.uplink.receive():
            kind, index, body = packet.payload
            entry = batches.setdefault(index, [None, {}])
            if kind == "meta":
                entry[0] = body
            else:
                entry[1][body[0]] = body[1]
        return [entry for entry in batches.values() if entry[0] is not None]

    def learn(self, batches: Any) -> bool:
        """The authoritative bank sees every sample's (y, u) in stream order, with its image
        when it arrived; updates run every ``update_every`` samples."""
        before = self.cloud.updated_samples
        for metadata, images in batches:
            for i, (y, u) in enumerate(metadata):
                self.cloud.add(images.get(i), y, u)
        done = self.cloud.updated_samples - before
        self.work.cloud_forward += 2 * done
        self.work.cloud_backward += done
        return done > 0

    def downlink_state(self) -> dict[str, torch.Tensor]:
        return rbn_state(self.cloud.teacher)

    def load_downlink_state(self, state: dict[str, torch.Tensor]) -> None:
        load_rbn_state(self._edge, state)


make_rotta.config_class = RoTTAConfig  # type: ignore[attr-defined]
make_rotta.placements = PLACEMENTS  # type: ignore[attr-defined]
