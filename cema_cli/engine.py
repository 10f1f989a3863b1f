"""The only loop: batches -> strategy.step -> score -> channel.tick -> per-batch hook."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from cema_cli.channel import Channel
from cema_cli.strategies.base import Strategy


@dataclass
class Tally:
    """Running counts of one (method, domain) stream."""

    seen: int = 0
    correct: int = 0
    batches: int = 0
    seconds: float = 0.0
    image_shape: tuple[int, ...] = ()  # (C, H, W) of the stream's images, for counted compute

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else 0.0


BatchHook = Callable[[Tally, Strategy, Channel], None]


def run_stream(
    strategy: Strategy,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    channel: Channel,
    device: torch.device,
    on_batch: BatchHook | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> Tally:
    """Feed every batch to the strategy without its labels, score the returned logits, tick the
    channel once per batch. Time covers the strategy and scoring, not the data loading.
    ``autocast`` (--amp) builds the mixed-precision context each step runs in."""
    tally = Tally()
    for images, labels in batches:
        start = time.perf_counter()
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = strategy.step(images.to(device, non_blocking=True))
        predicted = logits.argmax(dim=1).cpu()
        tally.seconds += time.perf_counter() - start
        tally.correct += int((predicted == labels).sum())
        tally.seen += len(labels)
        tally.batches += 1
        tally.image_shape = tuple(images.shape[1:])
        channel.tick()
        if on_batch is not None:
            on_batch(tally, strategy, channel)
    return tally
