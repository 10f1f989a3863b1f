"""Is the embedded stream long enough for entropy minimisation to act? (not a test)

    python benchmarks/long_stream.py --repeat 10 --corruptions snow,fog,contrast --methods bn,tent,eata

A domain of the embedded default is 2,500 digits (40 batches); an ImageNet-C domain is 50,000
(782 batches). Here each domain's test digits are repeated K times, each repeat with fresh
corruption draws (the corruption seeds of indices k*N + i), in one seeded stream order. Prints
each method's accuracy over the whole stream and over its last 2,496 samples (39 batches), where
an adapting method has had the whole stream to act. Presets as the dataset's (cifar10) unless
--preset is given; no constant is tuned.
"""

from __future__ import annotations

import argparse

import torch

from cema_cli.run import api

from cema_cli import corruptions
from cema_cli.config import RunConfig
from cema_cli.data.base import chosen_order, tensor_batches
from cema_cli.data.embedded import EmbeddedDigits

LAST = 39 * 64


class RepeatedDigits(EmbeddedDigits):
    """The embedded digits, each domain repeated ``repeat`` times with fresh corruption draws."""

    repeat = 1

    def _corrupt(self, corruption: str, severity: int) -> torch.Tensor:
        n = len(self.images)
        return torch.cat([
            corruptions.corrupt(self.images[i : i + 500], corruption, severity, seed=self.corruption_seed,
                                indices=torch.arange(k * n + i, k * n + min(i + 500, n)), constants=self.constants)
            for k in range(self.repeat) for i in range(0, n, 500)
        ])

    def domain_size(self, corruption: str, severity: int) -> int:
        return self.repeat * len(self.images)

    def domain_labels(self, corruption: str, severity: int) -> torch.Tensor:
        return self.labels.repeat(self.repeat)

    def stream(self, corruption, severity, seed, samples, batch_size, order=None):
        images = self.domain_images(corruption, severity)
        order = chosen_order(len(images), seed, samples, order)
        return tensor_batches(images, self.domain_labels(corruption, severity), order, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--corruptions", default="snow,fog,contrast")
    parser.add_argument("--methods", default="bn,tent,eata")
    parser.add_argument("--preset", default=None)
    args = parser.parse_args()
    RepeatedDigits.repeat = args.repeat
    api.open_dataset = lambda config, pin_memory=False: RepeatedDigits(config.constants)
    last: dict[tuple[str, str], list[int]] = {}

    def on_batch(record: dict) -> None:
        key = (record["method"], record["corruption"])
        last.setdefault(key, []).append(record["correct"])

    config = RunConfig(methods=tuple(args.methods.split(",")), corruptions=tuple(args.corruptions.split(",")),
                       device="cpu", preset=args.preset)
    rows = api.run_benchmark(config, api.Events(on_batch=on_batch))
    print(f"repeat {args.repeat} ({rows[0]['samples']} samples per domain), preset {rows[0]['preset']}")
    print(f"{'method':8} {'corruption':12} {'acc %':>7} {'last 2,496 %':>13} {'backward':>9}")
    for row in rows:
        correct = last[(row["method"], row["corruption"])]
        tail = 100 * (correct[-1] - correct[-40]) / LAST
        backward = row["edge_backward_samples"] + row["cloud_backward_samples"]
        print(f"{row['method']:8} {row['corruption']:12} {100 * row['accuracy']:7.2f} {tail:13.2f} {backward:9d}")


if __name__ == "__main__":
    main()
