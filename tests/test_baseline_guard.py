"""The project's own CI guard: the committed accuracy baseline of every method on the embedded
default, re-run through `cema check`. A change that makes any method worse on any domain by more
than 0.5 points fails the build.

When a method is added, or a change in accuracy is intended (say why in the PR), regenerate on CPU:

    python benchmarks/make_baseline.py

(equivalently: cema compare --methods all --corruption gaussian_noise,contrast --severity 5
 --samples 256 --seed 0 --device cpu --option eata.fisher_samples=500 --option cotta.augmentations=8 --out /tmp/baseline;
 cp /tmp/baseline/results.csv
 tests/baselines/embedded.csv)
"""

from __future__ import annotations

from pathlib import Path

from cema_cli.results.schema import read_results
from cema_cli.strategies import STRATEGIES

BASELINE = Path(__file__).parent / "baselines" / "embedded.csv"


def test_the_baseline_covers_every_registered_method():
    methods = list(dict.fromkeys(read_results(BASELINE)["method"]))
    missing = sorted(set(STRATEGIES.names()) - set(methods))
    assert not missing, f"no baseline for {', '.join(missing)}: run python benchmarks/make_baseline.py"


def test_no_method_got_worse_than_the_baseline(cli, tmp_path):
    result = cli("check", "--baseline", str(BASELINE), "--tolerance", "0.5", "--device", "cpu", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"check passed: {len(read_results(BASELINE))} rows" in " ".join(result.output.split())
