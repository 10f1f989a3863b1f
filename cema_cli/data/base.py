"""What the engine needs from a dataset: seeded streams of (samples, labels) per domain. Samples
are integer tensors, batch first: uint8 images (N, 3, H, W), int16 sensor windows (N, 6, T), token
ids (N, L); the models' wrappers turn them into network input (cema_cli/models/nets.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DomainInfo:
    """Recorded in every result row: where the corrupted images came from."""

    corruption: str
    severity: int
    samples: int
    corruption_source: str  # "files", "generated" or "generated, procedural frost" (source_of)
    constants: str  # "cifar", "imagenet" or "" for files


def source_of(kind: str, corruption: str) -> str:
    """A row's corruption_source: "files", or how the generated domain was made
    (corruptions.generated_source names the procedural frost substitute)."""
    from cema_cli.corruptions import generated_source

    return generated_source(corruption) if kind == "generated" else kind


def stream_order(n: int, seed: int) -> torch.Tensor:
    """The stream order of a domain of n samples: a permutation fixed by the seed alone,
    so every method sees the same order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def chosen_order(n: int, seed: int, samples: int | None, order: list[int] | None = None) -> torch.Tensor:
    """The item positions a domain's stream plays: a planned order (data/streams.py builds them
    for every protocol), else the seeded default prefix."""
    return torch.as_tensor(order, dtype=torch.long) if order is not None else stream_order(n, seed)[:samples]


def tensor_batches(images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of an in-memory domain in the given order."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield images[idx], labels[idx]
