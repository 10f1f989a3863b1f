"""`cema check` (baseline vs results, per method and domain) and `--min-accuracy` (a floor).

Exit codes: 0 within the tolerance or better, 1 on a regression, 2 on unusable input, 3 when a new
result is not valid (diverged or collapsed). A multi-seed baseline can be re-run as a sweep.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

RUN = Path(__file__).parent / "golden" / "inputs" / "compare-run" / "results.csv"  # source,bn x 2 domains


def variant(tmp_path: Path, change, name: str = "baseline.csv") -> str:
    path = tmp_path / name
    change(pd.read_csv(RUN)).to_csv(path, index=False)
    return str(path)


def shift_accuracy(method: str, corruption: str, points: float):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        rows = (frame["method"] == method) & (frame["corruption"] == corruption)
        frame.loc[rows, "accuracy"] += points / 100
        return frame

    return change


def flat(output: str) -> str:
    return " ".join(output.split())


def test_results_equal_to_the_baseline_pass(cli):
    result = cli("check", "--baseline", str(RUN), "--results", str(RUN))
    assert result.exit_code == 0, result.output
    assert "check passed: 4 rows against" in flat(result.output)
    assert "rule: each row's new accuracy >= its baseline's - 0.5 points; worst difference +0.00 points" in flat(result.output)


def test_one_point_worse_fails_and_names_the_row(cli, tmp_path):
    baseline = variant(tmp_path, shift_accuracy("bn", "contrast", +1.0))  # the results are 1 point below it
    result = cli("check", "--baseline", baseline, "--results", str(RUN), "--tolerance", "0.5")
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "accuracy regressed by more than 0.5 points: bn contrast-5" in text
    assert "(-1.00)" in text and "REGRESSED" in text
    assert text.split("points:")[1].count("->") == 1  # only the failing row is named


def test_a_drop_within_the_tolerance_passes_and_a_tighter_tolerance_fails(cli, tmp_path):
    baseline = variant(tmp_path, shift_accuracy("source", "gaussian_noise", +0.4))
    assert cli("check", "--baseline", baseline, "--results", str(RUN), "--tolerance", "0.5").exit_code == 0
    assert cli("check", "--baseline", baseline, "--results", str(RUN), "--tolerance", "0.3").exit_code == 1


def test_better_results_pass_and_say_so(cli, tmp_path):
    baseline = variant(tmp_path, shift_accuracy("bn", "gaussian_noise", -2.0))
    result = cli("check", "--baseline", baseline, "--results", str(RUN))
    assert result.exit_code == 0 and "better" in result.output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.assign(dataset="cifar10-c"), "dataset is 'mnist' in the results and 'cifar10-c' in the baseline"),
        (lambda f: f.assign(seed=1), "seed is 0 in the results and 1 in the baseline"),
        (lambda f: f.assign(samples=256), "samples is 128 in the results and 256 in the baseline"),
        (lambda f: f.drop(columns=["accuracy", "channel"]), "lacks the column(s) accuracy, channel"),
        (lambda f: f.assign(schema_version=0), "has schema version 0; this cema reads version 1"),
        (lambda f: f[["method", "corruption", "accuracy"]], "no schema_version column"),
        (lambda f: pd.concat([f, f[f["corruption"] == "contrast"].assign(corruption="fog")]), "the results have no row for source fog-5, bn fog-5"),
    ],
    ids=["other-dataset", "other-seed", "other-samples", "missing-columns", "foreign-version", "foreign-file", "missing-rows"],
)
def test_unusable_input_exits_2_and_says_why(cli, tmp_path, change, expected):
    result = cli("check", "--baseline", variant(tmp_path, change), "--results", str(RUN))
    assert result.exit_code == 2, result.output
    assert expected in flat(result.output)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.assign(seed=[0, 0, 1, 0]), "cannot reproduce the baseline: its rows disagree on seed (0, 1)"),
        (lambda f: f.assign(dataset=["mnist", "mnist", "mnist", "svhn"]), "its rows disagree on dataset ('mnist', 'svhn')"),
        (lambda f: f.iloc[:3], "its 3 rows are not every combination of 2 method(s) x 2 corruption(s)"),
        (lambda f: f.assign(dataset="svhn"), "unknown dataset 'svhn'"),
        (lambda f: f.assign(channel='{"uplink_encoding": "uint8", "warp_drive": 1}'), "channel settings do not fit"),
        (lambda f: f.assign(method_config="not json"), "its method_config column holds 'not json'"),
    ],
    ids=["seeds-disagree", "datasets-disagree", "partial-grid", "unknown-dataset", "foreign-channel", "bad-method-config"],
)
def test_a_baseline_that_cannot_be_reproduced_exits_2(cli, tmp_path, change, expected):
    result = cli("check", "--baseline", variant(tmp_path, change), "--out", str(tmp_path / "rerun"))
    assert result.exit_code == 2, result.output
    assert expected in flat(result.output)
    assert not (tmp_path / "rerun").exists()  # refused before running anything


def test_check_reruns_the_baseline_configuration(cli, tmp_path):
    base = tmp_path / "base"
    assert cli("bench", "--method", "bn", "-c", "gaussian_noise", "--samples", "128", "--seed", "3", "--out", str(base)).exit_code == 0
    result = cli("check", "--baseline", str(base / "results.csv"), "--out", str(tmp_path / "rerun"))
    assert result.exit_code == 0, result.output
    rerun = pd.read_csv(tmp_path / "rerun" / "results.csv")
    assert rerun[["method", "corruption", "samples", "seed", "correct"]].equals(
        pd.read_csv(base / "results.csv")[["method", "corruption", "samples", "seed", "correct"]])


def test_min_accuracy_is_a_floor_on_each_method(cli, tmp_path):
    args = ("compare", "--methods", "source,bn", "-c", "gaussian_noise", "--samples", "128")
    result = cli(*args, "--min-accuracy", "50", "--out", str(tmp_path / "a"))
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "mean accuracy below --min-accuracy 50%: source" in text and "bn " not in text.split("below")[1]
    assert len(pd.read_csv(tmp_path / "a" / "results.csv")) == 2  # the results are still written
    assert cli("bench", "--method", "bn", "-c", "gaussian_noise", "--samples", "128", "--min-accuracy", "50",
               "--out", str(tmp_path / "b")).exit_code == 0


def test_min_accuracy_must_be_a_percentage(cli, tmp_path):
    result = cli("bench", "--min-accuracy", "150", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert not (tmp_path / "results.csv").exists()


# --- re-running a multi-seed baseline's grid (issue 11) and an invalid re-run (issue 15) ----------

SEED_GRID = ["--methods", "bn", "--corruption", "gaussian_noise,contrast", "--threads", "1"]


@pytest.fixture(scope="module")
def seed_baseline(tmp_path_factory) -> Path:
    """bn on two domains, seeds 0-2, all 2,500 samples: a multi-seed baseline as `compare --seeds` writes it."""
    from typer.testing import CliRunner

    from cema_cli.cli import app

    out = tmp_path_factory.mktemp("check") / "base"
    result = CliRunner().invoke(app, ["compare", *SEED_GRID, "--executor", "serial", "--seeds", "0,1,2", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "results.csv"


def test_rerunning_a_multi_seed_baseline_on_other_seeds_passes(cli, seed_baseline, tmp_path):
    result = cli("check", "--baseline", str(seed_baseline), "--seeds", "3,4,5", "--executor", "serial", "--threads", "1",
                 "--out", str(tmp_path / "rerun"))
    assert result.exit_code == 0, result.output
    rerun = pd.read_csv(tmp_path / "rerun" / "results.csv")
    assert sorted(set(rerun["seed"])) == [3, 4, 5] and len(rerun) == 6  # the baseline's grid, on the other seeds
    assert set(zip(rerun["method"], rerun["corruption"], rerun["samples"])) == {("bn", "gaussian_noise", 2500), ("bn", "contrast", 2500)}
    assert "check passed: 2 rows against" in flat(result.output)
    assert "rule: other seeds (3,4,5 against the baseline's 0,1,2): each new mean over seeds >= the baseline's lower 95% bound" \
        in flat(result.output)


def test_rerunning_a_multi_seed_baseline_catches_a_real_two_point_drop(cli, seed_baseline, tmp_path):
    """The baseline says gaussian_noise was 2 points better than the code under test gives on the
    same seeds. (bn's 95% interval over 3 seeds is +-0.5 points there; on contrast, at 38%
    accuracy, it is +-1.6 points, so 3 seeds could not tell a 2-point drop there from noise.)"""
    better = pd.read_csv(seed_baseline)
    better.loc[better["corruption"] == "gaussian_noise", "accuracy"] += 0.02
    better.to_csv(tmp_path / "better.csv", index=False)
    result = cli("check", "--baseline", str(tmp_path / "better.csv"), "--executor", "serial", "--out", str(tmp_path / "rerun"))
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "accuracy regressed by more than 0.5 points: bn gaussian_noise-5" in text and "contrast" not in text.split("regressed")[-1]
    rerun = pd.read_csv(tmp_path / "rerun" / "results.csv")  # a real re-run of the baseline's seeds: the same counts
    key = ["corruption", "seed"]
    assert rerun.sort_values(key)["correct"].tolist() == pd.read_csv(seed_baseline).sort_values(key)["correct"].tolist()


def test_a_same_seed_drop_inside_the_seed_interval_is_still_a_regression(cli, seed_baseline, tmp_path):
    """Issue 22: `cema check` of a multi-seed baseline printed "check passed ... within 0.5 points"
    beside differences of -1.4 to -1.6 points. On contrast bn's 95% interval over 3 seeds is
    +-1.6 points, but a re-run of the same seeds is paired: a 1.5-point drop is a regression,
    and the output states the rule and the numbers it compared."""
    better = pd.read_csv(seed_baseline)
    better.loc[better["corruption"] == "contrast", "accuracy"] += 0.015
    better.to_csv(tmp_path / "better.csv", index=False)
    result = cli("check", "--baseline", str(tmp_path / "better.csv"), "--executor", "serial", "--out", str(tmp_path / "rerun"))
    text = flat(result.output)
    assert result.exit_code == 1, result.output
    assert "accuracy regressed by more than 0.5 points: bn contrast-5" in text and "(-1.50)" in text
    assert "rule: the baseline's own seeds re-run (seeds 0,1,2), so paired" in text
    assert "worst difference -1.50 points (bn contrast-5)" in text and "check passed" not in text


@pytest.mark.parametrize(("args", "expected"), [
    (["--seeds", "0"], "--seeds 0 is not a positive count"),
    (["--executor", "threads"], "unknown executor 'threads'"),
    (["--threads", "0"], "--threads 0 is not a positive count"),
    (["--seeds", "3", "--results", str(RUN)], "--seeds only apply to a re-run of the baseline; drop them with --results"),
])
def test_bad_rerun_flags_exit_2_before_running(cli, seed_baseline, tmp_path, args, expected):
    result = cli("check", "--baseline", str(seed_baseline), "--out", str(tmp_path / "rerun"), *args)
    assert result.exit_code == 2 and expected in flat(result.output)
    assert not (tmp_path / "rerun").exists()


def test_a_collapsed_rerun_exits_3_and_names_the_row(cli, tmp_path):
    base = tmp_path / "base"
    assert cli("bench", "--method", "tent", "--samples", "256", "--out", str(base)).exit_code == 0
    frame = pd.read_csv(base / "results.csv")
    settings = json.loads(frame["method_config"][0])
    frame["method_config"] = json.dumps({**settings, "lr": 1e6}, sort_keys=True)  # the re-run's Tent collapses
    frame.to_csv(tmp_path / "baseline.csv", index=False)
    result = cli("check", "--baseline", str(tmp_path / "baseline.csv"), "--out", str(tmp_path / "rerun"))
    assert result.exit_code == 3, result.output
    text = flat(result.output)
    assert "1 result(s) of the re-run are not valid" in text and "tent gaussian_noise-5 seed 0: collapsed:" in text
    assert pd.read_csv(tmp_path / "rerun" / "results.csv")["status"][0].startswith("collapsed:")  # the rows are kept


def test_invalid_results_in_file_mode_exit_3(cli, tmp_path):
    invalid = variant(tmp_path, lambda f: f.assign(status=["ok", "diverged: non-finite logits at batch 2", "ok", "ok"]), "new.csv")
    result = cli("check", "--baseline", str(RUN), "--results", invalid)
    assert result.exit_code == 3 and "1 result(s) of " + invalid + " are not valid" in flat(result.output)


def test_tables_show_the_status_of_a_result_that_is_not_valid(cli, tmp_path):
    collapsed = "collapsed: 97% of predictions in 1 class from batch 2 (labels: 10%)"
    one = variant(tmp_path, lambda f: f.assign(status=["ok", "ok", "ok", collapsed]), "one.csv")  # bn contrast-5
    text = flat(cli("report", one).output)
    assert "status" in text and f"status not ok: bn contrast-5: {collapsed}" in text
    assert "bn" in text.split("collapsed")[0]  # the compare table's bn line says collapsed
    seeds = pd.concat([pd.read_csv(one), pd.read_csv(one).assign(seed=1, status="ok")])
    seeds.to_csv(tmp_path / "seeds.csv", index=False)
    text = flat(cli("report", str(tmp_path / "seeds.csv")).output)
    assert "accuracy over seeds" in text and "bn contrast-5 seed 0: collapsed" in text
    assert "status" in text.split("accuracy % per domain")[0]  # the seed table has the column
    assert "status" not in flat(cli("report", str(RUN)).output)  # only when some result is not valid
