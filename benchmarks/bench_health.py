"""The cost of judging a stream (cema_cli.results.health: finite logits, class counts, the end-of-domain
parameter check) relative to the strategy's own step, interleaved in one process.

    python benchmarks/bench_health.py [--method tent] [--batches 40] [--rounds 5]

Runs the same stream through ``run_stream`` twice per round: as shipped, and with the verdict's
bookkeeping replaced by no-ops; prints both times and their ratio. Not a test: timings depend
on the machine and its load.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cema_cli.run import engine  # noqa: E402
from cema_cli.link.channel import Channel  # noqa: E402
from cema_cli.config import ChannelConfig  # noqa: E402
from cema_cli.data.embedded import EmbeddedDigits  # noqa: E402
from cema_cli.models import load_model  # noqa: E402
from cema_cli.strategies import STRATEGIES  # noqa: E402
from cema_cli.strategies.base import StrategyContext, make_config  # noqa: E402


def strategy(method: str, edge, cloud, data):
    factory = STRATEGIES.get(method)
    context = StrategyContext(copy.deepcopy(edge), lambda: copy.deepcopy(cloud), Channel(ChannelConfig()), 10,
                              torch.device("cpu"), lambda n: data.clean_samples(n), 0)
    return factory(context, make_config(factory, {}, method))


def timed(method: str, batches, parts) -> float:
    s = strategy(method, *parts)
    start = time.perf_counter()
    engine.run_stream(s, batches, s.context.channel, torch.device("cpu"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="tent")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = EmbeddedDigits()
    parts = (load_model("mnist-edge"), load_model("mnist-foundation"), data)
    batches = list(data.stream("gaussian_noise", 5, 0, 64 * args.batches, 64))
    shipped = (engine.Tally.watch, engine.stream_status)

    with_checks, without = [], []
    for _ in range(args.rounds):
        engine.Tally.watch, engine.stream_status = shipped
        with_checks.append(timed(args.method, batches, parts))
        engine.Tally.watch, engine.stream_status = lambda *a: None, lambda *a: "ok"
        without.append(timed(args.method, batches, parts))
    best_with, best_without = min(with_checks), min(without)
    print(f"{args.method}, {args.batches} batches of 64, best of {args.rounds}: with checks {best_with:.3f} s, "
          f"without {best_without:.3f} s, ratio {best_with / best_without:.3f}")


if __name__ == "__main__":
    main()
