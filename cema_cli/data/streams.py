"""The one place that builds test-stream orders from a seed (shared/spec/streams.md).

Pure index arithmetic: no images are read here. A dataset only has to turn an order (item
positions of one domain) into batches (``stream(..., order=...)``) and, for label-shifted
streams, tell the labels of a domain (``domain_labels``). Random families follow the spec's
section 0: ``order="md"`` uses ``random.Random(seed)`` as MD seeds Python's ``random``;
``order="cema"`` uses ``torch.randperm`` seeded by ``seed``; label draws always use
``np.random.RandomState(seed)``, the private twin of NumPy's seeded global state (``label_rng``:
a seed beyond NumPy's 32 bits seeds it with its two 32-bit words, so every seed of 0 to 2**63-1 runs).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cema_cli.data.base import stream_order
from cema_cli.data.loading import LoaderStream
from cema_cli.errors import CemaError

MIN_CHUNK = 10  # MD's min_size_thresh (spec section 3.2 step 1)
DIRICHLET_ATTEMPTS = 1000  # MD gives up after 120 s; an attempt count keeps the stream deterministic


def domain_order(n: int, seed: int, family: str = "cema", samples: int | None = None) -> list[int]:
    """One domain's order (spec section 1): a seeded permutation of its n items, capped at ``samples``.
    ``md``: re-seed, Python shuffle, then ``random.sample`` of ``samples`` items from the same state.
    A cap of n or more is no cap (MD would still draw the sample, re-ordering the items): a run's
    rows then rebuild the same stream (``cema check``) whether it was capped at n or not capped."""
    if family == "cema":
        return stream_order(n, seed)[:samples].tolist()
    rng = random.Random(seed)
    items = list(range(n))
    rng.shuffle(items)
    return rng.sample(items, samples) if samples is not None and samples < n else items


def mixed_order(sizes: Sequence[int], seed: int, family: str = "cema", samples: int | None = None) -> list[tuple[int, int]]:
    """MD ``mixed_domains`` (spec section 2.1): every (domain, item) of the domains in configured
    order, shuffled as one list; ``samples`` caps the total, not each domain."""
    pairs = [(d, i) for d, n in enumerate(sizes) for i in range(n)]
    return [pairs[k] for k in domain_order(len(pairs), seed, family, samples)]


def class_sorted(order: Sequence, labels: Sequence[int]) -> list:
    """Delta 0 (spec section 3.1): a stable sort of the shuffled order by class."""
    return [order[k] for k in sorted(range(len(order)), key=lambda k: labels[k])]


def sort_by_dirichlet(order: Sequence, labels: Sequence[int], delta: float, rng: np.random.RandomState) -> list:
    """MD's ``sort_by_dirichlet`` (spec section 3.2): split each class over K chunks with
    Dirichlet(delta) proportions (full chunks get none), retry until every chunk holds
    ``MIN_CHUNK`` items, then emit each chunk's class pieces in a shuffled class order."""
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1
    for _ in range(DIRICHLET_ATTEMPTS):
        pieces = _dirichlet_attempt(labels, classes, delta, rng)
        if min(sum(len(p) for p in chunk) for chunk in pieces) >= MIN_CHUNK:
            return [order[i] for chunk in pieces for k in _shuffled(classes, rng) for i in chunk[k]]
    raise CemaError(f"no Dirichlet label order with delta {delta} gives every class chunk {MIN_CHUNK} items "
                    f"after {DIRICHLET_ATTEMPTS} attempts; use a larger --dirichlet or more --samples.")


def _dirichlet_attempt(labels: np.ndarray, classes: int, delta: float, rng: np.random.RandomState) -> list[list[np.ndarray]]:
    """One attempt: chunk j's class-k piece at ``pieces[j][k]``."""
    n, chunks = len(labels), classes
    pieces: list[list[np.ndarray]] = [[] for _ in range(chunks)]
    sizes = np.zeros(chunks)
    for k in range(classes):
        members = np.where(labels == k)[0]
        rng.shuffle(members)
        share = rng.dirichlet(np.repeat(delta, chunks)) * (sizes < n / chunks)  # balance: full chunks get none
        with np.errstate(invalid="ignore", divide="ignore"):  # a tiny delta underflows to zeros: the attempt fails the size check
            cuts = (np.cumsum(share / share.sum()) * len(members)).astype(int)[:-1]
        for j, piece in enumerate(np.split(members, cuts)):
            pieces[j].append(piece)
            sizes[j] += len(piece)
    return pieces


def _shuffled(count: int, rng: np.random.RandomState) -> list[int]:
    classes = list(range(count))
    rng.shuffle(classes)
    return classes


def rotta_order(labels: Sequence[int], gamma: float, rng: np.random.RandomState) -> list[int]:
    """RoTTA's ``LabelDirichletDomainSequence`` for one domain (spec section 3.3): each class's
    items in file order, cut over S slots by a Dirichlet(gamma) row; each slot emits its class
    pieces in a random permutation. Returns item positions; ``rng`` runs on across domains."""
    labels = np.asarray(labels)
    classes = len(set(labels.tolist()))
    slots = classes if classes <= 100 else 100
    members = [np.argwhere(labels == y).flatten() for y in range(classes)]
    shares = rng.dirichlet([gamma] * slots, classes)
    slot_pieces: list[list[np.ndarray]] = [[] for _ in range(slots)]
    for ids, row in zip(members, shares):
        for s, piece in enumerate(np.split(ids, (np.cumsum(row)[:-1] * len(ids)).astype(int))):
            slot_pieces[s].append(piece)
    return [int(i) for pieces in slot_pieces for k in rng.permutation(len(pieces)) for i in pieces[k]]


def gradual_schedule(corruptions: Sequence[str], variant: str = "md") -> list[tuple[str, int]]:
    """Gradual severity (spec section 5): every corruption at 1..5..1 (``md``, 9 segments each);
    ``cotta`` visits the first corruption at 5, 4, 3, 2, 1 only (start from the largest gap)."""
    up_down = [1, 2, 3, 4, 5, 4, 3, 2, 1]
    schedule = []
    for position, corruption in enumerate(corruptions):
        severities = [5, 4, 3, 2, 1] if variant == "cotta" and position == 0 else up_down
        schedule += [(corruption, s) for s in severities]
    return schedule


@dataclass(frozen=True)
class Leg:
    """A stretch of the stream with one set of domains: ``order`` holds item positions (one
    domain) or (domain position, item) pairs (a mixed leg). ``reset``: fresh models first."""

    domains: tuple[tuple[str, int], ...]
    order: list[Any]
    reset: bool
    segment: int
    mixed: bool = False


def plan_stream(config: Any, dataset: Any) -> list[Leg]:
    """Every leg of ``config.protocol`` (spec sections 1-5) over ``dataset``; the same for every
    method under one seed."""
    if config.protocol in ("mixed", "mixed-correlated"):
        return [mixed_leg(config, dataset)]
    schedule = gradual_schedule(config.corruptions, config.gradual) if config.protocol == "gradual" else config.domains()
    label_rng = numpy_state(config.seed)  # RoTTA's one state through all domains
    return [Leg(((c, s),), leg_order(config, dataset, c, s, label_rng), config.protocol == "reset-each-shift" or k == 0, k)
            for k, (c, s) in enumerate(schedule)]


def leg_order(config: Any, dataset: Any, corruption: str, severity: int, label_rng: np.random.RandomState) -> list[int]:
    """One domain's item order under the protocol."""
    n = dataset.domain_size(corruption, severity)
    if config.protocol == "gradual" and config.gradual == "cotta":
        return segment_order(dataset, corruption, severity)[: config.samples]
    if config.protocol == "correlated" and config.label_sampler == "rotta":
        kept = sorted(domain_order(n, config.seed, config.order, config.samples))  # file order (section 3.3)
        labels = np.asarray(dataset.domain_labels(corruption, severity))[kept]
        return [kept[k] for k in rotta_order(labels, config.dirichlet, label_rng)]
    order = domain_order(n, config.seed, config.order, config.samples)
    if config.protocol != "correlated":
        return order
    labels = np.asarray(dataset.domain_labels(corruption, severity))[order]
    return label_shifted(order, labels, config.dirichlet, config.seed)


# CoTTA's gradual segments on a dataset stored sorted by class: one fixed class-mixed order.
CLASS_MIXED_SEED = 0


def sorted_by_class(labels: Sequence[int]) -> bool:
    labels = np.asarray(labels)
    return len(labels) > 1 and bool((np.diff(labels) >= 0).all())


def segment_order(dataset: Any, corruption: str, severity: int) -> list[int]:
    """A CoTTA gradual segment (spec section 5.1): the rows in file order, unshuffled. That file
    order is CIFAR-10-C's, which mixes the classes; CoTTA never meant a class-sorted stream. A
    dataset stored sorted by class (the embedded digits, a class tree) plays instead one fixed
    class-mixed order, the same for every seed and segment: ``torch.randperm`` under seed 0
    (``CLASS_MIXED_SEED``). Rows record which (``segment_order``: ``file`` or ``class-mixed``)."""
    n = dataset.domain_size(corruption, severity)
    if sorted_by_class(dataset.domain_labels(corruption, severity)):
        return stream_order(n, CLASS_MIXED_SEED).tolist()
    return list(range(n))


def segment_order_name(config: Any, dataset: Any, corruption: str, severity: int) -> str | None:
    """``segment_order`` of a row: which order a CoTTA gradual segment played (None otherwise)."""
    if not (config.protocol == "gradual" and config.gradual == "cotta"):
        return None
    return "class-mixed" if sorted_by_class(dataset.domain_labels(corruption, severity)) else "file"


def label_shifted(order: list, labels: np.ndarray, delta: float | None, seed: int) -> list:
    """MD's correlated step: the class sort (no delta), else Dirichlet with NumPy seeded afresh."""
    if delta is None:
        return class_sorted(order, labels.tolist())
    return sort_by_dirichlet(order, labels, delta, numpy_state(seed))


def numpy_state(seed: int) -> np.random.RandomState:
    """``np.random.RandomState(seed)`` as the reference code seeds it, for seeds below 2**32 (NumPy's
    legacy limit); a larger seed (up to 2**63-1) seeds it with its low and high 32-bit words."""
    return np.random.RandomState(seed if seed < 2**32 else [seed & 0xFFFFFFFF, seed >> 32])


def mixed_leg(config: Any, dataset: Any) -> Leg:
    """MD ``mixed_domains`` (section 2.1), then for ``mixed-correlated`` the label step (section 4)."""
    domains = tuple(config.domains())
    pairs = mixed_order([dataset.domain_size(c, s) for c, s in domains], config.seed, config.order, config.samples)
    if config.protocol == "mixed-correlated":
        labels = [np.asarray(dataset.domain_labels(c, s)) for c, s in domains]
        pairs = label_shifted(pairs, np.array([labels[d][i] for d, i in pairs]), config.dirichlet, config.seed)
    return Leg(domains, pairs, True, 0, mixed=True)


class MixedStream:
    """Batches of a mixed leg as (images, labels, domain positions). Each domain's images come
    from the dataset's own stream in the order the leg needs them, so every dataset mixes."""

    def __init__(self, dataset: Any, leg: Leg, seed: int, batch_size: int) -> None:
        self.leg, self.batch_size = leg, batch_size
        wanted = [[i for d, i in leg.order if d == k] for k in range(len(leg.domains))]
        self.sources = [dataset.stream(c, s, seed, None, batch_size, order=wanted[k]) for k, (c, s) in enumerate(leg.domains)]
        for source in self.sources:
            if isinstance(source, LoaderStream):
                source.share = len(self.sources)  # the domains' loaders run side by side: one worker pool split among them

    @property
    def workers(self) -> int:
        """Loader processes of the leg, all its domains together."""
        return sum(getattr(source, "workers", None) or 0 for source in self.sources)

    def skipped_in(self, domain: int) -> int:
        """Unreadable images skipped in one source domain (on-disk datasets count them)."""
        return getattr(self.sources[domain], "skipped", 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        samples = [_samples_of(source) for source in self.sources]
        for start in range(0, len(self.leg.order), self.batch_size):
            tags = [d for d, _ in self.leg.order[start : start + self.batch_size]]
            picked = [(d, item) for d in tags if (item := next(samples[d], None)) is not None]  # None: unreadable
            if picked:
                yield (torch.stack([image for _, (image, _) in picked]), torch.stack([label for _, (_, label) in picked]),
                       torch.tensor([d for d, _ in picked]))


def _samples_of(batches: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for images, labels in batches:
        yield from zip(images, labels)
