"""Quickstart: run a benchmark from Python and get one tidy pandas row per (method, domain).

    python examples/quickstart.py --samples 256

Runs offline on the embedded default (real MNIST digits, corruptions generated); its two
models are trained once and cached in ~/.cache/cema.
"""

import argparse

from cema_cli.run.api import run_benchmark
from cema_cli.config import RunConfig
from cema_cli.results.report import results_frame


def main() -> None:
    parser = argparse.ArgumentParser(description="cema quickstart")
    parser.add_argument("--samples", type=int, default=512, help="test samples per domain")
    args = parser.parse_args()

    config = RunConfig(
        methods=("source", "bn", "tent"),  # `cema list methods` names them all
        dataset="mnist",
        corruptions=("gaussian_noise", "impulse_noise"),
        severities=(5,),
        samples=args.samples,
        seed=0,  # fixes the stream order: every method sees the same batches
    )
    frame = results_frame(run_benchmark(config))  # a pandas DataFrame, columns as in results.csv
    print(frame[["method", "corruption", "severity", "accuracy", "uploads", "uplink_bytes"]].to_string(index=False))
    print((100 * frame.pivot_table(index="method", columns="corruption", values="accuracy", sort=False)).round(2))


if __name__ == "__main__":
    main()
