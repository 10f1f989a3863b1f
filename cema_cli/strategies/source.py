"""No adaptation (shared/spec/methods.md section 1): the source model in eval mode."""

from __future__ import annotations

import torch

from cema_cli.strategies.base import Strategy, StrategyContext


class Source(Strategy):
    """Predict with the source model and its source BatchNorm statistics; upload nothing."""

    batch_statistics = False  # eval mode: valid at batch size 1 (shared/spec/streams.md section 7)

    def __init__(self, context: StrategyContext, config) -> None:
        super().__init__(context, config)
        self.model = context.edge_model.eval()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)
