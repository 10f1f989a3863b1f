"""T3A (Iwasawa and Matsuo, NeurIPS 2021; shared/spec/methods-more.md section 10): the linear
head is replaced by class prototypes built from a support set of test features, filtered by
entropy. Backward-free and edge only: nothing is uploaded or downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.common import entropy
from cema_cli.strategies.options import positive_int
from cema_cli.strategies.precision import float32_region


@dataclass(frozen=True)
class T3AConfig:
    """Section 10.3: filter_K 20 (FOA's ImageNet-C setting; no CIFAR value is published, so the
    same 20 is cema's recorded default there)."""

    filter_k: int = 20  # supports kept per class, lowest entropy first; -1 keeps all (trap 1)

    presets: ClassVar[dict[str, dict]] = {"imagenet": {}, "cifar10": {}, "cifar100": {}}

    def validate(self) -> None:
        if self.filter_k != -1:  # -1 keeps every support (section 10.6 trap 1)
            positive_int("filter_k", self.filter_k)


class SupportSet:
    """Features, labels (class indices) and entropies of the supports (section 10.2)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, entropies: torch.Tensor) -> None:
        self.features, self.labels, self.entropies = features, labels, entropies

    def append(self, features: torch.Tensor, labels: torch.Tensor, entropies: torch.Tensor) -> None:
        self.features = torch.cat([self.features, features])
        self.labels = torch.cat([self.labels, labels])
        self.entropies = torch.cat([self.entropies, entropies])

    def filter(self, keep_per_class: int, num_classes: int) -> None:
        """Item 3: per class in ascending order, the ``keep_per_class`` lowest-entropy supports."""
        kept = []
        for c in range(num_classes):
            members = (self.labels == c).nonzero().flatten()
            order = members[self.entropies[members].argsort(stable=True)]
            kept.append(order if keep_per_class == -1 else order[:keep_per_class])
        index = torch.cat(kept)
        self.features, self.labels, self.entropies = self.features[index], self.labels[index], self.entropies[index]

    def prototypes(self, num_classes: int) -> torch.Tensor:
        """Item 4: w_c = normalised sum of the unit-norm supports of class c (zero if none); C x d."""
        onehot = F.one_hot(self.labels, num_classes).to(self.features.dtype)
        return F.normalize(F.normalize(self.features, dim=1).T @ onehot, dim=0).T


def warmup_supports(weight: torch.Tensor, bias: torch.Tensor) -> SupportSet:
    """The initial (and reset) support set: W's rows, labelled by the head's argmax on them."""
    logits = weight @ weight.T + bias
    return SupportSet(weight.detach().clone(), logits.argmax(dim=1), entropy(logits).detach())


class T3A(Strategy):
    """Eval mode, source BN statistics; the batch's features join the support set before it is
    predicted (transductive, section 10.6 trap 2); logits are z . w_c, no bias."""

    config_class = T3AConfig
    placements = ("edge",)
    backward_free = True

    def __init__(self, context: StrategyContext, config: T3AConfig) -> None:
        super().__init__(context, config)
        self.model = context.edge_model.eval()
        with torch.no_grad():
            weight, bias = self.model.head_weights()
        self.num_classes = len(weight)
        self.supports = warmup_supports(weight.float(), bias.float())

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.adjusted_logits(images, adapt=False)

    @torch.inference_mode()
    def step(self, images: torch.Tensor) -> torch.Tensor:
        self.work.edge_forward += len(images)
        return self.adjusted_logits(images, adapt=True)

    def adjusted_logits(self, images: torch.Tensor, adapt: bool) -> torch.Tensor:
        """With ``adapt`` the support set is updated for good; without it (``predict``), the
        same computation runs on a copy, so predict and step score alike. The prototypes and
        scores are float32, also under --amp."""
        features, logits = self.model.features_and_logits(images)
        features, logits = features.float(), logits.float()
        supports = self.supports if adapt else SupportSet(self.supports.features, self.supports.labels, self.supports.entropies)
        with float32_region(features.device.type):
            supports.append(features, logits.argmax(dim=1), entropy(logits))
            supports.filter(self.config.filter_k, self.num_classes)
            return features @ supports.prototypes(self.num_classes).T
