"""A study from Python, as `cema sweep` and `cema compare` run it: one entry point, `run_study`.

    python examples/study.py --samples 256 --out study

Three seeds make it a study of resumable cells: run it again and only missing cells run; a
fleet (`fleet=FleetConfig(...)`) or a single seed would make it a fleet or one run.
"""

import argparse

from cema_cli.config import RunConfig
from cema_cli.run.study import Study, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description="cema study from Python")
    parser.add_argument("--samples", type=int, default=512, help="test samples per domain")
    parser.add_argument("--out", default="cema-runs/python-study", help="the study's folder")
    args = parser.parse_args()

    config = RunConfig(methods=("source", "bn", "tent"), corruptions=("gaussian_noise", "contrast"), samples=args.samples)
    study = Study.of(config, seeds=(0, 1, 2), executor="serial")  # "process" runs the cells side by side
    result = run_study(study, args.out)  # result.kind: "cells"; the rows are also in OUT/results.csv
    print(f"{result.kind}: {result.done_before} cells already done, {result.ran} run, into {result.out}")
    means = result.rows.groupby(["method", "seed"], sort=False)["accuracy"].mean().unstack("seed")
    print((100 * means).round(2))  # accuracy % per method (rows) and seed (columns), mean over the domains


if __name__ == "__main__":
    main()
