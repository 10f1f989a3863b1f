"""The small BatchNorm ResNets trained by the project for the embedded default, and the wrapper
that turns integer samples (uint8 images, int16 sensor windows; token ids pass through) into
normalised model input."""

from __future__ import annotations

import torch
from torch import nn

from cema_cli.errors import CemaError


class BasicBlock(nn.Module):
    """The ResNet basic block (two 3x3 convolutions, BatchNorm, identity or 1x1 shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet: a 3x3 stem, three stages of basic blocks, global pooling."""

    def __init__(self, widths: tuple[int, int, int], blocks: int, num_classes: int, stem_stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.layers(self.stem(x))
        return self.fc(features.mean(dim=(2, 3)))


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 when it is half precision (autocast's output), else ``x`` itself."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class Classifier(nn.Module):
    """Integer samples -> logits: normalise per channel with the model's own mean/std (given in
    physical units, times ``scale`` counts per unit: 255 for pixels in [0, 1]), resize (bilinear,
    antialiased) images when ``input_size`` is set and their size differs (None: the samples' own
    size, the dataset's native one), run the network, and optionally keep only a subset of the
    classes (shared/spec/data.md). The channel axis is axis 1 whatever the sample's rank:
    (N, 3, H, W) images, (N, 6, T) sensor windows. Without ``mean`` the samples reach the network
    as they are (token ids). The logits are float32 also when the network ran under autocast
    (--amp), so that every entropy, softmax and loss computed from them is float32
    (strategies/precision.py)."""

    def __init__(
        self, net: nn.Module, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, class_subset=None,
        input_size: tuple[int, int] | None = None, channels_last: bool = False, scale: float | tuple[float, ...] = 255.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.input_size = None if input_size is None else tuple(input_size)
        self.channels_last = channels_last
        counts = None if mean is None else torch.as_tensor(scale, dtype=torch.float32).expand(len(mean))
        self.register_buffer("mean", None if mean is None else torch.tensor(mean) * counts, persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(std) * counts, persistent=False)
        subset = None if class_subset is None else torch.as_tensor(class_subset, dtype=torch.long)
        self.register_buffer("class_subset", subset, persistent=False)

    def normalise(self, samples: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return samples
        shape = (1, -1) + (1,) * (samples.ndim - 2)
        return (samples.to(self.mean.dtype) - self.mean.view(shape)) / self.std.view(shape)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalise(images)
        if self.input_size is not None and x.ndim == 4 and tuple(x.shape[-2:]) != self.input_size:
            x = nn.functional.interpolate(x, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = at_least_float32(self.net(x))
        return logits if self.class_subset is None else logits[:, self.class_subset]

    def fed_size(self, image_size: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) the network sees for images of ``image_size``: theirs, or ``input_size``."""
        return self.input_size if self.input_size is not None else (int(image_size[0]), int(image_size[1]))

    def head(self) -> nn.Linear:
        """The network's final linear classifier: timm's ``get_classifier()``, else the last
        ``nn.Linear`` it registers (torchvision ``fc``/``heads.head``, the embedded ``fc``)."""
        head = self.net.get_classifier() if hasattr(self.net, "get_classifier") else None
        if not isinstance(head, nn.Linear):
            head = next((m for m in reversed(list(self.net.modules())) if isinstance(m, nn.Linear)), None)
        if head is None:
            raise CemaError(f"model {type(self.net).__name__} has no final nn.Linear classifier; LAME and T3A read "
                            "the features entering it. Use a model whose logits come from a linear head.")
        return head

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) of the head, restricted to the kept classes; b is zero when the head has none."""
        head = self.head()
        weight = head.weight
        bias = head.bias if head.bias is not None else weight.new_zeros(len(weight))
        if self.class_subset is not None:
            return weight[self.class_subset], bias[self.class_subset]
        return weight, bias

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features entering the head, flattened to N x d; the logits), from one forward with a
        pre-hook on the head (methods-more.md section 9.6 trap 6)."""
        seen: dict[str, torch.Tensor] = {}
        head = self.head()
        hooks = (head.register_forward_pre_hook(lambda _m, args: seen.__setitem__("in", args[0])),
                 head.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out)))
        try:
            logits = self.forward(images)
        finally:
            for hook in hooks:
                hook.remove()
        full = seen.get("out")
        if full is not None and self.class_subset is not None:
            full = full[:, self.class_subset]
        if full is None or full.shape != logits.shape or not torch.equal(at_least_float32(full), logits):
            raise CemaError(f"model {type(self.net).__name__}'s last nn.Linear is not its classifier head; LAME and T3A "
                            "need a network whose logits come from a final linear layer.")
        return seen["in"].reshape(len(logits), -1), logits
