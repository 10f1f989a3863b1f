"""The NumPy twin of a sample's torch generator (cema_cli/corruptions/_random.py) and the
corruptions that draw through it: the same numbers as torch, and the same bytes as torch's own
sampling path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cema_cli.corruptions._random as R
from cema_cli.corruptions import corrupt
from corruption_helpers import batch


def test_twin_continues_a_fresh_generator_exactly():
    g = torch.Generator().manual_seed(2**40 + 12345)  # the engine keeps the seed's low 32 bits
    bits = R.numpy_twin(g)
    assert bits is not None, "the twin self-check failed on this torch/NumPy"
    raw = bits.random_raw(2 * 300)
    expected = torch.rand(300, generator=g, dtype=torch.float64).numpy()
    np.testing.assert_array_equal(R.uniform64_from_raw(raw[0::2], raw[1::2]), expected)


@pytest.mark.parametrize("used", [1, 623, 624, 625, 5000])
def test_twin_continues_a_used_generator_exactly(used):
    g = torch.Generator().manual_seed(7)
    torch.rand(used, generator=g)  # float32: one raw value each, so block boundaries are crossed
    raw = R.numpy_twin(g).random_raw(1000)
    np.testing.assert_array_equal(R.uniform32_from_raw(raw), torch.rand(1000, generator=g).numpy())


@pytest.mark.parametrize("name", ["shot_noise", "impulse_noise"])
@pytest.mark.parametrize("side,constants", [(64, "cifar"), (80, "imagenet")])
def test_twin_path_equals_torch_sampling(monkeypatch, name, side, constants):
    images = batch(side, 3)
    for severity in (1, 3, 5):
        fast = corrupt(images, name, severity, seed=4, indices=[0, 5, 9], constants=constants)
        monkeypatch.setattr(R, "_twin_checked", False)  # as on a torch whose generator cannot be twinned
        slow = corrupt(images, name, severity, seed=4, indices=[0, 5, 9], constants=constants)
        monkeypatch.setattr(R, "_twin_checked", True)
        assert torch.equal(fast, slow)
