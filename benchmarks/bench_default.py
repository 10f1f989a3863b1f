"""Wall-clock figures for the embedded default (models cached first; not a test).

    python benchmarks/bench_default.py            # the default `cema bench` (gaussian_noise 5)
    python benchmarks/bench_default.py --full     # 7 methods x 15 corruptions, severity 5

Prints total seconds and where the time goes: corruption generation (data), edge forward
passes, foundation adaptation and distillation in the cloud, and everything else.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

from rich.console import Console

from cema_cli.results import report
from cema_cli.run.api import run_benchmark
from cema_cli.config import RunConfig
from cema_cli.corruptions import COMMON
from cema_cli.data.embedded import EmbeddedDigits
from cema_cli.models import embedded
from cema_cli.strategies import cema, common, tent

SECONDS: dict[str, float] = defaultdict(float)


@contextmanager
def timed(name: str):
    start = time.perf_counter()
    yield
    SECONDS[name] += time.perf_counter() - start


def instrument(owner, attribute: str, name: str) -> None:
    original = getattr(owner, attribute)

    def wrapper(*args, **kwargs):
        with timed(name):
            return original(*args, **kwargs)

    setattr(owner, attribute, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="all methods x the 15 corruptions")
    args = parser.parse_args()
    for name in embedded.RECIPES:
        embedded.load_or_train(name)
    instrument(EmbeddedDigits, "_corrupt", "data: corruption generation")
    instrument(common.CloudEdgeStrategy, "predict", "edge: forward passes")
    instrument(tent, "entropy_step", "tent: forward+backward")
    instrument(cema.CEMACloud, "adapt_foundation", "cloud: foundation adaptation")
    instrument(cema.CEMACloud, "distil", "cloud: distillation")
    methods = ("source", "bn", "tent", "eta", "eata", "cema", "cema-official") if args.full else ("cema",)
    corruptions = COMMON if args.full else ("gaussian_noise",)
    config = RunConfig(methods=methods, corruptions=corruptions, severities=(5,))
    start = time.perf_counter()
    rows = run_benchmark(config)
    total = time.perf_counter() - start
    print(f"{len(methods)} method(s) x {len(corruptions)} corruption(s), {sum(r['samples'] for r in rows):,} predictions: {total:.1f} s")
    for name, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        print(f"  {name:32s} {seconds:7.1f} s  {100 * seconds / total:5.1f}%")
    frame = report.results_frame(rows)
    console = Console(width=200)
    console.print(report.compare_table(frame))
    if len(corruptions) > 1:
        console.print(report.domain_table(frame))
        ratios = frame.pivot_table(index="method", columns="corruption", values="upload_ratio", sort=False)
        print("upload ratio % per domain\n" + (100 * ratios).round(1).to_string())


if __name__ == "__main__":
    main()
