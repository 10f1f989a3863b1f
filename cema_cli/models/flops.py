"""Counted compute: forward GFLOPs per sample, exact and hardware-independent.

Counted by ``torch.utils.flop_counter`` on the meta device (shapes only: no arithmetic, no
memory), whose convention is 2 FLOPs per multiply-add of convolutions and matrix products;
element-wise work (normalisation, activations) is not counted. Anchors at 224 px: ResNet-18 3.63,
ResNet-50 8.18, ResNet-101 15.60 GFLOP per image (tests/test_flops.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_gflops_per_sample(model: nn.Module, sample_shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> float:
    """GFLOPs of one forward pass of one sample of ``sample_shape`` and ``dtype`` through ``model``:
    a uint8 image (C, H, W), an int16 sensor window (C, T), token ids (L,) at their padded length
    (a cema Classifier: its resize to the model's input size is part of the forward)."""
    meta_model = copy.deepcopy(model).to("meta")
    image = torch.zeros((1, *sample_shape), dtype=dtype, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model(image)
    return counter.get_total_flops() / 1e9


@dataclass(frozen=True)
class PassGFLOPs:
    """Counted GFLOPs of one sample through a model: its forward pass, and the backward pass
    that follows it when the output requires a gradient (0 when nothing trains)."""

    forward: float
    backward: float


def pass_gflops_per_sample(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype) -> PassGFLOPs:
    """Forward and backward GFLOPs of one sample of ``input_shape`` ((C, H, W), (C, T) or (L,)) and ``dtype``, as
    ``model`` is configured now (which parameters require a gradient decides what the backward
    computes: with only norm parameters training, a convolution's backward computes the gradient
    of its input, not of its weight). Counted, not assumed: the backward of ``output.sum()`` runs
    under the counter too. On the meta device when the model allows it; a model that reads
    values (test-time batch renorm's first-batch flag) is counted on a CPU copy instead."""
    try:
        return _count_pass(copy.deepcopy(model).to("meta"), input_shape, dtype, "meta")
    except (NotImplementedError, RuntimeError):  # meta tensors have no values to read
        return _count_pass(copy.deepcopy(model).cpu(), input_shape, dtype, "cpu")


def _count_pass(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype, device: str) -> PassGFLOPs:
    images = torch.zeros((2, *input_shape), dtype=dtype, device=device)  # 2: batch statistics need two samples
    with torch.enable_grad():
        with FlopCounterMode(display=False) as forward:
            output = model(images)
        backward = 0
        if output.requires_grad:
            with FlopCounterMode(display=False) as counter:
                output.float().sum().backward()
            backward = counter.get_total_flops()
    return PassGFLOPs(forward.get_total_flops() / 2e9, backward / 2e9)
