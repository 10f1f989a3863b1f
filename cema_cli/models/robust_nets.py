"""The CIFAR architectures of RobustBench's corruption zoo, written so that RobustBench's own
checkpoint files load unchanged (their module names are the state_dict keys):

- ``WideResNet(depth, widen, classes)``: the pre-activation Wide ResNet of Zagoruyko and
  Komodakis (RobustBench ``Standard`` = WRN-28-10; ``Hendrycks2020AugMix_WRN`` = WRN-40-2);
- ``CifarResNeXt(depth, cardinality, base_width, classes)``: ResNeXt-29 (4 x 32d) of
  ``Hendrycks2020AugMix_ResNeXt`` (Xie et al., "Aggregated residual transformations", 2017).

The networks take normalised images; each zoo entry's mean and std (cema_cli/models/robustbench.py)
are applied by the Classifier around them, so a checkpoint's keys are exactly the network's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut. When the width or
    stride changes, the shortcut is a 1x1 convolution of the *activated* input (as in the original
    WRN code); otherwise it is the raw input."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.projects = cin != cout
        if self.projects:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)  # noqa: N815 - the checkpoints' key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (self.convShortcut(activated) if self.projects else x)


class WideStage(nn.Module):
    """``count`` blocks, the first changing width and stride (keys ``blockN.layer.i.*``)."""

    def __init__(self, count: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(count)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen for 32-px images: a 3x3 stem, three stages of (depth - 4) / 6 blocks of
    widths 16k, 32k, 64k, a final BN-ReLU, global average pooling and a linear head."""

    def __init__(self, depth: int, widen: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a Wide ResNet's depth is 6n + 4, not {depth}")
        count, widths = (depth - 4) // 6, (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = WideStage(count, widths[0], widths[1], 1)
        self.block2 = WideStage(count, widths[1], widths[2], 2)
        self.block3 = WideStage(count, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))
        return self.fc(features.mean(dim=(2, 3)))  # the 8x8 average pool of a 32-px input


class ResNeXtBlock(nn.Module):
    """Bottleneck with grouped 3x3 convolution: 1x1 reduce, 3x3 in ``cardinality`` groups, 1x1
    expand to 4 x planes; BN after each, ReLU after the sum with the (projected) input."""

    def __init__(self, cin: int, planes: int, cardinality: int, base_width: int, stride: int) -> None:
        super().__init__()
        inner = cardinality * (planes * base_width // 64)
        self.conv_reduce = nn.Conv2d(cin, inner, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_conv = nn.Conv2d(inner, inner, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(inner)
        self.conv_expand = nn.Conv2d(inner, 4 * planes, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * planes, 1, stride, bias=False), nn.BatchNorm2d(4 * planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNeXt(nn.Module):
    """ResNeXt-depth for 32-px images: a 3x3 stem of 64 channels, three stages of (depth - 2) / 9
    bottlenecks (planes 64, 128, 256; strides 1, 2, 2), global average pooling, a linear head."""

    def __init__(self, depth: int, cardinality: int, base_width: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"a CIFAR ResNeXt's depth is 9n + 2, not {depth}")
        count, cin = (depth - 2) // 9, 64
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2)):
            blocks = []
            for i in range(count):
                blocks.append(ResNeXtBlock(cin, planes, cardinality, base_width, stride if i == 0 else 1))
                cin = 4 * planes
            stages.append(nn.Sequential(*blocks))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.classifier = nn.Linear(cin, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_1(self.conv_1_3x3(x)))
        out = self.stage_3(self.stage_2(self.stage_1(out)))
        return self.classifier(out.mean(dim=(2, 3)))
