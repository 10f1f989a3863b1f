"""Source models for the embedded default, trained by the project, deterministically (shared/spec/data.md).

The package ships the weights its recipes trained (``weights/<name>-<recipe digest>.pt``), and
every machine uses those: training is deterministic on one machine, but float rounding differs
between CPU kernels (AVX2, AVX-512, ...), and 8 epochs of SGD amplify it (the same recipe gave 11.7%
and 15.2% source accuracy on gaussian_noise-5 on two machines). Shipped weights make every number
of the embedded default reproducible everywhere. A recipe without shipped weights (a changed
recipe) is trained on first use and cached under the user's cache directory, keyed by its digest.

- ``mnist-edge``: a small BatchNorm ResNet (about 78k parameters) trained on clean digits.
- ``mnist-foundation``: a wider, deeper BatchNorm ResNet (about 1M parameters) trained with
  augmentation drawn only from the 4 extra corruptions (speckle_noise, gaussian_blur, spatter,
  saturate), so the 15 test corruptions stay unseen, as in the ImageNet-C protocol.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cema_cli import corruptions
from cema_cli.data import embedded as digits
from cema_cli.data.cache import cache_dir, write_atomically
from cema_cli.models import modal
from cema_cli.models.nets import Classifier, SmallResNet

RECIPE_VERSION = 2  # 2: the initial weights are seeded too
MEAN, STD = (0.1307,) * 3, (0.3081,) * 3  # MNIST pixel statistics


@dataclass(frozen=True)
class Recipe:
    widths: tuple[int, int, int]
    blocks: int
    stem_stride: int
    epochs: int
    lr: float
    augment: tuple[str, ...]  # corruptions mixed into training, every severity
    constants: str
    seed: int = 0
    batch_size: int = 64
    version: int = RECIPE_VERSION

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


RECIPES = {
    "mnist-edge": Recipe(widths=(16, 32, 64), blocks=1, stem_stride=1, epochs=8, lr=0.05, augment=(), constants=digits.DEFAULT_CONSTANTS),
    "mnist-foundation": Recipe(
        widths=(40, 80, 160), blocks=2, stem_stride=2, epochs=8, lr=0.05,
        augment=corruptions.EXTRA, constants=digits.DEFAULT_CONSTANTS,
    ),
}


__all__ = ["cache_dir"]  # where a recipe without shipped weights is cached (cema_cli/data/cache.py)

SHIPPED = Path(__file__).parent / "weights"


def recipe_of(name: str) -> Recipe | modal.SignalRecipe | modal.TextRecipe:
    """The digits' recipes here, the other datasets' in cema_cli/models/modal.py."""
    return RECIPES[name] if name in RECIPES else modal.RECIPES[name]


def all_recipes() -> list[str]:
    return [*RECIPES, *modal.RECIPES]


def checkpoint_path(name: str) -> Path:
    """The shipped weights of the recipe when the package has them, else the cache's file."""
    file = f"{name}-{recipe_of(name).digest()}.pt"
    return SHIPPED / file if (SHIPPED / file).exists() else cache_dir() / "models" / file


def weights_digest(name: str) -> str:
    """sha256 (12 hex digits) of the checkpoint file in use, recorded in every result row."""
    return hashlib.sha256(checkpoint_path(name).read_bytes()).hexdigest()[:12]


def build(name: str) -> Classifier:
    """The untrained network, its initial weights fixed by the recipe's seed."""
    if name in modal.RECIPES:
        return modal.RECIPES[name].build()
    recipe = RECIPES[name]
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        net = SmallResNet(recipe.widths, recipe.blocks, digits.EmbeddedDigits.num_classes, recipe.stem_stride)
    return Classifier(net, MEAN, STD)


def preprocessing(name: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, tuple[int, int] | None, float | tuple[float, ...]]:
    """(mean, std, image size, counts per unit) of a recipe's inputs: MNIST's statistics at 32 px
    for the digits; the sensor channels' statistics in g and rad/s; none for token ids."""
    if name in modal.RECIPES:
        return modal.RECIPES[name].preprocessing()
    return MEAN, STD, (32, 32), 255.0


def is_cached(name: str) -> bool:
    return checkpoint_path(name).exists()


def load_or_train(name: str, on_progress: Callable[[str, int, int], None] | None = None) -> Classifier:
    """The trained model from the cache, training (and caching) it on first use."""
    model = build(name)
    path = checkpoint_path(name)
    if not path.exists():
        fit = modal.train if name in modal.RECIPES else train
        fit(model, recipe_of(name), lambda done, total: on_progress and on_progress(name, done, total))
        write_atomically(path, lambda tmp: torch.save(model.state_dict(), tmp))  # a crash never leaves half a checkpoint
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def training_set(recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, versions): the clean training split plus one corrupted copy for every
    augmentation (corruption, severity); each epoch draws one version per sample."""
    images, labels = digits.train_split()
    versions = [images]
    index = torch.arange(len(images))
    for k, name in enumerate(recipe.augment):
        for severity in range(1, 6):
            seed = recipe.seed + 1000 * (k + 1)  # training noise never equals the test stream's
            versions.append(corruptions.corrupt(images, name, severity, seed=seed, indices=index, constants=recipe.constants))
    return torch.stack(versions), labels, index


def train(model: Classifier, recipe: Recipe, on_step: Callable[[int, int], None]) -> None:
    """Deterministic SGD training with a one-cycle schedule (every draw from seeded generators)."""
    gen = torch.Generator().manual_seed(recipe.seed)
    versions, labels, _ = training_set(recipe)
    n = labels.numel()
    steps_per_epoch = (n + recipe.batch_size - 1) // recipe.batch_size
    total = recipe.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total)
    model.train()
    step = 0
    for _ in range(recipe.epochs):
        order = torch.randperm(n, generator=gen)
        which = torch.randint(len(versions), (n,), generator=gen)
        for start in range(0, n, recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            loss = nn.functional.cross_entropy(model(versions[which[idx], idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            on_step(step, total)
    model.eval()
