"""Counted compute: forward GFLOPs per sample, exact and hardware-independent.

Counted by ``torch.utils.flop_counter`` on the meta device (shapes only: no arithmetic, no
memory), whose convention is 2 FLOPs per multiply-add of convolutions and matrix products;
element-wise work (normalisation, activations) is not counted. Anchors at 224 px: ResNet-18 3.63,
ResNet-50 8.18, ResNet-101 15.60 GFLOP per image (tests/test_flops.py).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_gflops_per_sample(model: nn.Module, image_shape: tuple[int, ...]) -> float:
    """GFLOPs of one forward pass of one uint8 image of ``image_shape`` (C, H, W) through ``model``
    (a cema Classifier: its resize to the model's input size is part of the forward)."""
    meta_model = copy.deepcopy(model).to("meta")
    image = torch.zeros((1, *image_shape), dtype=torch.uint8, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model(image)
    return counter.get_total_flops() / 1e9
