"""Per-sample random draws (shared/spec/corruptions.md section 5).

Every sample owns a CPU ``torch.Generator`` seeded from (seed, corruption, severity, index), and
draws its variables from it in the order of the section 5 table. Draws happen on the CPU (so
CPU and CUDA runs see the same numbers) and are moved to the images' device afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch


def sample_generators(seed: int, name: str, severity: int, indices: torch.Tensor | Sequence[int]) -> list[torch.Generator]:
    """One torch.Generator per sample, seeded from (seed, corruption, severity, sample index)."""
    values = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    gens = []
    for index in values:
        digest = hashlib.blake2b(f"{seed}/{name}/{severity}/{int(index)}".encode(), digest_size=8).digest()
        gens.append(torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1)))
    return gens


def per_sample(gens: list[torch.Generator], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """Stack one draw per sample (each from its own generator) into a batch tensor on the CPU."""
    return torch.stack([draw(g) for g in gens])


def uniform(g: torch.Generator, shape: tuple[int, ...], low: float, high: float, dtype=torch.float64) -> torch.Tensor:
    """U(low, high) like NumPy's uniform: low + (high - low) * U[0, 1)."""
    return low + (high - low) * torch.rand(shape, generator=g, dtype=dtype)
