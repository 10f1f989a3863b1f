"""Randomness of augmentations and shuffles (shared/spec/methods-more.md section 6, "Randomness"):
a torch generator seeded from (run seed, batch index), so that edge and cloud can reproduce the
same draws and reruns are bit-identical on CPU. Draws are made on the CPU and then moved, so
they do not depend on the device either."""

from __future__ import annotations

import torch


def batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """The generator of one batch: distinct for every (seed, batch index) with index < 2**32."""
    return torch.Generator().manual_seed((seed % 2**31) * 2**32 + batch_index)
