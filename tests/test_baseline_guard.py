"""The project's own CI guard: the committed accuracy baseline of every method on the embedded
default, re-run through `cema check`. A change that makes any method worse on any domain by more
than 0.5 points fails the build.

When a method is added, or a change in accuracy is intended (say why in the PR), regenerate on CPU:

    python benchmarks/make_baseline.py

(equivalently: cema compare --methods all --corruption snow --severity 5
 --samples 1024 --seed 0 --device cpu --option eata.fisher_samples=500 --option cotta.augmentations=8 --out /tmp/baseline;
 cp /tmp/baseline/results.csv
 tests/baselines/embedded.csv)
"""

from __future__ import annotations

import sys
from pathlib import Path

from cema_cli.results.report import write_csv
from cema_cli.results.schema import read_results
from cema_cli.strategies import STRATEGIES, tent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from broken_tent_guard import entropy_ascent_step  # noqa: E402 - the deliberately broken Tent the script demonstrates

BASELINE = Path(__file__).parent / "baselines" / "embedded.csv"


def test_the_baseline_covers_every_registered_method():
    methods = list(dict.fromkeys(read_results(BASELINE)["method"]))
    missing = sorted(set(STRATEGIES.names()) - set(methods))
    assert not missing, f"no baseline for {', '.join(missing)}: run python benchmarks/make_baseline.py"


def test_no_method_got_worse_than_the_baseline(cli, tmp_path):
    result = cli("check", "--baseline", str(BASELINE), "--tolerance", "0.5", "--device", "cpu", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"check passed: {len(read_results(BASELINE))} rows" in " ".join(result.output.split())


def test_the_guard_catches_a_tent_that_climbs_the_entropy(cli, tmp_path, monkeypatch):
    """16 batches of snow are enough for a sign error in Tent to cost more than the tolerance
    (the old slice, 4 batches per domain, let it pass). Only Tent's rows are re-run: the real
    Tent passes them, the sign-flipped one fails."""
    rows = read_results(BASELINE)
    write_csv(rows[rows["method"] == "tent"], tmp_path / "tent.csv")

    def check(name):
        return cli("check", "--baseline", str(tmp_path / "tent.csv"), "--tolerance", "0.5", "--device", "cpu", "--out", str(tmp_path / name))

    real = check("real")
    assert real.exit_code == 0, real.output
    monkeypatch.setattr(tent, "entropy_step", entropy_ascent_step)
    broken = check("broken")
    assert broken.exit_code == 1, broken.output
    assert "REGRESSED" in broken.output and "tent" in broken.output
