"""Regenerate the project's accuracy baseline, tests/baselines/embedded.csv.

The test suite re-runs this configuration with ``cema check`` (tests/test_baseline_guard.py), so a
change that makes any method worse on the embedded default fails the build. Regenerate it, on
CPU, whenever a method is added or a change in accuracy is intended (and say why in the PR):

    python benchmarks/make_baseline.py

which is the same as

    cema compare --methods all --corruption gaussian_noise,contrast \
        --severity 5 --samples 256 --seed 0 --device cpu \
        --option eata.fisher_samples=500 --option cotta.augmentations=8 --out /tmp/baseline
    cp /tmp/baseline/results.csv tests/baselines/embedded.csv
"""

from __future__ import annotations

from pathlib import Path

from cema_cli.results import report
from cema_cli.run.api import run_benchmark
from cema_cli.config import RunConfig
from cema_cli.strategies import STRATEGIES

BASELINE = Path(__file__).resolve().parents[1] / "tests" / "baselines" / "embedded.csv"
CORRUPTIONS = ("gaussian_noise", "contrast")
SAMPLES = 256  # per domain: keeps the check in the test suite to seconds
# EATA's Fisher on 500 clean images (enough, per its authors) instead of 2,000: it is rebuilt per domain.
# CoTTA averages 8 augmentations instead of 32 here: the path is still exercised, at a quarter of its cost.
METHOD_OPTIONS = {"eata": {"fisher_samples": 500}, "cotta": {"augmentations": 8}}


def main() -> None:
    config = RunConfig(methods=tuple(STRATEGIES.names()), dataset="mnist", corruptions=CORRUPTIONS, severities=(5,),
                       samples=SAMPLES, seed=0, device="cpu",
                       method_options=METHOD_OPTIONS)
    frame = report.results_frame(run_benchmark(config))
    report.write_csv(frame, BASELINE)
    print(f"wrote {BASELINE}: {len(frame)} rows, methods {', '.join(config.methods)}")
    print(frame.groupby("method", sort=False)["accuracy"].mean().mul(100).round(2).to_string())


if __name__ == "__main__":
    main()
