"""Reporting as the field reports (issue 21, items 5-6 and the subset): --metric accuracy|error
in tables, report, plot and check; top-5 accuracy from 100 classes up; published numbers
([[expected]]) beside measured ones; RobustBench's 5,000-image list format for --subset."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from cema_cli.errors import CemaError
from cema_cli.results.expected import MEAN, Expected, comparison_frame, parse_expected
from cema_cli.run.engine import Tally, top5_hits

DOMAINS = ("gaussian_noise", "snow")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A small embedded compare (two methods, two domains) written to a run folder."""
    from typer.testing import CliRunner

    from cema_cli.cli import app

    out = tmp_path_factory.mktemp("metric") / "run"
    result = CliRunner().invoke(app, ["compare", "--methods", "source,bn", "-c", ",".join(DOMAINS), "--samples", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def accuracy_percent(out: Path, method: str) -> float:
    rows = pd.read_csv(out / "results.csv")
    return 100 * rows[rows["method"] == method]["accuracy"].mean()


def test_report_shows_error_as_100_minus_accuracy(cli, run):
    error = cli("report", str(run), "--metric", "error", "--format", "markdown")
    accuracy = cli("report", str(run), "--format", "markdown")
    assert error.exit_code == 0 and "err %" in error.output and "error % per domain" in error.output
    assert "acc %" in accuracy.output and "err %" not in accuracy.output
    bn_error = next(line for line in error.output.splitlines() if line.startswith("| bn |"))
    assert f"| {100 - accuracy_percent(run, 'bn'):.2f} |" in bn_error


def test_check_in_error_terms_flips_the_difference_not_the_verdict(cli, run, tmp_path):
    rows = pd.read_csv(run / "results.csv")
    worse = rows.assign(accuracy=rows["accuracy"] - 0.02, correct=(rows["correct"] - 0.02 * rows["samples"]).round().astype(int))
    worse.to_csv(tmp_path / "worse.csv", index=False)
    result = cli("check", "--baseline", str(run / "results.csv"), "--results", str(tmp_path / "worse.csv"), "--metric", "error")
    assert result.exit_code == 1 and "baseline err %" in result.output
    assert "+2.00" in result.output and "REGRESSED" in result.output  # the error rose by 2 points


def test_plot_draws_error_when_asked(run):
    from cema_cli.results.plot import results_figure

    figure = results_figure(run / "results.csv", "error")
    axis = figure.axes[0]
    assert axis.get_ylabel() == "mean error over domains (%)"
    plotted = {line.get_label(): line.get_ydata()[0] for line in axis.get_lines()}
    assert plotted["bn"] == pytest.approx(100 - accuracy_percent(run, "bn"))


@pytest.mark.parametrize("command", [["report", "RUN"], ["plot", "RUN"], ["compare", "--methods", "source"]])
def test_an_unknown_metric_is_refused_by_name(cli, run, command):
    result = cli(*[str(run) if word == "RUN" else word for word in command], "--metric", "top1")
    assert result.exit_code == 2 and "unknown metric 'top1'" in result.output


# --- top-5 --------------------------------------------------------------------------------------

def test_top5_counts_labels_among_the_five_highest_logits_from_100_classes_up():
    logits = torch.zeros(3, 100)
    logits[0, 7] = 9.0  # label 7 first
    logits[1, :6] = torch.arange(6, 0, -1).float()  # label 4 fifth, label 5 sixth
    labels = torch.tensor([7, 4, 5])
    assert top5_hits(logits, labels).tolist() == [True, True, False]
    assert top5_hits(torch.zeros(3, 99), labels) is None  # fewer than 100 classes: no top-5
    tally = Tally()
    tally.count(torch.tensor([True, False, False]), 1.0, top5=top5_hits(logits, labels))
    assert (tally.accuracy, tally.top5_accuracy) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert Tally().top5_accuracy is None


def test_rows_of_a_10_class_dataset_have_no_top5(run):
    assert pd.read_csv(run / "results.csv")["top5_accuracy"].isna().all()


# --- published numbers --------------------------------------------------------------------------

def table(**keys):
    return {"source": "a paper", "metric": "error", **keys}


def test_expected_tables_read_means_and_domains():
    items = parse_expected([table(mean={"tent": 57.4}, domains={"tent": {"snow": 52.9}})], Path("x.toml"))
    assert items == [Expected("tent", MEAN, 5, "error", 57.4, "a paper"), Expected("tent", "snow", 5, "error", 52.9, "a paper")]


@pytest.mark.parametrize(("bad", "message"), [
    (table(metric="top1", mean={"tent": 1.0}), "metric 'top1' is not one of error, accuracy"),
    (table(mean={"tnet": 1.0}), "unknown method 'tnet'"),
    (table(domains={"tent": {"snowy": 1.0}}), "'snowy' is not a corruption name"),
    (table(metric="uploads", mean={"cema": 10}), "out_of .* goes with metric uploads"),
    (table(mean={"tent": "57"}), "tent mean = '57' is not a number"),
    (table(mean={"tent": 1.0}, severity=6), "severity 6 is not 1-5"),
    ({"metric": "error", "mean": {"tent": 1.0}}, "source must name where the numbers were published"),
    (table(means={"tent": 1.0}), "unknown key\\(s\\) means"),
])
def test_bad_expected_tables_are_refused_by_name(bad, message):
    with pytest.raises(CemaError, match=message):
        parse_expected([bad], Path("x.toml"))


def test_a_run_configuration_with_a_bad_expected_table_is_refused_before_it_runs(cli, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[methods.source]\n[[expected]]\nsource = "x"\nmetric = "error"\nmean = { sorce = 1.0 }\n')
    result = cli("compare", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "unknown method 'sorce'" in result.output and not (tmp_path / "run").exists()


def rows(**columns) -> pd.DataFrame:
    base = {"method": ["tent", "tent"], "corruption": list(DOMAINS), "severity": [5, 5], "samples": [100, 100]}
    return pd.DataFrame({**base, **columns})


def test_comparison_measures_error_uploads_and_top5_as_published():
    frame = rows(accuracy=[0.40, 0.60], uploads=[20, 30], top5_accuracy=[0.7, 0.9])
    expected = [Expected("tent", MEAN, 5, "error", 45.0, "s"), Expected("tent", "snow", 5, "accuracy", 61.0, "s"),
                Expected("tent", MEAN, 5, "uploads", 12_500, "s", out_of=50_000), Expected("tent", MEAN, 5, "top5_error", 25.0, "s"),
                Expected("tent", "fog", 5, "error", 1.0, "s"), Expected("tent", MEAN, 3, "error", 1.0, "s")]  # not run: left out
    lines = comparison_frame(frame, expected).set_index(["domain", "metric"])
    assert len(lines) == 4
    assert lines.loc[("mean of 2, sev 5", "error"), ["measured", "published", "difference"]].tolist() == pytest.approx([50.0, 45.0, 5.0])
    assert lines.loc[("snow-5", "accuracy"), "difference"] == pytest.approx(-1.0)
    assert lines.loc[("mean of 2, sev 5", "uploads"), ["measured", "published"]].tolist() == pytest.approx([25.0, 25.0])
    assert lines.loc[("mean of 2, sev 5", "top5_error"), "measured"] == pytest.approx(20.0)


def test_top5_is_not_measured_where_the_rows_have_none():
    frame = rows(accuracy=[0.4, 0.6], uploads=[0, 0], top5_accuracy=[math.nan, math.nan])
    line = comparison_frame(frame, [Expected("tent", MEAN, 5, "top5_accuracy", 80.0, "s")]).iloc[0]
    assert math.isnan(line["measured"]) and math.isnan(line["difference"])


def test_report_expected_needs_published_numbers_for_what_ran(cli, run, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[[expected]]\nsource = "EATA README"\nmetric = "error"\nmean = { tent = 57.4 }\n')
    result = cli("report", str(run), "--expected", str(config))
    assert result.exit_code == 2 and "hold none of the methods and domains" in result.output
    config.write_text('[[expected]]\nsource = "EATA README"\nmetric = "error"\nmean = { bn = 66.5 }\n')
    lines = pd.read_csv(io.StringIO(cli("report", str(run), "--expected", str(config), "--format", "csv").output))
    assert lines["measured"].tolist() == pytest.approx([100 - accuracy_percent(run, "bn")])
    config.write_text('dataset = "mnist"\n')
    assert "has no [[expected]] table" in cli("report", str(run), "--expected", str(config)).output


# --- RobustBench's 5,000-image list -------------------------------------------------------------

def test_a_subset_file_in_robustbenchs_format_is_read_in_its_order(tmp_path):
    from cema_cli.data.trees import choose_subset, read_subset_file

    listing = tmp_path / "imagenet_test_image_ids.txt"
    listing.write_text("n09468604/ILSVRC2012_val_00015253.JPEG\nn01440764/ILSVRC2012_val_00000293.JPEG")  # no final newline
    assert read_subset_file(listing) == ["n09468604/ILSVRC2012_val_00015253.JPEG", "n01440764/ILSVRC2012_val_00000293.JPEG"]
    files = ["n01440764/ILSVRC2012_val_00000293.JPEG", "n01440764/ILSVRC2012_val_00000001.JPEG", "n09468604/ILSVRC2012_val_00015253.JPEG"]
    assert choose_subset(files, str(listing), 0, tmp_path) == sorted([files[0], files[2]])
    with pytest.raises(CemaError, match="RobustBench's 5,000-image imagenet_test_image_ids.txt"):
        choose_subset(files, str(tmp_path / "missing.txt"), 0, tmp_path)
