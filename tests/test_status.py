"""Statuses that mean something (issue 22, item 3): a row far below the no-learning reference of
its own stream, or near chance while that reference is not, is ``degraded`` (exit 4), with the
numbers it was compared with in its status and in the ``reference_*`` columns; and CoTTA's
gradual stream mixes the classes on a dataset stored sorted by class."""

from __future__ import annotations

import pandas as pd
import pytest

from cema_cli.results.health import degraded_status, references_for


def flat(text: str) -> str:
    return " ".join(text.split())


# --- the rule on hand-checkable numbers ---------------------------------------------------------

def test_far_below_the_reference_is_degraded_with_the_numbers_compared():
    # issue 22: continual cema on snow, 12.5% with bn at 66.2% on the same stream
    assert degraded_status(0.125, ("bn", 0.662), 0.10) == "degraded: 12.5% is 53.7 points below bn (66.2%) on the same stream"
    assert degraded_status(0.562, ("bn", 0.662), 0.10).startswith("degraded: 56.2% is 10.0 points below")  # exactly 10 points
    assert degraded_status(0.563, ("bn", 0.662), 0.10) == "ok"
    assert degraded_status(0.70, ("bn", 0.662), 0.10) == "ok"  # better than the reference


def test_near_chance_is_degraded_only_when_the_reference_is_clearly_above_it():
    assert degraded_status(0.13, ("bn", 0.19), 0.10) == ("degraded: 13.0% is near chance (10.0%) and 6.0 points below bn "
                                                          "(19.0%) on the same stream")
    assert degraded_status(0.13, ("bn", 0.17), 0.10) == "ok"  # 4 points below: within noise of a weak reference
    assert degraded_status(0.10, ("source", 0.12), 0.10) == "ok"  # the domain is lost for the reference too
    assert degraded_status(0.0, ("bn", 0.10), 0.10).startswith("degraded: 0.0% is 10.0 points below")  # below chance


def test_source_is_never_held_against_anything_and_bn_only_against_source():
    assert references_for("source") == () and references_for("bn") == ("source",) and references_for("cema") == ("source", "bn")
    assert degraded_status(0.10, None, 0.10) == "ok"


# --- end to end ---------------------------------------------------------------------------------

def run(cli, tmp_path, *args):
    result = cli("compare", *args, "--out", str(tmp_path / "run"))
    return result, pd.read_csv(tmp_path / "run" / "results.csv")


def test_a_degraded_row_is_shown_and_exits_4(cli, tmp_path):
    """LAME keeps the source model's statistics: on gaussian_noise-5 it stays at the source model's
    10%, where BatchNorm alone gives 94%: a measurement, flagged."""
    result, rows = run(cli, tmp_path, "--methods", "source,bn,lame", "--corruption", "gaussian_noise", "--samples", "128")
    by = rows.set_index("method")
    assert result.exit_code == 4, result.output
    assert list(by["status"][["source", "bn"]]) == ["ok", "ok"]
    lame = by.loc["lame"]
    assert (lame["reference_method"], lame["reference_accuracy"]) == ("bn", by.loc["bn", "accuracy"])
    assert pd.isna(by.loc["source", "reference_method"]) and by.loc["bn", "reference_method"] == "source"
    drop = 100 * (by.loc["bn", "accuracy"] - lame["accuracy"])
    assert lame["status"] == f"degraded: {100 * lame['accuracy']:.1f}% is {drop:.1f} points below bn ({100 * by.loc['bn', 'accuracy']:.1f}%) on the same stream"
    text = flat(result.output)
    assert "degraded" in text.split("cema compare")[1].split("acc:")[0]  # the table's status column
    assert f"error: 1 result(s) are degraded: lame gaussian_noise-5: {lame['status']}" in text


def test_the_reference_is_played_on_the_same_stream_and_changes_no_number(cli, tmp_path):
    """The reference pass reuses the run's stream (its accuracy is bn's row) and leaves the random
    state alone: tent's row is the same with and without bn in the run."""
    _, both = run(cli, tmp_path, "--methods", "bn,tent", "--corruption", "contrast", "--samples", "128")
    _, alone = run(cli, tmp_path / "b", "--methods", "tent", "--corruption", "contrast", "--samples", "128")
    tent = both[both["method"] == "tent"].iloc[0]
    assert tent["reference_accuracy"] == both[both["method"] == "bn"]["accuracy"].iloc[0]
    assert (tent["correct"], tent["uploads"]) == (alone["correct"].iloc[0], alone["uploads"].iloc[0])


def test_the_issues_continual_stream_holds_every_row_to_bn_on_the_same_stream(cli, tmp_path):
    """Issue 22's first stream (continual, 512 samples): cema on snow was 12.5% and "ok" beside bn
    at 66.2%. Whatever cema scores, each of its rows is held against bn's row of the same
    domain, and its status follows the rule from those two numbers."""
    result, rows = run(cli, tmp_path, "--methods", "bn,cema", "-c", "gaussian_noise,snow,contrast", "--protocol", "continual",
                       "--samples", "512")
    bn = rows[rows["method"] == "bn"].set_index("corruption")["accuracy"]
    cema = rows[rows["method"] == "cema"].set_index("corruption")
    assert (cema["reference_method"] == "bn").all() and (cema["reference_accuracy"] == bn[cema.index]).all()
    expected = [degraded_status(a, ("bn", r), 0.1) for a, r in zip(cema["accuracy"], cema["reference_accuracy"])]
    assert list(cema["status"]) == expected  # the labels are balanced over 512 digits: chance 10%
    degraded = [s for s in cema["status"] if s.startswith("degraded")]
    assert result.exit_code == (4 if degraded else 0), result.output
    if cema.loc["snow", "accuracy"] < 0.2:  # the collapse the issue saw (issue 23 investigates why)
        assert cema.loc["snow", "status"].startswith("degraded: ") and "below bn" in cema.loc["snow", "status"]


def test_the_cotta_gradual_stream_on_the_digits_is_class_mixed(cli, tmp_path):
    """Issue 22's second stream: `--gradual cotta` played the digits class-sorted (file order of a
    class-sorted store: bn 29.7% against 93.8% with --gradual md). Now each segment plays one
    fixed class-mixed order, which at seed 0 is md's own order: bn (stateless across segments)
    scores exactly the same on every (corruption, severity) both schedules visit."""
    common = ["--methods", "bn", "-c", "gaussian_noise,snow", "--protocol", "gradual", "--samples", "256"]
    _, cotta = run(cli, tmp_path, *common, "--gradual", "cotta")
    _, md = run(cli, tmp_path / "md", *common, "--gradual", "md")
    assert (cotta["segment_order"] == "class-mixed").all() and md["segment_order"].isna().all()
    key = ["corruption", "severity"]
    merged = cotta.drop_duplicates(key).merge(md.drop_duplicates(key), on=key, suffixes=("_cotta", "_md"))
    assert len(merged) == 10 and (merged["accuracy_cotta"] == merged["accuracy_md"]).all()
    assert cotta["accuracy"].min() > 0.5  # class-sorted batches gave bn 20-27% here


@pytest.mark.parametrize("status", ["collapsed: 91% of predictions in 1 class from batch 2 (labels: 13%)", "ok"])
def test_a_degraded_row_does_not_hide_an_invalid_one(status):
    """diverged/collapsed rows keep their verdict (exit 3); degraded only applies to valid streams."""
    from cema_cli.errors import Degraded, Diverged
    from cema_cli.results.health import check_degraded, check_status

    rows = [{"method": "tent", "corruption": "snow", "severity": 5, "status": status},
            {"method": "lame", "corruption": "snow", "severity": 5, "status": "degraded: 10.0% is 50.0 points below bn (60.0%)"}]
    if status == "ok":
        check_status(rows)
        with pytest.raises(Degraded, match="1 result"):
            check_degraded(rows)
    else:
        with pytest.raises(Diverged, match="tent snow-5: collapsed"):
            check_status(rows)
