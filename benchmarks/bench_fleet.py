"""The fleet's own overhead (issue 12): a fleet of N edges on the embedded default against the same
N edges run alone, one after another, in one thread (not a test; prints figures).

    python benchmarks/bench_fleet.py                       # 8 edges, cema, 3 corruptions x 256 samples
    python benchmarks/bench_fleet.py --method tent --edges 4 --repeats 5

Both sides do the same model work: each edge's cloud copy learns on that edge's uploads
(``--foundation per-edge --student per-edge``, per-edge batching, unlimited capacity), so the
difference is the fleet's bookkeeping (generators, queue, scheduler). Fleet and single runs
alternate (interleaved) and the median of the repeats is reported. Setup (opening the dataset,
loading models) is timed apart and taken out: the single runs open it N times, the fleet once.
Target: overhead under 10% of the time per tick.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cema_cli.api import Events, open_session, run_benchmark
from cema_cli.config import RunConfig
from cema_cli.fleet import run_fleet
from cema_cli.fleet_config import FleetConfig, edge_configs, rotated_edges
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
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in embedded.RECIPES:
        embedded.load_or_train(name)
    base = RunConfig(methods=(args.method,), corruptions=tuple(args.corruptions.split(",")), samples=args.samples, device="cpu",
                     protocol="continual", method_options={"eata": {"fisher_samples": 500}} if args.method == "eata" else {})
    fleet = FleetConfig(edges=rotated_edges(args.edges), foundation="per-edge", independent=False)
    singles = edge_configs(base, fleet)
    ticks = sum(-(-args.samples // base.batch_size) for _ in base.corruptions)  # batches per edge = global ticks
    setup = statistics.median(timed(lambda: open_session(base, Events())) for _ in range(3))
    fleet_s, single_s = [], []
    for _ in range(args.repeats):  # interleaved
        fleet_s.append(timed(lambda: run_fleet(base, fleet)) - setup)
        single_s.append(timed(lambda: [run_benchmark(c) for c in singles]) - len(singles) * setup)
    f, s = statistics.median(fleet_s), statistics.median(single_s)
    print(f"{args.edges} edges, {args.method}, {len(base.corruptions)} corruptions x {args.samples} samples, {ticks} ticks, 1 thread")
    print(f"setup (open dataset, load models): {setup * 1e3:.1f} ms, taken out of each run")
    print(f"fleet:              {f:.2f} s  = {f / ticks * 1e3:.1f} ms per tick  (runs: {', '.join(f'{x:.2f}' for x in fleet_s)})")
    print(f"{args.edges} single edges:    {s:.2f} s  = {s / ticks * 1e3:.1f} ms per tick  (runs: {', '.join(f'{x:.2f}' for x in single_s)})")
    print(f"fleet overhead: {100 * (f / s - 1):+.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
