"""The real edge-cloud link (issue 24): figures, not tests.

    python benchmarks/bench_link.py overhead --rounds 3      # the README's main job: simulated vs lockstep live, interleaved
    python benchmarks/bench_link.py shape --rates 2Mbit,8Mbit  # measured vs modelled upload time and staleness, wire overhead
    python benchmarks/bench_link.py fleet --edges 16         # N edge processes against one server on loopback

``overhead`` runs `cema bench --corruption gaussian_noise --severity 5` (the main job) and the
same with `--link live` as whole commands, alternating, and prints each wall time and the ratio
per round (the live side includes starting its server). ``shape`` runs Tent (every sample
uploaded) and CEMA on a shaped live link, lockstep and realtime, against the cost model at the
shaped rate. ``fleet`` starts one local server and N edge processes (tiny continual runs) and
prints what the server measured. Each prints `uptime` before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return os.getloadavg().__repr__() + f" on {os.cpu_count()} cores"


def timed_command(args: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a command and every process it started and waited for
    (the live link's local server included)."""
    import resource

    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cema_cli", *args, "--out", str(out), "--force"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def overhead(args: argparse.Namespace) -> None:
    job = ["bench", "--corruption", "gaussian_noise", "--severity", "5", "--threads", "1", *args.extra]
    folder = Path(tempfile.mkdtemp(prefix="cema-bench-link-"))
    print(f"load before: {load()}")
    ratios: dict[str, list[float]] = {"wall": [], "cpu": [], "stream": []}
    for round_ in range(args.rounds):
        order = [("simulated", job), ("live", [*job, "--link", "live"])]
        measured = {name: timed_command(command, folder / name) for name, command in (order if round_ % 2 == 0 else order[::-1])}
        stream = {name: stream_seconds(folder / name) for name in measured}
        for kind, values in (("wall", {n: m[0] for n, m in measured.items()}), ("cpu", {n: m[1] for n, m in measured.items()}), ("stream", stream)):
            ratios[kind].append(values["live"] / values["simulated"])
        print(f"round {round_ + 1}: simulated / live lockstep: wall {measured['simulated'][0]:.1f} / {measured['live'][0]:.1f} s, "
              f"CPU {measured['simulated'][1]:.1f} / {measured['live'][1]:.1f} s (both processes), "
              f"stream {stream['simulated']:.1f} / {stream['live']:.1f} s; load {load()}")
    print(f"median ratios live/simulated over {args.rounds} rounds: " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in ratios.items()))


def stream_seconds(folder: Path) -> float:
    """The rows' ``seconds``: the edge's steps and scoring (in lockstep the cloud's turns too),
    without start-up (imports, data, models, the server's start)."""
    import csv

    with open(folder / "results.csv") as rows:
        return sum(float(row["seconds"]) for row in csv.DictReader(rows))


def shape(args: argparse.Namespace) -> None:
    import torch

    from cema_cli.config import CostModel, RunConfig, parse_bit_rate
    from cema_cli.link.options import LinkOptions
    from cema_cli.run.api import run_benchmark

    torch.set_num_threads(1)
    print(f"load before: {load()}")
    for text in args.rates.split(","):
        rate = parse_bit_rate(text, "--rates")
        base = RunConfig(methods=("tent", "cema"), corruptions=("gaussian_noise",), samples=args.samples, device="cpu",
                         costs=CostModel(uplink_rate_bps=rate, downlink_rate_bps=rate))
        simulated = {r["method"]: r for r in run_benchmark(base)}
        for timing in ("lockstep", "realtime"):
            link = LinkOptions(mode="live", shape_up_bps=rate, shape_down_bps=rate, shaper=args.shaper, timing=timing,
                               frame_rate=args.frame_rate if timing == "realtime" else None)
            for row in run_benchmark(base, link=link):
                report_shaped(text, timing, row, simulated[row["method"]])
    print(f"load after: {load()}")


def report_shaped(rate: str, timing: str, row: dict, simulated: dict) -> None:
    messages = row["upload_messages"] or 1
    payload_up = row["uplink_bytes"] / messages
    wire_up = row["wire_uplink_bytes"] / messages
    rate_bps = json.loads(row["cost_model"])["uplink_rate_bps"]
    modelled = 8 * payload_up / rate_bps
    print(f"{rate} {timing:8s} {row['method']:5s} acc {100 * row['accuracy']:.2f} (sim {100 * simulated['accuracy']:.2f}) | "
          f"upload/message: payload {payload_up:,.0f} B, wire {wire_up:,.0f} B ({100 * (wire_up / payload_up - 1) if payload_up else 0:+.2f}%), "
          f"modelled {modelled:.3f} s, measured {row['measured_upload_seconds'] or 0:.3f} s | "
          f"staleness: batches sim {simulated['param_delay_batches']:.2f} live {row['param_delay_batches']:.2f}, "
          f"seconds modelled {simulated['param_delay_seconds'] or 0:.3f} measured {row['measured_staleness_seconds'] or 0:.3f} | "
          f"wire overhead all messages {100 * (row['wire_overhead'] or 0):+.1f}% | {row['link_shaping']}")


def fleet(args: argparse.Namespace) -> None:
    from cema_cli.config import RunConfig
    from cema_cli.link.fleet import live_summary, run_live_fleet
    from cema_cli.link.options import LinkOptions
    from cema_cli.run.fleet_config import FleetConfig, rotated_edges

    print(f"load before: {load()}")
    base = RunConfig(methods=(args.method,), corruptions=("gaussian_noise", "snow"), samples=args.samples, batch_size=16,
                     device="cpu", protocol="continual")
    config = FleetConfig(edges=rotated_edges(args.edges), independent=False, cloud_capacity=args.capacity)
    folder = Path(tempfile.mkdtemp(prefix="cema-live-fleet-"))
    start = time.perf_counter()
    result = run_live_fleet(base, config, LinkOptions(mode="live", timing=args.timing, frame_rate=args.frame_rate), folder)
    seconds = time.perf_counter() - start
    summary = live_summary(args.method, config, result.rows, result)
    expected = args.edges * len(base.corruptions)
    print(f"{args.edges} edge processes, {args.method}, {seconds:.0f} s: rows {len(result.rows)}/{expected}, "
          f"failed edges {result.failed or 'none'}, links not ok {summary['links_not_ok']}, uploads lost {summary['uploads_lost']}")
    print(f"server: peak sessions held {result.peak_sessions}, requests {summary['requests']}, request latency p50 "
          f"{summary['p50_request_s']:.3f} s p99 {summary['p99_request_s']:.3f} s, queue wait mean {summary['mean_queue_wait_s']:.3f} s "
          f"p99 {summary['p99_queue_wait_s']:.3f} s, utilisation {100 * summary['cloud_utilisation']:.0f}%, "
          f"peak RSS {summary['server_peak_rss_bytes'] / 2**20:.0f} MiB (the edge processes together: peak PSS "
          f"{summary['edges_peak_pss_bytes'] / 2**20:.0f} MiB), sessions freed {result.server.get('sessions_freed')}, "
          f"refused {result.server.get('refused')}")
    print(f"load after: {load()}; files in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("overhead")
    one.add_argument("--rounds", type=int, default=3)
    one.add_argument("--extra", nargs="*", default=[], help="more flags for both commands")
    two = commands.add_parser("shape")
    two.add_argument("--rates", default="2Mbit,8Mbit")
    two.add_argument("--samples", type=int, default=512)
    two.add_argument("--shaper", default="auto", choices=("auto", "tc", "app"))
    two.add_argument("--frame-rate", type=float, default=64.0, help="realtime: images per second")
    three = commands.add_parser("fleet")
    three.add_argument("--edges", type=int, default=16, help="edge processes (each holds about 260-340 MB: 32 need about 11 GB free)")
    three.add_argument("--method", default="cema")
    three.add_argument("--samples", type=int, default=64)
    three.add_argument("--capacity", type=int, default=1)
    three.add_argument("--timing", default="lockstep", choices=("lockstep", "realtime"))
    three.add_argument("--frame-rate", type=float, default=None)
    args = parser.parse_args()
    {"overhead": overhead, "shape": shape, "fleet": fleet}[args.command](args)


if __name__ == "__main__":
    main()
