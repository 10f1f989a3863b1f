"""Randomness of augmentations and shuffles (shared/spec/methods-more.md section 6, "Randomness"):
a torch generator seeded from (run seed, batch index), so that edge and cloud can reproduce the
same draws and reruns are bit-identical on CPU. Draws are made on the CPU and then moved, so
they do not depend on the device either."""

from __future__ import annotations

import hashlib

import torch


def batch_generator(seed: int, batch_index: int, stream: int = 0) -> torch.Generator:
    """The generator of one (run seed, batch index); ``stream`` separates independent uses of the
    same batch (CoTTA's augmentation and its restore masks). Seeded by a hash, as the corruptions'
    per-sample generators are (cema_cli/corruptions/_random.py)."""
    digest = hashlib.blake2b(f"{seed}/{batch_index}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
