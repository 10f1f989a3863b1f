"""Networks for sequences: 1-D convolutional BatchNorm nets for sensor windows (N, channels, time)
and LayerNorm nets for token ids (N, tokens) over frozen pretrained token embeddings.

Every net ends in a linear ``fc`` head on pooled features, which T3A and LAME read. Token id 0 is
padding: it is masked out of every pooling and attention.
"""

from __future__ import annotations

import torch
from torch import nn

PAD_ID = 0


class ConvBlock1d(nn.Module):
    """Conv1d, BatchNorm1d, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class SignalCNN(nn.Module):
    """The edge's sensor net: a stem and strided 1-D convolution blocks, average pooling over time."""

    def __init__(self, channels: int, widths: tuple[int, ...], num_classes: int, kernel: int = 5) -> None:
        super().__init__()
        layers, cin = [ConvBlock1d(channels, widths[0], kernel, 1)], widths[0]
        for width in widths[1:]:
            layers.append(ConvBlock1d(cin, width, kernel, 2))
            cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(x).mean(dim=2))


class BasicBlock1d(nn.Module):
    """The ResNet basic block in 1-D (two convolutions with BatchNorm, identity or 1x1 shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, 1, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SignalResNet(nn.Module):
    """The cloud's sensor net: a 1-D ResNet (stem, stages of basic blocks, average pooling)."""

    def __init__(self, channels: int, widths: tuple[int, ...], blocks: int, num_classes: int, kernel: int = 5) -> None:
        super().__init__()
        self.stem = ConvBlock1d(channels, widths[0], kernel, 1)
        layers, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock1d(cin, width, 2 if stage > 0 and b == 0 else 1, kernel))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean(dim=2))


class FrozenEmbedding(nn.Module):
    """Pretrained token vectors, never trained (a buffer, not a parameter, and not saved with
    the model: they are read from their package file when the model is built)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table, persistent=False)

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids.long(), self.table).float()


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the kept positions of (N, L, d); an all-padding row gives zeros."""
    weights = keep.to(x.dtype).unsqueeze(2)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TextBag(nn.Module):
    """The edge's text net: the mean over the tokens (a bag of tokens, as EmbeddingBag computes
    it) of each token's pretrained vector and ``scores`` trained values (zero at first), then
    LayerNorm MLP layers and the head. The trained values let a token carry what the pretrained
    vectors do not say (its polarity in the source domain)."""

    def __init__(self, table: torch.Tensor, scores: int, width: int, depth: int, num_classes: int) -> None:
        super().__init__()
        self.embed = FrozenEmbedding(table)
        self.scores = nn.Embedding(len(table), scores)
        nn.init.zeros_(self.scores.weight)
        layers, cin = [], self.embed.dim + scores
        for _ in range(depth):
            layers += [nn.Linear(cin, width), nn.LayerNorm(width), nn.GELU()]
            cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.embed(ids), self.scores(ids.long())], dim=2)
        return self.fc(self.layers(masked_mean(tokens, ids != PAD_ID)))


class EncoderBlock(nn.Module):
    """A pre-LayerNorm transformer encoder block; padding keys are masked out of attention."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TextTransformer(nn.Module):
    """The cloud's text net: each token's pretrained vector and ``scores`` trained values (zero
    at first) projected to ``width``, learned positions, pre-LN encoder blocks, a final
    LayerNorm, the mean over the tokens, the head. The batch is cut after its longest sentence
    (padding changes nothing but the work); an all-padding row attends to its first position (so
    attention never divides by zero)."""

    def __init__(self, table: torch.Tensor, scores: int, width: int, depth: int, heads: int, max_tokens: int, num_classes: int) -> None:
        super().__init__()
        self.embed = FrozenEmbedding(table)
        self.scores = nn.Embedding(len(table), scores)
        nn.init.zeros_(self.scores.weight)
        self.project = nn.Linear(self.embed.dim + scores, width)
        self.position = nn.Parameter(torch.zeros(1, max_tokens, width))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, 2 * width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids != PAD_ID
        length = max(int(keep.sum(dim=1).max()), 1) if ids.device.type != "meta" else ids.shape[1]
        ids, keep = ids[:, :length], keep[:, :length]
        padding = ~keep
        padding[:, 0] = False
        tokens = torch.cat([self.embed(ids), self.scores(ids.long())], dim=2)
        x = self.project(tokens) + self.position[:, :length]
        for block in self.blocks:
            x = block(x, padding)
        return self.fc(masked_mean(self.norm(x), keep))
