"""LAME (Boudiaf et al., CVPR 2022; shared/spec/methods-more.md section 9): a per-batch,
backward-free correction of the output probabilities by a feature-affinity graph (Laplacian
regularised maximum likelihood). Edge only: nothing is trained, uploaded or downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.options import non_negative, one_of, positive, positive_int
from cema_cli.strategies.precision import float32_region

AFFINITIES = ("rbf", "kNN", "linear")


@dataclass(frozen=True)
class LAMEConfig:
    """Section 9.3; the same constants on ImageNet-C and CIFAR-10-C (official defaults, MD)."""

    affinity: str = "rbf"  # rbf (official, MD) | kNN (FOA, with force_symmetry) | linear
    knn: int = 5
    sigma: float = 1.0  # configured in the original, unused by rbf (section 9.6 trap 2); recorded
    force_symmetry: bool = False
    lam: float = 1.0  # lambda, the weight of the pairwise term
    max_steps: int = 100
    tolerance: float = 1e-8  # relative change of the energy that stops the iterations

    presets: ClassVar[dict[str, dict]] = {"imagenet": {}, "cifar10": {}, "cifar100": {}}

    def validate(self) -> None:
        one_of("affinity", self.affinity, AFFINITIES)
        positive_int("knn", self.knn)
        positive("sigma", self.sigma)
        non_negative("lam", self.lam)
        positive_int("max_steps", self.max_steps)
        non_negative("tolerance", self.tolerance)


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """D_ij = ||f_i - f_j|| (Euclidean, computed from the differences as the original does)."""
    return torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")


def affinity_matrix(features: torch.Tensor, config: LAMEConfig) -> torch.Tensor | None:
    """W of section 9.2 item 4 on unit-norm features; None when rbf's sigma is 0 (trap 3)."""
    if config.affinity == "linear":
        kernel = features @ features.T
    else:
        dist = pairwise_distances(features)
        n = len(features)
        if config.affinity == "kNN":
            nearest = dist.topk(min(config.knn + 1, n), dim=1, largest=False).indices[:, 1:]
            kernel = torch.zeros_like(dist).scatter_(1, nearest, 1.0)
        else:  # rbf: the k-th smallest distance counts the zero self-distance
            sigma = dist.topk(min(config.knn, n), dim=1, largest=False).values[:, -1].mean()
            if sigma == 0:
                return None
            kernel = torch.exp(-dist**2 / (2 * sigma**2))
    return (kernel + kernel.T) / 2 if config.force_symmetry else kernel


def laplacian_optimization(unary: torch.Tensor, kernel: torch.Tensor, config: LAMEConfig) -> torch.Tensor:
    """Section 9.2 item 5: Y <- softmax(-a + lambda W Y), at most ``max_steps`` times, stopping
    when t > 1 and the energy changed by at most ``tolerance`` of its previous value."""
    y = (-unary).softmax(dim=1)
    old_energy = float("inf")
    for t in range(config.max_steps):
        pairwise = config.lam * kernel @ y
        y = (-unary + pairwise).softmax(dim=1)
        energy = float((unary * y - config.lam * pairwise * y + y * torch.log(y.clamp_min(1e-20))).sum())
        if t > 1 and abs(energy - old_energy) <= config.tolerance * abs(old_energy):
            break
        old_energy = energy
    return y


def lame_probabilities(features: torch.Tensor, logits: torch.Tensor, config: LAMEConfig) -> torch.Tensor:
    """Y for one batch (section 9.2 items 2-6); p unchanged when N = 1 or sigma = 0 (trap 3)."""
    probs = logits.softmax(dim=1)
    if len(logits) < 2:
        return probs
    kernel = affinity_matrix(F.normalize(features, p=2, dim=1), config)
    if kernel is None:
        return probs
    return laplacian_optimization(-torch.log(probs + 1e-10), kernel, config)


class LAME(Strategy):
    """Eval mode with the source BN statistics; each batch's probabilities are corrected and
    returned as log Y (section 6, logits contract). Stateless across batches."""

    config_class = LAMEConfig
    placements = ("edge",)
    backward_free = True

    def __init__(self, context: StrategyContext, config: LAMEConfig) -> None:
        super().__init__(context, config)
        self.model = context.edge_model.eval()
        self.model.head()  # a clear error now if the model has no linear head

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        features, logits = self.model.features_and_logits(images)
        with float32_region(features.device.type):  # the affinities and iterations in float32, also under --amp
            probs = lame_probabilities(features.float(), logits.float(), self.config)
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))  # softmax(log Y) = Y

    def step(self, images: torch.Tensor) -> torch.Tensor:
        self.work.edge_forward += len(images)
        return self.predict(images)
