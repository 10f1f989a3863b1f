"""Budget sweeps: one set of rows per budget point, the Pareto marks, and a real PNG plot."""

from __future__ import annotations

import pandas as pd
import pytest

from cema_cli.report import pareto_front, sweep_frame


def test_pareto_front_by_hand():
    accuracy = pd.Series([0.9, 0.8, 0.95, 0.8])
    cost = pd.Series([10, 5, 20, 6])
    assert pareto_front(accuracy, cost).tolist() == [True, True, True, False]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from typer.testing import CliRunner

    from cema_cli.cli import app

    out = tmp_path_factory.mktemp("sweep")
    result = CliRunner().invoke(app, ["compare", "--methods", "tent,cema", "--samples", "256",
                                      "--uplink-budget", "0,6kB,unlimited", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_sweep_runs_every_budget_point_and_respects_it(sweep):
    out, output = sweep
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 2 * 3
    per_budget = frame.groupby(frame["uplink_budget_bytes"].fillna(-1))["uplink_bytes"].max()
    assert per_budget[0.0] == 0
    assert per_budget[6000.0] <= 6000 * 4  # 4 batches of 64 at most 6 kB each
    zero = frame[frame["uplink_budget_bytes"] == 0]
    assert (zero["delivered_uploads"] == 0).all() and (zero["dropped_uploads"] == zero["uploads"]).all()
    assert "Pareto-best" in output


def test_sweep_frame_marks_one_pareto_method_at_zero_budget(sweep):
    out, _ = sweep
    summary = sweep_frame(pd.read_csv(out / "results.csv"))
    assert set(summary["budget"]) == {0.0, 6000.0, float("inf")}
    assert summary.groupby("budget")["pareto"].any().all()


def test_plot_writes_a_png(sweep, cli):
    out, _ = sweep
    result = cli("plot", str(out / "results.csv"), "--output", str(out / "plot.png"))
    assert result.exit_code == 0, result.output
    data = (out / "plot.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_plot_of_a_missing_file_is_one_clear_line(cli, tmp_path):
    result = cli("plot", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2 and "no such file" in result.output
