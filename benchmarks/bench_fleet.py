"""The fleet's own overhead (issue 12): a fleet of N edges on the embedded default against the same
N edges run alone, one after another, in one thread (not a test; prints figures).

    python benchmarks/bench_fleet.py                       # 8 edges, cema, 3 corruptions, 128 vs 384 samples
    python benchmarks/bench_fleet.py --method tent --edges 4 --repeats 5

Both sides do the same model work: each edge's cloud copy learns on that edge's uploads
(``--foundation per-edge --student per-edge``, per-edge batching, unlimited capacity), so the
difference is the fleet's bookkeeping (generators, queue, scheduler). Fleet and single runs
alternate (interleaved) and the median of the repeats is reported. Each side is timed on a short
and a 3x longer stream and the difference is divided by the extra ticks, so set-up (opening the
dataset, loading models, counting FLOPs: N times for the single runs, once for the fleet) cancels.
Target: overhead under 10% of the time per tick.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cema_cli.run.api import run_benchmark
from cema_cli.config import RunConfig
from cema_cli.run.fleet import run_fleet
from cema_cli.run.fleet_config import FleetConfig, edge_configs, rotated_edges
from cema_cli.models import embedded


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edges", type=int, default=8)
    parser.add_argument("--method", default="cema")
    parser.add_argument("--corruptions", default="gaussian_noise,snow,contrast")
    parser.add_argument("--samples", type=int, default=128, help="samples per domain of the short runs; the long runs play 3x")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in embedded.RECIPES:
        embedded.load_or_train(name)
    fleet = FleetConfig(edges=rotated_edges(args.edges), foundation="per-edge", independent=False)
    lengths = (args.samples, 3 * args.samples)
    bases = [RunConfig(methods=(args.method,), corruptions=tuple(args.corruptions.split(",")), samples=n, device="cpu", protocol="continual",
                       method_options={"eata": {"fisher_samples": 500}} if args.method == "eata" else {}) for n in lengths]
    ticks = [len(b.corruptions) * -(-n // b.batch_size) for b, n in zip(bases, lengths)]  # batches per edge = global ticks
    fleet_s: list[float] = []
    single_s: list[float] = []
    for _ in range(args.repeats):  # interleaved; each figure is the long run minus the short one, per extra tick
        runs = {}
        for kind in ("fleet", "single"):
            for n, base in zip(lengths, bases):
                play = (lambda b=base: run_fleet(b, fleet)) if kind == "fleet" else (lambda b=base: [run_benchmark(c) for c in edge_configs(b, fleet)])
                runs[kind, n] = timed(play)
        extra = ticks[1] - ticks[0]
        fleet_s.append((runs["fleet", lengths[1]] - runs["fleet", lengths[0]]) / extra)
        single_s.append((runs["single", lengths[1]] - runs["single", lengths[0]]) / extra)
    f, s = statistics.median(fleet_s), statistics.median(single_s)
    print(f"{args.edges} edges, {args.method}, {len(bases[0].corruptions)} corruptions, {lengths[0]} vs {lengths[1]} samples "
          f"({ticks[0]} vs {ticks[1]} ticks), 1 thread, {args.repeats} interleaved repeats")
    print(f"fleet:            {f * 1e3:.1f} ms per tick  (repeats: {', '.join(f'{x * 1e3:.1f}' for x in fleet_s)})")
    print(f"{args.edges} single edges:  {s * 1e3:.1f} ms per tick  (repeats: {', '.join(f'{x * 1e3:.1f}' for x in single_s)})")
    print(f"fleet overhead: {100 * (f / s - 1):+.1f}% per tick (target < 10%)")


if __name__ == "__main__":
    main()
