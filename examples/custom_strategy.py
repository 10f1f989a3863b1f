"""A custom strategy registered from outside the package: examples/custom_strategy.py --samples 256

The contract (cema_cli/strategies/base.py): ``config_class`` (a dataclass of options),
``__init__(self, context, config)``, ``predict(images) -> logits`` (never adapts) and
``step(images) -> logits`` (the scored prediction, then any adaptation). Labels never reach it.
"""

import argparse
from dataclasses import dataclass

import torch

from cema_cli.run.api import run_benchmark
from cema_cli.config import RunConfig
from cema_cli.results.report import results_frame
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import Strategy, StrategyContext  # the contract


@dataclass(frozen=True)
class EmaConfig:
    momentum: float = 0.5  # weight of each new test batch in the running BatchNorm statistics


class EmaBatchNorm(Strategy):
    """BatchNorm statistics that follow the test stream: an EMA of the batch moments."""
    config_class = EmaConfig

    def __init__(self, context: StrategyContext, config: EmaConfig) -> None:
        super().__init__(context, config)
        self.model = context.edge_model.eval()
        for norm in self.model.modules():
            if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
                norm.momentum = config.momentum

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # eval mode: the current running statistics, nothing changes

    @torch.inference_mode()
    def step(self, images: torch.Tensor) -> torch.Tensor:
        self.model.train()  # as bn does, include this batch's moments, then predict
        self.model(images)  # a train-mode pass moves the running statistics only
        self.model.eval()
        return self.predict(images)


def main() -> None:
    parser = argparse.ArgumentParser(description="a custom strategy")
    parser.add_argument("--samples", type=int, default=512)
    args = parser.parse_args()
    STRATEGIES.register("bn-ema", EmaBatchNorm, "BatchNorm statistics as an EMA over the test stream")
    config = RunConfig(methods=("bn", "bn-ema"), corruptions=("gaussian_noise",), samples=args.samples,
                       method_options={"bn-ema": {"momentum": 0.8}})  # as --option bn-ema.momentum=0.8
    print(results_frame(run_benchmark(config))[["method", "corruption", "accuracy", "method_config"]].to_string(index=False))


if __name__ == "__main__":
    main()
