"""CEMA: Cloud-Edge Elastic Model Adaptation (ICLR 2024; methods.md section 4).

The edge (forward only, test-time batch renormalisation in eval mode) uploads the samples whose
entropy lies between E_min and a dynamic E_max; the cloud adapts a foundation model on them and
distils it, with replay, into its copy of the edge model; the edge receives that copy's norm
parameters and running moments through the channel.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cema_cli.models.norm import prepare_for_norm_adaptation
from cema_cli.strategies.base import StrategyContext, WorkCounts
from cema_cli.strategies.common import (
    CloudEdgeStrategy, RedundancyFilter, ReplayBuffer, entropy, entropy_threshold, make_optimizer,
    optimised_values, sample_weights, weighted_entropy_loss,
)
from cema_cli.strategies.eata import REDUNDANCY_MARGINS
from cema_cli.strategies.options import (
    InvalidOption, at_most, non_negative, non_negative_int, one_of, positive, positive_int, unit_interval,
)
from cema_cli.strategies.precision import minimise
from cema_cli.strategies.tbr import TBR_MOMENTS, running_moments, set_running_moments, use_batch_renorm


@dataclass(frozen=True)
class CEMAConfig:
    """The paper variant (section 4.2); every constant as published (ImageNet-C only: CEMA has
    no 10-class setting, so only its redundancy filter follows the dataset, as EATA's does)."""

    presets: ClassVar[dict[str, dict]] = {name: {"redundancy_margin": m} for name, m in REDUNDANCY_MARGINS.items()}

    e_max_factor: float = 0.4  # E_max0 = 0.4 ln C
    e_min_factor: float = 0.02  # E_min = 0.02 ln C; 0 disables the low-information exclusion
    dynamic_e_max: bool = True
    e_max_lambda: float = 1.0
    warmup_samples: int = 320  # W: undocumented upstream; 5 batches of 64
    redundancy_filter: bool = False
    redundancy_margin: float = 0.05
    cloud_batch: int = 32
    replay_batch: int = 96
    replay_min: int = 256
    replay_only_batch: int = 128
    buffer_capacity: int = 10_000
    foundation_lr: float = 0.00025
    distill_lr: float = 0.0025
    momentum: float = 0.9
    temperature: float = 1.0
    entropy_weight: float = 3.0
    kl_weight: float = 3.0
    ce_weight: float = 1.0
    tbr_moments: str = "welford"  # TBR's batch variance: torch.var; "two-pass" is faster on CPU, differs in the last bits
    replay_seed: int = -1  # seeds the replay draws alone; -1: the run seed (which also sets the stream)

    def validate(self) -> None:
        for name in ("e_max_factor", "e_max_lambda", "temperature"):
            positive(name, getattr(self, name))
        for name in ("e_min_factor", "foundation_lr", "distill_lr", "entropy_weight", "kl_weight", "ce_weight"):
            non_negative(name, getattr(self, name))
        at_most("e_min_factor", self.e_min_factor, "e_max_factor", self.e_max_factor, "no entropy would lie between E_min and E_max")
        for name in ("momentum", "redundancy_margin"):
            unit_interval(name, getattr(self, name))
        for name in ("cloud_batch", "replay_only_batch", "buffer_capacity"):
            positive_int(name, getattr(self, name))
        for name in ("warmup_samples", "replay_batch", "replay_min"):
            non_negative_int(name, getattr(self, name))
        one_of("tbr_moments", self.tbr_moments, TBR_MOMENTS)
        if not -1 <= self.replay_seed <= 2**63 - 1:
            raise InvalidOption("replay_seed", self.replay_seed, "must be -1 (the run seed) or a seed from 0 to 2**63-1")
        self.validate_replay()

    def validate_replay(self) -> None:
        """Every replay draw must fit in what the buffer holds when it is drawn (section 4.3)."""
        at_most("replay_min", self.replay_min, "buffer_capacity", self.buffer_capacity, "the buffer would never hold enough to replay")
        at_most("replay_batch", self.replay_batch, "replay_min", self.replay_min, "the first draw comes when the buffer holds replay_min")
        at_most("replay_only_batch", self.replay_only_batch, "replay_min + 1", self.replay_min + 1,
                "replay-only steps start when the buffer holds more than replay_min")


@dataclass(frozen=True)
class CEMAOfficialConfig(CEMAConfig):
    """The official-code variant (section 4.2): static E_max, no E_min, EATA's redundancy filter."""

    e_min_factor: float = 0.0
    dynamic_e_max: bool = False
    redundancy_filter: bool = True


class DynamicEMax:
    """E_max(t) = lambda * E_max0 * Ebar(t) / Ebar_w (section 4.2, step 3).

    Ebar(t) is the cumulative mean entropy of every edge sample so far, this batch included;
    Ebar_w is Ebar frozen when the warm-up of W samples ends; before that E_max(t) = E_max0.
    """

    def __init__(self, e_max0: float, lam: float, warmup_samples: int, dynamic: bool) -> None:
        self.e_max0, self.lam, self.warmup, self.dynamic = e_max0, lam, warmup_samples, dynamic
        self.seen = 0
        self.total = 0.0
        self.warm_mean: float | None = None
        self.current = e_max0

    def update(self, ent: torch.Tensor) -> float:
        self.seen += len(ent)
        self.total += float(ent.sum())
        mean = self.total / self.seen
        if self.warm_mean is None and self.seen >= self.warmup:
            self.warm_mean = mean
        if self.dynamic and self.warm_mean is not None and self.warm_mean > 0:
            self.current = self.lam * self.e_max0 * mean / self.warm_mean
        return self.current


class CEMAEdge:
    """The edge half: TBR in eval mode, forward only, and the entropy gate that picks uploads."""

    def __init__(self, model: nn.Module, config: CEMAConfig, num_classes: int) -> None:
        self.model = use_batch_renorm(model, config.tbr_moments).eval().requires_grad_(False)
        e_max0 = entropy_threshold(config.e_max_factor, num_classes)
        self.e_max = DynamicEMax(e_max0, config.e_max_lambda, config.warmup_samples, config.dynamic_e_max)
        self.e_min = entropy_threshold(config.e_min_factor, num_classes)
        self.redundancy = RedundancyFilter(config.redundancy_margin) if config.redundancy_filter else None
        self.gate: dict[str, float] = {}  # the last batch's entropies against both thresholds (batches.csv)

    def select(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(upload mask, entropy): E_min < E < E_max(t) (steps 3-4), then optionally the redundancy filter."""
        ent = entropy(logits)
        e_max = self.e_max.update(ent)
        mask = (ent < e_max) & (ent > self.e_min)
        self.gate = {"e_min": self.e_min, "mean_entropy": float(ent.mean()), "below_e_min": int((ent <= self.e_min).sum()),
                     "above_e_max": int((ent >= e_max).sum())}
        if self.redundancy is not None:
            kept = mask.clone()
            mask[kept] = self.redundancy.keep(logits[kept].softmax(dim=1))
        return mask, ent


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, e_max0: float, config: CEMAConfig) -> torch.Tensor:
    """L = 3 L_ent + 3 L_kl + 1 L_ce with constant, unclipped weights (section 4.3, step 2):
    L_ent = mean(w_e E(z_e)), L_kl = mean(w_f T^2 KL(p_f^T || p_e^T)), L_ce = mean(w_f CE(z_e, argmax z_f))."""
    t = config.temperature
    ent_student = entropy(student)
    w_e = sample_weights(ent_student, e_max0)
    w_f = sample_weights(entropy(teacher), e_max0)
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="none", log_target=True).sum(dim=1)
    l_ent = (w_e * ent_student).mean()
    l_kl = (w_f * t * t * kl).mean()
    l_ce = (w_f * F.cross_entropy(student, teacher.argmax(dim=1), reduction="none")).mean()
    return config.entropy_weight * l_ent + config.kl_weight * l_kl + config.ce_weight * l_ce


class CEMACloud:
    """The cloud half (section 4.3): a queue of uploads, a replay buffer, the foundation model
    and the cloud copy of the edge model (the student), both with TBR in training mode.
    ``work`` counts the samples of every forward and backward pass."""

    def __init__(self, foundation: nn.Module, student: nn.Module, config: CEMAConfig, num_classes: int, seed: int,
                 work: WorkCounts | None = None) -> None:
        self.config = config
        self.work = work if work is not None else WorkCounts()
        self.e_max0 = entropy_threshold(config.e_max_factor, num_classes)
        self.foundation = use_batch_renorm(foundation, config.tbr_moments).train()
        self.student = use_batch_renorm(student, config.tbr_moments).train()
        self.foundation_opt = make_optimizer(prepare_for_norm_adaptation(self.foundation), "sgd", config.foundation_lr, config.momentum)
        self.student_opt = make_optimizer(prepare_for_norm_adaptation(self.student), "sgd", config.distill_lr, config.momentum)
        self.queue: torch.Tensor | None = None
        self.buffer = ReplayBuffer(config.buffer_capacity, seed)
        self.steps = {"foundation": 0, "distill": 0, "replay_only": 0}

    def receive(self, images: torch.Tensor) -> None:
        """Uploaded samples enter the FIFO queue and the replay buffer."""
        self.queue = images if self.queue is None else torch.cat([self.queue, images])
        self.buffer.add(images)

    def run(self) -> bool:
        """Every full batch of 32 queued samples: adapt the foundation, then distil. With none,
        a replay-only distillation step once the buffer holds more than 256. Returns whether
        the student changed."""
        ran = False
        while self.queue is not None and len(self.queue) >= self.config.cloud_batch:
            batch, self.queue = self.queue[: self.config.cloud_batch], self.queue[self.config.cloud_batch :]
            self.adapt_foundation(batch)
            self.distil(self.with_replay(batch))
            ran = True
        if not ran and len(self.buffer) > self.config.replay_min:
            self.distil(self.buffer.sample(self.config.replay_only_batch))
            self.steps["replay_only"] += 1
            ran = True
        return ran

    def with_replay(self, batch: torch.Tensor) -> torch.Tensor:
        """D = the new samples plus 96 drawn from the buffer once it holds at least 256."""
        if len(self.buffer) < self.config.replay_min:
            return batch
        return torch.cat([batch, self.buffer.sample(self.config.replay_batch)])

    def adapt_foundation(self, batch: torch.Tensor) -> None:
        """mean(exp(E_max0 - E_f) * E_f) on the new samples only (step 1)."""
        loss = weighted_entropy_loss(self.foundation(batch), self.e_max0)
        self.work.cloud_forward += len(batch)
        self.work.cloud_backward += len(batch)
        minimise(self.foundation_opt, loss)
        self.steps["foundation"] += 1

    def distil(self, batch: torch.Tensor) -> None:
        """One SGD step of the distillation loss; the teacher runs in eval mode without gradient."""
        self.foundation.eval()
        with torch.no_grad():
            teacher = self.foundation(batch)
        self.foundation.train()
        loss = distillation_loss(self.student(batch), teacher, self.e_max0, self.config)
        self.work.cloud_forward += 2 * len(batch)  # teacher and student
        self.work.cloud_backward += len(batch)
        minimise(self.student_opt, loss)
        self.steps["distill"] += 1


class CEMA(CloudEdgeStrategy):
    """CEMA on the channel: edge and cloud halves never reference each other.

    In the official code the cloud student *is* the edge model, so its TBR moments start from
    the edge's first batch (64 samples, eval mode). Here the edge sends those moments up once,
    before its first uploads (a control packet counted in the uplink bytes), and the student
    starts from them; if the link drops them, the student starts from its own first batch.
    """

    config_class = CEMAConfig

    def __init__(self, context: StrategyContext, config: CEMAConfig) -> None:
        super().__init__(context, config)
        student = copy.deepcopy(context.edge_model)
        self.edge_half = CEMAEdge(context.edge_model, config, context.num_classes)
        replay_seed = context.seed if config.replay_seed == -1 else config.replay_seed
        self.cloud = CEMACloud(context.cloud_model(), student, config, context.num_classes, replay_seed, self.work)
        self.trained_values = optimised_values(self.cloud.student_opt)  # the edge model's values; the foundation's are not sent
        self.moments_sent = False

    @property
    def edge(self) -> nn.Module:
        return self.edge_half.model

    def cloud_edge_model(self) -> nn.Module:
        return self.cloud.student

    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.edge_half.select(logits)

    def learn(self, images: torch.Tensor | None) -> bool:
        if images is not None:
            self.cloud.receive(images)
        return self.cloud.run()

    def uplink_state(self) -> dict[str, torch.Tensor] | None:
        """The edge's TBR moments, once, right after the first batch initialised them (none on a
        model without BatchNorm, e.g. a LayerNorm text model: nothing is sent)."""
        if self.moments_sent:
            return None
        self.moments_sent = True
        return running_moments(self.edge) or None

    def load_uplink_state(self, state: dict[str, torch.Tensor]) -> None:
        set_running_moments(self.cloud.student, state)

    def batch_log(self) -> dict[str, float]:
        """E_max(t) and what the gate saw: a stream whose every sample falls at or below E_min
        uploads nothing, so the cloud never sees it (README, "CEMA in a continual stream")."""
        return {"e_max": self.edge_half.e_max.current, **self.edge_half.gate}


class CEMAOfficial(CEMA):
    config_class = CEMAOfficialConfig
