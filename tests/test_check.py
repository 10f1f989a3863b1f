"""`cema check` (baseline vs results, per method and domain) and `--min-accuracy` (a floor).

Exit codes: 0 within the tolerance or better, 1 on a regression, 2 on unusable input.
"""

from __future__ import annotations

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
    assert "check passed: 4 rows within 0.5 points" in flat(result.output)


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
