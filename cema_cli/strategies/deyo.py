"""DeYO (Lee et al., ICLR 2024; shared/spec/methods-more.md section 8): entropy minimisation on
SAR's parameter subset, restricted to samples whose prediction drops when the object's shape is
destroyed (PLPD, the pseudo-label probability difference under a patch shuffle), and weighted by
both their confidence and that drop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cema_cli.errors import CemaError
from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.common import entropy, entropy_threshold, make_optimizer
from cema_cli.strategies.precision import minimise
from cema_cli.strategies.randomness import batch_generator
from cema_cli.strategies.sar import LR_RULES, OPTIMIZERS, PLACEMENTS, SAR_SUBSET, check_options, lr_for_run
from cema_cli.strategies.subsets import SubsetCloudEdge, subset_model, values_in

AUG_TYPES = ("patch", "pixel", "occ")


@dataclass(frozen=True)
class DeYOConfig:
    """Section 8.3; the defaults are the ImageNet-C column (tau_P 0.3, the official "mild"
    setting; the wild streams use 0.2). The official lr follows SAR's rules (section 7.3,
    ``lr_rule=official``); MD's CIFAR-10 setting fixes it."""

    lr: float = 0.00025  # with lr_rule=official: replaced by sar.official_lr(batch, model) at run time
    lr_rule: str = "official"  # official | fixed
    momentum: float = 0.9  # SGD without Nesterov, as official DeYO (section 6)
    optimizer: str = "sgd"
    ent_factor: float = 0.5  # tau_E = 0.5 ln C (selection)
    e0_factor: float = 0.4  # E_0 = 0.4 ln C (weighting)
    plpd_threshold: float = 0.3  # tau_P, strict
    patch_len: int = 4  # P patches per side
    aug_type: str = "patch"  # patch | pixel | occ
    occlusion_size: int = 112  # aug_type=occ: the square's side, in stream pixels
    occlusion_row: int = 56
    occlusion_column: int = 56
    filter_ent: bool = True
    filter_plpd: bool = True
    reweight_ent: bool = True
    reweight_plpd: bool = True
    upload: str = "filtered"  # cloud placement: S2 only, or all (exact with BN, section 8.5)
    placement: str = "cloud"

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "imagenet": {"lr": 0.00025, "lr_rule": "official", "optimizer": "sgd", "plpd_threshold": 0.3},
        "cifar10": {"lr": 1e-3, "lr_rule": "fixed", "optimizer": "adam", "plpd_threshold": 0.2},  # MD
    }

    def for_run(self, batch_size: int, transformer: bool, explicit: set[str]) -> "DeYOConfig":
        return lr_for_run(self, batch_size, transformer, explicit)

    def validate(self) -> None:
        check_options("deyo", {
            "lr": (self.lr > 0, "a positive learning rate"),
            "lr_rule": (self.lr_rule in LR_RULES, f"one of {', '.join(LR_RULES)}"),
            "momentum": (0 <= self.momentum < 1, "in [0, 1)"),
            "optimizer": (self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            "ent_factor": (self.ent_factor > 0, "positive (tau_E = factor x ln C)"),
            "e0_factor": (self.e0_factor > 0, "positive (E_0 = factor x ln C)"),
            "plpd_threshold": (-1 <= self.plpd_threshold < 1, "in [-1, 1), a probability difference"),
            "patch_len": (self.patch_len >= 1, "1 or more patches per side"),
            "aug_type": (self.aug_type in AUG_TYPES, f"one of {', '.join(AUG_TYPES)}"),
            "occlusion_size": (self.occlusion_size >= 1, "1 or more pixels"),
            "occlusion_row": (self.occlusion_row >= 0, "0 or more pixels"),
            "occlusion_column": (self.occlusion_column >= 0, "0 or more pixels"),
            "upload": (self.upload in ("filtered", "all"), "filtered or all"),
        }, self)


# --- the shape-destroying transforms (section 8.2 item 3), on stream-resolution images ---------

def resized(images: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear, antialiased resize to side x side (torchvision's Resize on tensors); a no-op at that size."""
    if tuple(images.shape[-2:]) == (side, side):
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def patch_shuffle(images: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Resize to floor(W/P) x P on both sides (the width for both, trap 5), cut into a P x P
    grid, permute each image's patches with its own random permutation, resize back to W x W."""
    n, c, _, width = images.shape
    side = (width // grid) * grid
    x, cell = resized(images, side), side // grid
    patches = x.reshape(n, c, grid, cell, grid, cell).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, cell, cell)
    order = torch.argsort(torch.rand(n, grid * grid, generator=generator), dim=-1).to(images.device)
    patches = patches[torch.arange(n, device=images.device).unsqueeze(-1), order]
    x = patches.reshape(n, grid, grid, c, cell, cell).permute(0, 3, 1, 4, 2, 5).reshape(n, c, side, side)
    return resized(x, width)


def pixel_shuffle(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One permutation of all H x W positions, shared by the batch and the channels."""
    n, c, h, w = images.shape
    order = torch.randperm(h * w, generator=generator).to(images.device)
    return images.reshape(n, c, h * w)[:, :, order].reshape(n, c, h, w)


def occlude(images: torch.Tensor, size: int, row: int, column: int) -> torch.Tensor:
    """A size x size square from (row, column) filled with each image's per-channel mean."""
    out = images.clone()
    mean = images.mean(dim=(2, 3), keepdim=True)
    window = out[:, :, row : row + size, column : column + size]
    window.copy_(mean.expand_as(window))
    return out


def destroy_shape(images: torch.Tensor, config: DeYOConfig, generator: torch.Generator) -> torch.Tensor:
    """x' of ``config.aug_type``, as float images on the wrapper's 0-255 scale."""
    x = images.float()
    if config.aug_type == "pixel":
        return pixel_shuffle(x, generator)
    if config.aug_type == "occ":
        return occlude(x, config.occlusion_size, config.occlusion_row, config.occlusion_column)
    check_patches(config.patch_len, x.shape[-1])
    return patch_shuffle(x, config.patch_len, generator)


def check_patches(grid: int, width: int) -> None:
    """P patches per side need at least P pixels per side (the image size is known at the first batch)."""
    if grid > width:
        raise CemaError(f"-o deyo.patch_len={grid}: the stream's images are {width} px wide, too few for {grid} patches per "
                        f"side; give at most {width} (the default is 4).")


# --- the two filters and the weights ---------------------------------------------------------

def plpd(probs: torch.Tensor, probs_shuffled: torch.Tensor) -> torch.Tensor:
    """PLPD_i = p_i[y_i] - p'_i[y_i] with y_i = argmax p_i (section 8.2 item 5)."""
    label = probs.argmax(dim=1, keepdim=True)
    return (probs.gather(1, label) - probs_shuffled.gather(1, label)).squeeze(1)


def deyo_weights(ent: torch.Tensor, drop: torch.Tensor, e0: float, reweight_ent: bool, reweight_plpd: bool) -> torch.Tensor:
    """a_i = exp(E_0 - E_i) + exp(PLPD_i), each term switchable; 1 when both are off (item 7)."""
    if not (reweight_ent or reweight_plpd):
        return torch.ones_like(ent)
    return reweight_ent * torch.exp(e0 - ent.detach()) + reweight_plpd * torch.exp(drop.detach())


@dataclass
class Selection:
    reliable: torch.Tensor  # S1 mask
    drop: torch.Tensor  # PLPD per sample, NaN outside S1
    kept: torch.Tensor  # S2 mask


class PLPDFilter:
    """Items 2-6 on the model that predicts: S1 by entropy, a forward of the shuffled S1 (its
    own batch statistics), PLPD, S2. The shuffle draws from the batch's generator (section 6)."""

    def __init__(self, model: nn.Module, config: DeYOConfig, num_classes: int, seed: int) -> None:
        self.model = model
        self.config = config
        self.tau_e = entropy_threshold(config.ent_factor, num_classes)
        self.seed = seed

    def select(self, images: torch.Tensor, logits: torch.Tensor, batch_index: int) -> Selection:
        logits = logits.detach()
        reliable = entropy(logits) < self.tau_e if self.config.filter_ent else torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        drop = torch.full((len(logits),), float("nan"), device=logits.device)
        if reliable.any():
            shuffled = destroy_shape(images[reliable], self.config, batch_generator(self.seed, batch_index))
            with torch.no_grad():
                drop[reliable] = plpd(logits[reliable].softmax(dim=1), self.model(shuffled).softmax(dim=1))
        return Selection(reliable, drop, kept_by_plpd(drop, self.config))


def kept_by_plpd(drop: torch.Tensor, config: DeYOConfig) -> torch.Tensor:
    """S2 from the PLPD values (NaN marks samples outside S1): PLPD > tau_P, strict."""
    in_s1 = ~torch.isnan(drop)
    return in_s1 & (drop > config.plpd_threshold) if config.filter_plpd else in_s1


class DeYOLearner:
    """Item 7: loss = mean over S2 of a_i E_i through the forward with gradient; one step."""

    def __init__(self, params: dict[str, nn.Parameter], config: DeYOConfig, num_classes: int) -> None:
        self.config = config
        self.optimizer = make_optimizer(list(params.values()), config.optimizer, config.lr, config.momentum)
        self.e0 = entropy_threshold(config.e0_factor, num_classes)

    def weights(self, ent: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        return deyo_weights(ent, drop, self.e0, self.config.reweight_ent, self.config.reweight_plpd)

    def update(self, logits: torch.Tensor, drop: torch.Tensor) -> None:
        """``logits`` of S2 with their graph; no samples, no step (trap 2)."""
        if len(logits) == 0:
            return
        ent = entropy(logits)
        loss = (self.weights(ent, drop) * ent).mean()
        minimise(self.optimizer, loss)


def make_deyo(context: StrategyContext, config: DeYOConfig) -> Strategy:
    return DeYOOnEdge(context, config) if config.placement == "edge" else DeYOCloudEdge(context, config)


make_deyo.config_class = DeYOConfig  # type: ignore[attr-defined]
make_deyo.placements = PLACEMENTS  # type: ignore[attr-defined]
make_deyo.image_only = "picks samples by how their prediction drops under a patch shuffle, pixel shuffle or occlusion of the image"  # type: ignore[attr-defined]


class DeYOOnEdge(Strategy):
    """The original DeYO on the device (section 8.2)."""

    config_class = DeYOConfig

    def __init__(self, context: StrategyContext, config: DeYOConfig) -> None:
        super().__init__(context, config)
        self.model, params = subset_model(context.edge_model, SAR_SUBSET)
        self.trained_values = values_in(params)
        self.filter = PLPDFilter(self.model, config, context.num_classes, context.seed)
        self.learner = DeYOLearner(params, config, context.num_classes)
        self.batches = 0

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        chosen = self.filter.select(images, logits, self.batches)
        self.learner.update(logits[chosen.kept], chosen.drop[chosen.kept])
        self.batches += 1
        self.work.edge_forward += len(images) + int(chosen.reliable.sum())
        self.work.edge_backward += int(chosen.kept.sum())
        return logits.detach()


class DeYOCloudEdge(SubsetCloudEdge):
    """Section 8.5: the edge runs items 1-6 (forwards only) and uploads S2, each image with its
    PLPD, largest weight first (``upload=all``: every image, PLPD NaN outside S1); the cloud
    forwards what arrived, recomputes E_i and a_i, and takes item 7's step on S2."""

    config_class = DeYOConfig
    rule = SAR_SUBSET
    side_bytes = 4  # each image's PLPD, float32 (section 8.5)

    def __init__(self, context: StrategyContext, config: DeYOConfig) -> None:
        super().__init__(context, config)
        self.filter = PLPDFilter(self.edge, config, context.num_classes, context.seed)
        self.learner = DeYOLearner(self.cloud_params, config, context.num_classes)
        self.batches = 0

    def select(self, images: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.filter.select(images, logits, self.batches)
        self.batches += 1
        self.work.edge_forward += len(images) + int(chosen.reliable.sum())
        mask = torch.ones_like(chosen.kept) if self.config.upload == "all" else chosen.kept
        weight = self.learner.weights(entropy(logits), chosen.drop.nan_to_num(0.0))
        priority = torch.where(chosen.kept, -weight, torch.full_like(weight, float("inf")))
        self.outgoing_side = chosen.drop[mask]
        return mask, priority

    def learn(self, images: torch.Tensor | None) -> bool:
        if images is None or len(images) < self.min_batch:
            return False
        logits = self.cloud(images)
        kept = kept_by_plpd(self.arrived_side, self.config)
        self.work.cloud_forward += len(images)
        self.work.cloud_backward += int(kept.sum())
        self.learner.update(logits[kept], self.arrived_side[kept])
        return bool(kept.any())
