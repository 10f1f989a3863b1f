"""The only loop: batches -> strategy.step -> score -> channel.tick -> per-batch hook; then the
stream's verdict (cema_cli.results.health: non-finite logits or parameters, collapsed predictions)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cema_cli.link.channel import Channel
from cema_cli.results.health import COLLAPSE_SHARE, OK, collapse_status
from cema_cli.strategies.base import Strategy


@dataclass
class Tally:
    """Running counts of one (method, domain) stream."""

    seen: int = 0
    correct: int = 0
    top5_correct: int | None = None  # counted when the logits have at least TOP5_CLASSES classes
    batches: int = 0
    seconds: float = 0.0
    wait_seconds: float = 0.0  # waiting for the next batch (loading, decoding, on-device corruption)
    classes: list[tuple[Counter, Counter]] = field(default_factory=list)  # per batch: predictions, labels per class
    non_finite_batch: int | None = None  # the first batch whose logits were not all finite
    status: str = OK
    parts: dict[int, "Tally"] = field(default_factory=dict)  # by source domain of a mixed stream
    sample_shape: tuple[int, ...] = ()  # of one sample of the stream ((C, H, W) images, (C, T) windows, (L,) tokens): counted compute
    sample_dtype: torch.dtype = torch.uint8

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else 0.0

    @property
    def top5_accuracy(self) -> float | None:
        """Share of samples whose label is among the 5 highest logits (None: fewer than 100 classes)."""
        return None if self.top5_correct is None else (self.top5_correct / self.seen if self.seen else 0.0)

    @property
    def chance(self) -> float:
        """The accuracy of always predicting the stream's most frequent label."""
        labels = sum((l for _, l in self.classes), Counter())
        return max(labels.values()) / self.seen if labels and self.seen else 0.0

    def watch(self, predicted: torch.Tensor, labels: torch.Tensor, finite: bool) -> None:
        """The verdict's bookkeeping for the batch just counted (cema_cli.results.health)."""
        self.classes.append((Counter(predicted.tolist()), Counter(labels.tolist())))
        if not finite and self.non_finite_batch is None:
            self.non_finite_batch = self.batches

    def count(self, hits: torch.Tensor, seconds: float, wait: float = 0.0, top5: torch.Tensor | None = None) -> None:
        self.correct += int(hits.sum())
        if top5 is not None:
            self.top5_correct = (self.top5_correct or 0) + int(top5.sum())
        self.seen += len(hits)
        self.batches += 1
        self.seconds += seconds
        self.wait_seconds += wait

    def count_parts(self, predicted: torch.Tensor, labels: torch.Tensor, tags: torch.Tensor, seconds: float, wait: float = 0.0,
                    top5: torch.Tensor | None = None) -> None:
        """Per source domain; the batch's times are shared in proportion to its samples."""
        for tag in tags.unique().tolist():
            mine = tags == tag
            share = float(mine.float().mean())
            part = self.parts.setdefault(tag, Tally())
            part.count(predicted[mine] == labels[mine], seconds * share, wait * share, None if top5 is None else top5[mine])
            part.watch(predicted[mine], labels[mine], True)


TOP5_CLASSES = 100  # top-5 accuracy is reported where there are at least this many classes (ImageNet, CIFAR-100)


def top5_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Whether each label is among its sample's 5 highest logits; None below TOP5_CLASSES classes."""
    if logits.shape[1] < TOP5_CLASSES:
        return None
    return (logits.topk(5, dim=1).indices.cpu() == labels[:, None]).any(dim=1)


class SlidingWindow:
    """MD's single-sample mode (shared/spec/streams.md section 7.2): the last L samples in a ring.
    When the arriving sample lands at position L-1 the method adapts on the whole ring; otherwise
    the ring is only forwarded. The arriving sample's row is scored. Forwarding the ring instead
    of the sample alone changes nothing for networks without BN, whose rows are independent."""

    def __init__(self, length: int) -> None:
        self.length, self.pointer = length, 0
        self.buffer: torch.Tensor | None = None

    def score(self, strategy: Strategy, image: torch.Tensor) -> torch.Tensor:
        if self.buffer is None or len(self.buffer) < self.length:
            self.buffer = image if self.buffer is None else torch.cat([self.buffer, image])
        else:
            self.buffer = self.buffer.clone()  # a strategy may still hold the previous ring (an upload)
            self.buffer[self.pointer] = image[0]
        forward = strategy.step if self.pointer == self.length - 1 else strategy.predict
        logits = forward(self.buffer)[self.pointer : self.pointer + 1]
        self.pointer = (self.pointer + 1) % self.length
        return logits


BatchHook = Callable[[Tally, Strategy, Channel], None]


def run_stream(
    strategy: Strategy,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    channel: Channel,
    device: torch.device,
    on_batch: BatchHook | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    window: SlidingWindow | None = None,
    collapse_share: float = COLLAPSE_SHARE,
) -> Tally:
    """Feed every batch to the strategy without its labels, score the returned logits, tick the
    channel once per batch. Time covers the strategy and scoring, not the data loading; the time
    spent waiting for each batch is counted apart (``Tally.wait_seconds``).
    ``autocast`` (--amp) builds the mixed-precision context each step runs in. A batch may carry
    a third tensor, each sample's source domain (mixed streams): the tally then splits by it.
    ``window`` (batch size 1): MD's sliding window decides what each step sees. The verdict
    reuses the scored logits (no extra forward pass) and checks parameters once, at the end."""
    return drain(stream_steps(strategy, batches, channel, device, on_batch, autocast, window, collapse_share))


def drain(steps: Generator[None, None, Any]) -> Any:
    """Run a generator of steps to its end; return what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def stream_steps(
    strategy: Strategy,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    channel: Channel,
    device: torch.device,
    on_batch: BatchHook | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    window: SlidingWindow | None = None,
    collapse_share: float = COLLAPSE_SHARE,
    step: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Generator[None, None, Tally]:
    """``run_stream`` one batch at a time: it yields after each batch is scored and before the
    channel ticks, and returns the tally. A fleet (cema_cli/run/fleet.py) passes the edge half as
    ``step`` and runs the cloud at the yield; a lone edge's ``strategy.step`` does both."""
    tally = Tally()
    step = step or strategy.step
    for (images, labels, *tags), wait in timed(batches):
        start = time.perf_counter()
        with autocast() if autocast is not None else contextlib.nullcontext():
            images = images.to(device, non_blocking=True)
            logits = window.score(strategy, images) if window is not None else step(images)
        predicted = logits.argmax(dim=1).cpu()
        hits, top5 = predicted == labels, top5_hits(logits, labels)
        seconds = time.perf_counter() - start
        tally.count(hits, seconds, wait, top5)
        tally.watch(predicted, labels, bool(torch.isfinite(logits).all()))
        if tags:
            tally.count_parts(predicted, labels, tags[0], seconds, wait, top5)
        tally.sample_shape, tally.sample_dtype = tuple(images.shape[1:]), images.dtype
        yield
        channel.tick()
        if on_batch is not None:
            on_batch(tally, strategy, channel)
    models = strategy.adapted_models() if hasattr(strategy, "adapted_models") else {}  # duck-typed steppers have none
    tally.status = stream_status(tally, models, collapse_share, strategy)
    for part in tally.parts.values():  # a mixed stream's rows share its verdict
        part.status = tally.status
    return tally


def timed(batches: Iterable[Any]) -> Iterator[tuple[Any, float]]:
    """Each batch with the seconds the loop waited for it (on a GPU: the time it idles, since
    every step ends with its predictions copied to the host)."""
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start


def stream_status(tally: Tally, models: dict[str, nn.Module], collapse_share: float, strategy: Any = None) -> str:
    """'ok', or what invalidates the stream's result: non-finite logits, then non-finite
    parameters, then collapsed predictions (cema_cli.results.health)."""
    if tally.non_finite_batch is not None:
        return f"diverged: non-finite logits at batch {tally.non_finite_batch}"
    name = first_non_finite(models) or remote_non_finite(strategy)
    if name is not None:
        return f"diverged: non-finite parameter {name} after batch {tally.batches}"
    return collapse_status(tally.classes, collapse_share)


def remote_non_finite(strategy: Any) -> str | None:
    """The cloud's own check of its models, when a real link runs them in another process."""
    remote = getattr(strategy, "remote", None)
    return remote.first_non_finite(strategy) if remote is not None else None


def first_non_finite(models: dict[str, nn.Module]) -> str | None:
    """'edge:bn1.weight': the first floating-point parameter or buffer holding a nan or inf."""
    tensors = [(f"{role}:{name}", t) for role, model in models.items()
               for name, t in model.state_dict().items() if t.is_floating_point()]
    if not tensors:
        return None
    device = tensors[0][1].device
    finite = torch.stack([torch.isfinite(t).all().to(device) for _, t in tensors]).cpu()  # one sync
    return None if bool(finite.all()) else tensors[int((~finite).nonzero()[0])][0]
