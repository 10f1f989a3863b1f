"""The only loop: batches -> strategy.step -> score -> channel.tick -> per-batch hook; then the
stream's verdict (cema_cli.health: non-finite logits or parameters, collapsed predictions)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from cema_cli.channel import Channel
from cema_cli.health import COLLAPSE_SHARE, OK, collapse_status
from cema_cli.strategies.base import Strategy


@dataclass
class Tally:
    """Running counts of one (method, domain) stream."""

    seen: int = 0
    correct: int = 0
    batches: int = 0
    seconds: float = 0.0
    classes: list[tuple[Counter, Counter]] = field(default_factory=list)  # per batch: predictions, labels per class
    non_finite_batch: int | None = None  # the first batch whose logits were not all finite
    status: str = OK

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else 0.0

    def add(self, predicted: torch.Tensor, labels: torch.Tensor, finite: bool) -> None:
        self.correct += int((predicted == labels).sum())
        self.seen += len(labels)
        self.batches += 1
        self.classes.append((Counter(predicted.tolist()), Counter(labels.tolist())))
        if not finite and self.non_finite_batch is None:
            self.non_finite_batch = self.batches


BatchHook = Callable[[Tally, Strategy, Channel], None]


def run_stream(
    strategy: Strategy,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    channel: Channel,
    device: torch.device,
    on_batch: BatchHook | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    collapse_share: float = COLLAPSE_SHARE,
) -> Tally:
    """Feed every batch to the strategy without its labels, score the returned logits, tick the
    channel once per batch. Time covers the strategy and scoring, not the data loading.
    ``autocast`` (--amp) builds the mixed-precision context each step runs in. The verdict
    reuses the scored logits (no extra forward pass) and checks parameters once, at the end."""
    tally = Tally()
    for images, labels in batches:
        start = time.perf_counter()
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = strategy.step(images.to(device, non_blocking=True))
        predicted = logits.argmax(dim=1).cpu()
        tally.seconds += time.perf_counter() - start
        tally.add(predicted, labels, bool(torch.isfinite(logits).all()))
        channel.tick()
        if on_batch is not None:
            on_batch(tally, strategy, channel)
    models = strategy.adapted_models() if hasattr(strategy, "adapted_models") else {}  # duck-typed steppers have none
    tally.status = stream_status(tally, models, collapse_share)
    return tally


def stream_status(tally: Tally, models: dict[str, nn.Module], collapse_share: float) -> str:
    """'ok', or what invalidates the stream's result: non-finite logits, then non-finite
    parameters, then collapsed predictions (cema_cli.health)."""
    if tally.non_finite_batch is not None:
        return f"diverged: non-finite logits at batch {tally.non_finite_batch}"
    name = first_non_finite(models)
    if name is not None:
        return f"diverged: non-finite parameter {name} after batch {tally.batches}"
    return collapse_status(tally.classes, collapse_share)


def first_non_finite(models: dict[str, nn.Module]) -> str | None:
    """'edge:bn1.weight': the first floating-point parameter or buffer holding a nan or inf."""
    tensors = [(f"{role}:{name}", t) for role, model in models.items()
               for name, t in model.state_dict().items() if t.is_floating_point()]
    if not tensors:
        return None
    device = tensors[0][1].device
    finite = torch.stack([torch.isfinite(t).all().to(device) for _, t in tensors]).cpu()  # one sync
    return None if bool(finite.all()) else tensors[int((~finite).nonzero()[0])][0]
