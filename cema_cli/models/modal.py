"""Source models of the ``watch`` and ``sentiment`` datasets, trained by the project on their
source domains only, deterministically (seeded initial weights, data order and dropout-free
nets), and shipped like the digit models (cema_cli/models/embedded.py does the caching).

- ``watch-edge``: a 1-D CNN with BatchNorm (4 blocks), about 30k parameters;
  ``watch-foundation``: a 1-D BatchNorm ResNet, about 0.5M. Both train on the right-wrist
  windows of subjects 1-7 (the first 60% of each recording), cut every 0.2 s instead of every
  second (5x the windows: the training windows overlap, the test windows never do).
- ``sentiment-edge``: the mean of wordllama's 64-d token vectors (its Matryoshka 64-d model),
  then LayerNorm MLP layers, about 25k trained parameters; ``sentiment-foundation``: wordllama's
  256-d vectors projected into a 2-block pre-LN transformer, about 0.3M. Both train on 7,000 movie
  sentences; the token vectors stay frozen and are read from wordllama's wheel (not shipped).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from cema_cli.models.nets import Classifier

MODAL_VERSION = 1


@dataclass(frozen=True)
class TrainingPlan:
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    seed: int = 0


def digest_of(recipe: object) -> str:
    return hashlib.sha256(json.dumps({"kind": type(recipe).__name__, **asdict(recipe)}, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SignalRecipe:
    """A sensor model: ``resnet`` blocks per stage (0: the plain CNN) and its widths."""

    widths: tuple[int, ...]
    blocks: int
    plan: TrainingPlan
    train_hop: int = 10  # samples between training windows (0.2 s)
    version: int = MODAL_VERSION

    def digest(self) -> str:
        return digest_of(self)

    def build(self) -> Classifier:
        from cema_cli.data import watch
        from cema_cli.models.seqnets import SignalCNN, SignalResNet

        with torch.random.fork_rng():
            torch.manual_seed(self.plan.seed)
            channels, classes = len(watch.CHANNELS), len(watch.CLASSES)
            net = SignalCNN(channels, self.widths, classes) if self.blocks == 0 else SignalResNet(channels, self.widths, self.blocks, classes)
        return Classifier(net, *self.preprocessing()[:2], scale=watch.COUNTS_PER_UNIT)

    def preprocessing(self) -> tuple:
        from cema_cli.data import watch

        return SIGNAL_MEAN, SIGNAL_STD, None, watch.COUNTS_PER_UNIT

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        from cema_cli.data import watch

        return watch.training_windows(self.train_hop)


@dataclass(frozen=True)
class TextRecipe:
    """A text model: ``bag`` (mean of the vectors, LayerNorm MLP) or ``transformer``."""

    arch: str
    dim: int  # wordllama dimensions used (64 or 256)
    width: int
    depth: int
    plan: TrainingPlan
    heads: int = 4
    scores: int = 1  # bag: trained values per token beside its pretrained vector
    version: int = MODAL_VERSION

    def digest(self) -> str:
        return digest_of(self)

    def build(self) -> Classifier:
        from cema_cli.data import sentiment
        from cema_cli.models.seqnets import TextBag, TextTransformer
        from cema_cli.models.wordvec import embedding_table

        table, classes = embedding_table(self.dim), len(sentiment.CLASSES)
        with torch.random.fork_rng():
            torch.manual_seed(self.plan.seed)
            if self.arch == "bag":
                net: nn.Module = TextBag(table, self.scores, self.width, self.depth, classes)
            else:
                net = TextTransformer(table, self.scores, self.width, self.depth, self.heads, sentiment.MAX_TOKENS, classes)
        return Classifier(net, None, None)

    def preprocessing(self) -> tuple:
        return None, None, None, 1.0

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        from cema_cli.data import sentiment

        return sentiment.split("train")


# Per-channel mean and standard deviation of the source training windows (physical units:
# g, then rad/s), rounded; tests/test_modalities.py checks them against the data.
SIGNAL_MEAN = (-0.597, 0.37, -0.156, 0.026, 0.002, 0.019)
SIGNAL_STD = (0.765, 0.514, 0.597, 1.070, 2.793, 1.088)

RECIPES: dict[str, SignalRecipe | TextRecipe] = {
    "watch-edge": SignalRecipe(widths=(32, 32, 64, 64), blocks=0, plan=TrainingPlan(epochs=30, lr=3e-3, batch_size=64, weight_decay=1e-2)),
    "watch-foundation": SignalRecipe(widths=(32, 64, 128), blocks=1, plan=TrainingPlan(epochs=20, lr=2e-3, batch_size=64, weight_decay=1e-2)),
    "sentiment-edge": TextRecipe("bag", dim=64, width=128, depth=2, plan=TrainingPlan(epochs=6, lr=2e-3, batch_size=64, weight_decay=1e-2)),
    "sentiment-foundation": TextRecipe("transformer", dim=256, width=96, depth=2, scores=4,
                                       plan=TrainingPlan(epochs=4, lr=1e-3, batch_size=64, weight_decay=1e-2)),
}


def train(model: Classifier, recipe: SignalRecipe | TextRecipe, on_step: Callable[[int, int], None]) -> None:
    """AdamW with a one-cycle schedule on the recipe's source data; every draw from a seeded
    generator, so the same machine always trains the same weights."""
    plan = recipe.plan
    samples, labels = recipe.training_data()
    gen = torch.Generator().manual_seed(plan.seed)
    n = len(labels)
    steps = plan.epochs * ((n + plan.batch_size - 1) // plan.batch_size)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=plan.lr, weight_decay=plan.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=plan.lr, total_steps=steps)
    model.train()
    step = 0
    for _ in range(plan.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, plan.batch_size):
            idx = order[start : start + plan.batch_size]
            loss = nn.functional.cross_entropy(model(samples[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            on_step(step, steps)
    model.eval()
