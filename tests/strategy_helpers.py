"""Builders for strategy tests: real (cached) embedded models and a noisy batch of real digits."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

from cema_cli.link.channel import Channel
from cema_cli.config import ChannelConfig
from cema_cli.data.embedded import EmbeddedDigits
from cema_cli.models import load_model
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import StrategyContext, make_config


@lru_cache(maxsize=None)
def source_model(name: str) -> torch.nn.Module:
    return load_model(name)


@lru_cache(maxsize=1)
def dataset() -> EmbeddedDigits:
    return EmbeddedDigits()


def noisy_batches(count: int, size: int = 64, severity: int = 3) -> list[torch.Tensor]:
    images = dataset().domain_images("gaussian_noise", severity)
    return [images[i * size : (i + 1) * size] for i in range(count)]


def context(channel_config: ChannelConfig | None = None, clean: bool = True) -> StrategyContext:
    return StrategyContext(
        edge_model=copy.deepcopy(source_model("mnist-edge")),
        cloud_model=lambda: copy.deepcopy(source_model("mnist-foundation")),
        channel=Channel(channel_config or ChannelConfig()),
        num_classes=10,
        device=torch.device("cpu"),
        clean_samples=(lambda n: dataset().clean_samples(n)) if clean else (lambda n: torch.empty(0, 3, 32, 32, dtype=torch.uint8)),
        seed=0,
    )


def strategy(method: str, channel_config: ChannelConfig | None = None, **options):
    torch.manual_seed(0)
    factory = STRATEGIES.get(method)
    return factory(context(channel_config), make_config(factory, options, method))
