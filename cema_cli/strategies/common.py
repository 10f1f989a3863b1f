"""Pieces shared by the adaptive strategies: entropy, sample filters, the replay buffer, and the
cloud-edge step that moves samples up and parameters down through the channel."""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from cema_cli.link.channel import encode_uplink, state_nbytes
from cema_cli.models.norm import load_norm_state, norm_state
from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.options import OPTIMIZERS


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """E(x) = -sum_c p_c log p_c with p = softmax(logits), per sample (methods.md, preamble)."""
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1)


def entropy_threshold(factor: float, num_classes: int) -> float:
    """factor * ln C, e.g. E_0 = 0.4 ln C (EATA) and E_max0 (CEMA); C comes from the dataset."""
    return factor * math.log(num_classes)


def sample_weights(ent: torch.Tensor, threshold: float) -> torch.Tensor:
    """exp(threshold - E), a constant (no gradient through it): EATA step 3, CEMA 4.3."""
    return torch.exp(threshold - ent.detach())


def weighted_entropy_loss(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """mean(exp(threshold - E) * E) over the samples (EATA step 3; CEMA's foundation loss)."""
    ent = entropy(logits)
    return (sample_weights(ent, threshold) * ent).mean()


def make_optimizer(params: list[nn.Parameter], name: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    """SGD with momentum (the ImageNet setting of every method; ``sgd-n`` with Nesterov, as CoTTA's
    ImageNet code) or Adam with betas (0.9, 0.999) and no weight decay (the CIFAR setting of Tent,
    ETA and EATA; fidelity/reference.md)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; config validation admits {OPTIMIZERS}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "sgd-n")


def optimised_values(optimizer: torch.optim.Optimizer) -> int:
    """The number of scalar values an optimiser changes: the row's ``trained_values``."""
    return sum(p.numel() for group in optimizer.param_groups for p in group["params"])


class RedundancyFilter:
    """EATA's redundancy filter (methods.md section 3, step 2).

    Keeps samples with |cos(p_i, m)| < margin, m a moving average of probability vectors:
    m <- 0.9 m + 0.1 mean(p of the samples that passed); unchanged when none passed. While m is
    undefined every sample passes and m becomes the mean p of those samples.
    """

    def __init__(self, margin: float, momentum: float = 0.9) -> None:
        self.margin = margin
        self.momentum = momentum
        self.mean_probs: torch.Tensor | None = None

    def keep(self, probs: torch.Tensor) -> torch.Tensor:
        """Boolean mask over ``probs`` (already reliable samples); updates the moving average."""
        if self.mean_probs is None:
            mask = torch.ones(len(probs), dtype=torch.bool, device=probs.device)
        else:
            cosine = F.cosine_similarity(self.mean_probs.unsqueeze(0), probs, dim=1)
            mask = cosine.abs() < self.margin
        self._update(probs[mask])
        return mask

    def _update(self, kept: torch.Tensor) -> None:
        if len(kept) == 0:
            return
        mean = kept.mean(dim=0).detach()
        self.mean_probs = mean if self.mean_probs is None else self.momentum * self.mean_probs + (1 - self.momentum) * mean


class ReplayBuffer:
    """A bounded FIFO of uploaded samples (methods.md section 4.3 and 4.5), kept as they crossed
    the link (uint8 images, int16 windows, token ids): a preallocated ring, never normalised
    float32, so 10,000 ImageNet samples take 1.5 GB, not 6 GB."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.data: torch.Tensor | None = None
        self.size = 0
        self.next = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, images: torch.Tensor) -> None:
        """Append images, overwriting the oldest once full."""
        images = images[-self.capacity :]
        if self.data is None:
            self.data = torch.empty((self.capacity, *images.shape[1:]), dtype=images.dtype, device=images.device)
        slots = (self.next + torch.arange(len(images))) % self.capacity
        self.data[slots.to(self.data.device)] = images
        self.next = (self.next + len(images)) % self.capacity
        self.size = min(self.size + len(images), self.capacity)

    def sample(self, count: int) -> torch.Tensor:
        """``count`` images drawn uniformly without replacement (seeded)."""
        assert self.data is not None and count <= self.size
        picks = torch.randperm(self.size, generator=self.generator)[:count]
        return self.data[picks.to(self.data.device)]


class CloudEdgeStrategy(Strategy):
    """The cloud-edge loop of methods.md section 0 and 4.4, one edge batch per call:

    1. the edge predicts (forward only) and picks samples to upload;
    2. the picked samples cross the uplink (with any ``uplink_state`` the edge sends up, e.g.
       CEMA's first-batch moments); the cloud learns on what arrived, in stream order;
    3. at every sync the cloud sends the edge model's norm parameters and running moments down;
    4. the edge loads whatever parameters arrived, for its next batch.

    Edge and cloud halves share no objects: only the channel connects them. With a real link
    (cema_cli/link), ``remote`` takes the cloud's turn in another process: this object's cloud
    half then stays idle, and the server runs its own copy's.
    """

    placements = ("cloud",)

    def __init__(self, context: StrategyContext, config) -> None:
        super().__init__(context, config)
        self.channel = context.channel
        self.unsent_update = False  # parameters are sent only when the cloud changed them
        self.remote = None  # a link.client.RemoteCloud when the cloud half runs across a real link

    @abstractmethod
    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge: (boolean upload mask, priority per sample; lower values go first)."""

    @abstractmethod
    def learn(self, images: torch.Tensor | None) -> bool:
        """Cloud: adapt on the uploaded images that arrived this batch (``None`` when none did);
        return whether the edge model's parameters changed."""

    @abstractmethod
    def cloud_edge_model(self) -> nn.Module:
        """Cloud: the model whose norm state is sent to the edge."""

    @property
    @abstractmethod
    def edge(self) -> nn.Module:
        """Edge: the model that serves predictions."""

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.edge(images)

    def adapted_models(self) -> dict[str, nn.Module]:
        """The models the engine checks here; across a real link the server checks the cloud's."""
        return {"edge": self.edge} if self.remote is not None else {"edge": self.edge, "cloud": self.cloud_edge_model()}

    def step(self, images: torch.Tensor) -> torch.Tensor:
        """One edge batch of a lone edge: the edge half, the cloud's turn, then the edge loads
        whatever parameters arrived. A fleet (cema_cli/run/fleet.py) calls the three itself."""
        logits = self.edge_phase(images)
        self.cloud_turn()
        self.apply_parameters()
        return logits

    def cloud_turn(self) -> None:
        """The cloud half on what arrived: here, or across the real link."""
        if self.remote is not None:
            self.remote.turn(self)
        else:
            self.cloud_phase(self.arrived_images())

    def edge_phase(self, images: torch.Tensor) -> torch.Tensor:
        """Edge: predict, send any uplink state, pick and upload samples; return the logits."""
        logits = self.predict(images)
        self.work.edge_forward += len(images)
        self.send_uplink_state()
        mask, priority = self.select(images, logits)
        self.upload(images[mask], priority[mask])
        return logits

    def cloud_phase(self, images: torch.Tensor | None) -> bool:
        """Cloud: learn on ``images`` (arrived uploads, or None), then send parameters if a sync
        is due and the cloud changed them since the last send. Returns whether learning changed them."""
        with self.context.cloud_meter:  # the cloud half: measured seconds, counted GFLOPs
            changed = self.learn(images)
            self.unsent_update |= changed
            self.sync_if_due()
        return changed

    def sync_if_due(self) -> None:
        """Cloud: send the parameters at a sync tick when they changed since the last send."""
        if self.unsent_update and self.channel.sync_due():
            self.send_parameters()
            self.unsent_update = False

    def upload(self, images: torch.Tensor, priority: torch.Tensor) -> None:
        config = self.channel.config
        payload, sizes = encode_uplink(images, config.uplink_encoding, config.jpeg_quality)
        self.channel.uplink.send(list(payload), sizes, priority.tolist())

    def arrived_images(self) -> torch.Tensor | None:
        """The uploads that arrived, in stream order; arrived edge state is loaded first."""
        return self.images_of(self.channel.uplink.receive())

    def images_of(self, packets: list) -> torch.Tensor | None:
        """Cloud: load the control packets' edge state; stack the samples (None when there are none)."""
        for packet in packets:
            if packet.control:
                self.load_uplink_state(packet.payload)
        images = [p.payload for p in packets if not p.control]
        return torch.stack(images) if images else None

    def uplink_state(self) -> dict[str, torch.Tensor] | None:
        """Edge: tensors to send up before this batch's uploads (default: none)."""
        return None

    def load_uplink_state(self, state: dict[str, torch.Tensor]) -> None:
        """Cloud: take a received ``uplink_state``."""

    def send_uplink_state(self) -> None:
        """Send ``uplink_state`` as one control packet, first in line, counted in uplink bytes."""
        state = self.uplink_state()
        if state is not None:
            self.channel.uplink.send([state], [state_nbytes(state, "float32")], [-math.inf], control=True)

    def downlink_state(self) -> dict[str, torch.Tensor]:
        """Cloud: the tensors sent at a sync, exactly those the cloud changed and the edge reads
        (default: the norm layers' affine parameters and running moments)."""
        return norm_state(self.cloud_edge_model())

    def load_downlink_state(self, state: dict[str, torch.Tensor]) -> None:
        """Edge: take a received ``downlink_state`` into the predicting model."""
        load_norm_state(self.edge, state)

    def send_parameters(self) -> None:
        dtype = self.channel.config.downlink_dtype
        state = {k: v.to(getattr(torch, dtype)) for k, v in self.downlink_state().items()}
        self.channel.downlink.send([state], [state_nbytes(state, dtype)])

    def apply_parameters(self) -> None:
        for packet in self.channel.downlink.receive():
            self.load_downlink_state(packet.payload)
            self.channel.note_params_applied(packet)
