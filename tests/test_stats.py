"""Seed statistics on hand-checkable values (scipy is a test-only reference)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from cema_cli.results.stats import paired_difference, t_interval, t_quantile_975, wilson_interval
from cema_cli.results.tables import compare_seeds, paired_frame, summary_frame


@pytest.mark.parametrize("df", [1, 2, 3, 4, 10, 29, 30, 31, 35, 60, 120, 1000])
def test_t_quantile_matches_scipy(df):
    assert t_quantile_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-6)


def test_t_interval_by_hand():
    # mean 2, sample std 1, half-width t(2) / sqrt(3) = 4.302652730 / 1.7320508
    interval = t_interval([1.0, 2.0, 3.0])
    assert (interval.n, interval.mean, interval.std) == (3, 2.0, 1.0)
    assert interval.half_width == pytest.approx(2.484138, abs=1e-6)
    assert (interval.low, interval.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)


def test_one_value_has_no_t_interval():
    interval = t_interval([0.7])
    assert interval.mean == 0.7 and math.isnan(interval.std) and math.isnan(interval.low)


def test_wilson_interval_by_hand_and_against_the_formula_in_scipy():
    # 8 of 10: the textbook Wilson interval (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    result = scipy_stats.binomtest(93, 128).proportion_ci(0.95, method="wilson")
    assert wilson_interval(93, 128) == pytest.approx((result.low, result.high), abs=1e-9)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


def test_paired_difference_counts_wins_and_uses_the_t_interval_of_the_differences():
    paired = paired_difference([0.80, 0.82, 0.78], [0.79, 0.80, 0.79])
    diffs = [0.01, 0.02, -0.01]
    assert paired.wins == 2
    assert paired.difference.mean == pytest.approx(sum(diffs) / 3)
    assert paired.difference.half_width == pytest.approx(t_interval(diffs).half_width)


def rows(values: dict[tuple[str, str, int], float], samples: int = 1000) -> pd.DataFrame:
    """Result rows (method, corruption, seed) -> accuracy, at one channel point."""
    return pd.DataFrame([{"method": m, "corruption": c, "severity": 5, "seed": s, "accuracy": a, "correct": round(a * samples),
                          "samples": samples, "uplink_budget_bytes": None, "downlink_budget_bytes": None,
                          "edge_model": "e", "cloud_model": "c", "dataset": "mnist", "batch_size": 64, "protocol": "reset-each-shift",
                          "constants": "cifar", "channel": "{}", "method_config": "{}"} for (m, c, s), a in values.items()])


def test_aggregates_are_per_seed_means_first():
    # seed 0: 0.9 and 0.5, seed 1: 0.5 and 0.9 -> each seed's mean over domains is 0.7: std 0
    frame = rows({("bn", "snow", 0): 0.9, ("bn", "fog", 0): 0.5, ("bn", "snow", 1): 0.5, ("bn", "fog", 1): 0.9})
    summary = summary_frame(frame)
    mean_row = summary[summary["corruption"] == "mean"].iloc[0]
    assert (mean_row["n"], mean_row["mean"], mean_row["std"], mean_row["half_width"]) == (2, pytest.approx(0.7), 0.0, 0.0)
    snow = summary[summary["corruption"] == "snow"].iloc[0]
    assert snow["std"] == pytest.approx(math.sqrt(0.08))  # (0.9, 0.5): sample std


def test_a_single_run_gets_the_wilson_interval():
    summary = summary_frame(rows({("bn", "snow", 0): 0.8}, samples=10))
    snow = summary[summary["corruption"] == "snow"].iloc[0]
    assert (snow["ci_low"], snow["ci_high"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_paired_frame_against_a_reference():
    frame = rows({("tent", "snow", 0): 0.70, ("tent", "snow", 1): 0.72, ("cema", "snow", 0): 0.75, ("cema", "snow", 1): 0.71})
    paired = paired_frame(frame, "tent").iloc[0]
    assert paired["method"] == "cema" and paired["wins"] == 1 and paired["n"] == 2
    assert paired["mean_difference"] == pytest.approx(0.02)


def seeds(method_accuracy: dict[str, list[float]], first_seed: int = 0) -> pd.DataFrame:
    return rows({(m, "snow", first_seed + i): a for m, values in method_accuracy.items() for i, a in enumerate(values)})


def test_multi_seed_check_flags_a_mean_below_the_lower_bound_minus_the_tolerance():
    baseline = seeds({"bn": [0.80, 0.81, 0.82]})  # lower 95% bound: 0.81 - 0.02484 = 0.78516
    ok = compare_seeds(baseline, seeds({"bn": [0.785, 0.785, 0.785]}, 3), tolerance=0.5)
    assert list(ok["status"]) == ["ok"]
    regressed = compare_seeds(baseline, seeds({"bn": [0.779, 0.779, 0.779]}, 3), tolerance=0.5)
    assert list(regressed["status"]) == ["REGRESSED"]
    assert regressed["diff_points"].iloc[0] == pytest.approx(-3.1)


def test_multi_seed_check_refuses_another_setting():
    from cema_cli.errors import CemaError

    new = seeds({"bn": [0.8, 0.8, 0.8]}, 3).assign(batch_size=32)
    with pytest.raises(CemaError, match="batch_size is 32"):
        compare_seeds(seeds({"bn": [0.80, 0.81, 0.82]}), new, tolerance=0.5)
