"""BN adaptation (shared/spec/methods.md section 1): normalise with the test batch's moments."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cema_cli.strategies.base import Strategy, StrategyContext
from cema_cli.strategies.options import non_negative


@dataclass(frozen=True)
class BNConfig:
    prior: float = 0.0  # N: weight of the source statistics, (N*source + B*batch)/(N + B); 0 = batch only

    def validate(self) -> None:
        non_negative("prior", self.prior)


def use_batch_statistics(model: nn.Module) -> nn.Module:
    """Every BatchNorm normalises with the current batch (running statistics deleted, as Tent does)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
    return model


class PriorBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with moments (N*source + B*batch)/(N + B), B the batch size (section 1)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, prior: float) -> None:
        super().__init__(bn.num_features, bn.eps, affine=bn.affine)
        self.load_state_dict(bn.state_dict())
        self.prior = prior

    def _check_input_dim(self, x: torch.Tensor) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.ndim))
        w = self.prior / (self.prior + x.shape[0])
        mean = w * self.running_mean + (1 - w) * x.mean(dims)
        var = w * self.running_var + (1 - w) * x.var(dims, unbiased=False)
        return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)


def use_prior_statistics(model: nn.Module, prior: float) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, PriorBatchNorm(child, prior).to(child.weight.device))
        else:
            use_prior_statistics(child, prior)
    return model


class BatchNormAdapt(Strategy):
    """Test-batch statistics in every BatchNorm layer, no gradient steps; runs on the edge."""

    config_class = BNConfig
    backward_free = True
    needs_batchnorm = True  # nothing else to adapt: refused on a model without BatchNorm

    def __init__(self, context: StrategyContext, config: BNConfig) -> None:
        super().__init__(context, config)
        model = context.edge_model.eval()
        self.model = use_prior_statistics(model, config.prior) if config.prior > 0 else use_batch_statistics(model)

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        self.work.edge_forward += len(images)
        return self.predict(images)
