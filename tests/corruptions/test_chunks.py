"""CPU batches of 64 px and more are corrupted in chunks (_ops.in_chunks): same bytes as one batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cema_cli.corruptions import _ops, corrupt
from corruption_helpers import batch

CHUNKED = ("fog", "snow", "gaussian_noise", "speckle_noise", "contrast", "brightness", "frost", "saturate")


@pytest.mark.parametrize("name", CHUNKED)
def test_chunks_give_the_bytes_of_one_batch(name, monkeypatch):
    images = batch(64, 5)
    indices = [3, 0, 7, 1, 4]
    monkeypatch.setattr(_ops, "CHUNK_VALUES", 10**9)  # one chunk
    whole = corrupt(images, name, 4, seed=2, indices=indices, constants="imagenet")
    monkeypatch.setattr(_ops, "CHUNK_VALUES", 2 * images[0].numel())  # chunks of 2, 2 and 1 images
    chunked = corrupt(images, name, 4, seed=2, indices=indices, constants="imagenet")
    assert torch.equal(chunked, whole)


def test_saturate_table_path_in_chunks_matches_the_formula(monkeypatch):
    images = batch(64, 3)
    formula = corrupt(images, "saturate", 5, seed=0, indices=[0, 1, 2], constants="imagenet")
    monkeypatch.setattr("cema_cli.corruptions.digital.SATURATE_TABLE_MIN_VALUES", 1)
    monkeypatch.setattr(_ops, "CHUNK_VALUES", images[0].numel())
    assert torch.equal(corrupt(images, "saturate", 5, seed=0, indices=[0, 1, 2], constants="imagenet"), formula)


def test_store_levels_truncates_like_torch():
    levels = torch.tensor([0.0, 0.4, 1.0, 127.999, 128.0, 254.9999, 255.0])
    target = torch.empty(levels.shape, dtype=torch.uint8)
    _ops.store_levels(target, levels)
    assert torch.equal(target, levels.to(torch.uint8))
    assert np.array_equal(target.numpy(), [0, 0, 1, 127, 128, 254, 255])
