"""Datasets held in memory whose domains are computed once: natural domains (other recordings,
other text sources) and shifts generated from a seed. Samples are any integer tensor with the
batch first: uint8 images (N, 3, H, W), int16 sensor windows (N, 6, T), token ids (N, L)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch

from cema_cli.data.base import DomainInfo, chosen_order, tensor_batches
from cema_cli.errors import CemaError, unknown_name

Domain = tuple[torch.Tensor, torch.Tensor]  # (samples, labels) in item order


class InMemoryDataset(ABC):
    """The engine's dataset contract over ``compute_domain``; subclasses name their ``natural``
    domains (severity does not apply to them) and their generated ``shifts`` (severities 1-5)."""

    natural: tuple[str, ...] = ()
    shifts: tuple[str, ...] = ()
    shift_recipe = ""  # recorded as the rows' ``constants``: which version of the shifts made them
    cached_domains = 12

    def __init__(self, constants: str | None = None, corruption_seed: int = 0, data_root: str | None = None) -> None:
        if data_root is not None:
            raise CemaError(f"the {self.name!r} dataset is read from its package files and takes no --data-root; drop the flag.")
        if constants is not None:
            raise CemaError(f"--constants sets the image corruptions' constants; {self.name!r} has its own shifts. Drop the flag.")
        self.corruption_seed = corruption_seed
        self._cache: dict[tuple[str, int], Domain] = {}

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def compute_domain(self, corruption: str, severity: int) -> Domain:
        """The domain's samples and labels, computed (not cached)."""

    @abstractmethod
    def clean_samples(self, count: int, seed: int = 0) -> torch.Tensor:
        """Clean in-distribution samples from the source training split (EATA's Fisher set)."""

    @classmethod
    def domains(cls) -> tuple[str, ...]:
        return ("none", *cls.natural, *cls.shifts)

    def check_domain(self, corruption: str, severity: int) -> None:
        if corruption not in self.domains():
            raise unknown_name(f"{self.name} domain", corruption, self.domains())

    def severity_of(self, corruption: str, severity: int) -> int:
        """The severity a domain is computed at: natural domains and ``none`` have one."""
        return severity if corruption in self.shifts else 0

    def domain(self, corruption: str, severity: int) -> Domain:
        """The domain, cached (compare runs every method on the same tensors)."""
        self.check_domain(corruption, severity)
        key = (corruption, self.severity_of(corruption, severity))
        if key not in self._cache:
            if len(self._cache) >= self.cached_domains:
                self._cache.pop(next(iter(self._cache)))  # the oldest domain goes first
            self._cache[key] = self.compute_domain(*key)
        return self._cache[key]

    def corrupt_domain(self, corruption: str, severity: int) -> Domain:
        """The domain computed for a sweep to share (cema_cli/shared_inputs.py)."""
        self.check_domain(corruption, severity)
        return self.compute_domain(corruption, self.severity_of(corruption, severity))

    def with_domains(self, domains: dict[tuple[str, int], Domain]) -> "InMemoryDataset":
        """A copy sharing this one's data, with these domains already computed."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, _cache={(c, self.severity_of(c, s)): d for (c, s), d in domains.items()})
        return copy

    def domain_info(self, corruption: str, severity: int, samples: int) -> DomainInfo:
        source = "generated" if corruption in self.shifts else "recorded"
        return DomainInfo(corruption, severity, samples, source, self.shift_recipe if source == "generated" else "")

    def domain_size(self, corruption: str, severity: int) -> int:
        return len(self.domain(corruption, severity)[1])

    def domain_labels(self, corruption: str, severity: int) -> torch.Tensor:
        return self.domain(corruption, severity)[1]

    def stream(self, corruption: str, severity: int, seed: int, samples: int | None, batch_size: int,
               order: list[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Seeded batches of (samples, labels) of one domain, or of a planned ``order``."""
        data, labels = self.domain(corruption, severity)
        return tensor_batches(data, labels, chosen_order(len(labels), seed, samples, order), batch_size)


def seeded_pick(count: int, available: int, seed: int) -> torch.Tensor:
    """``count`` positions of ``available`` in a seeded random order (a clean set)."""
    return torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:count]
