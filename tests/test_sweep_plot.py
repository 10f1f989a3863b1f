"""Budget sweeps: one set of rows per budget point, the Pareto marks, and a real PNG plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cema_cli.results.report import pareto_front, sweep_frame


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


# --- every run shape plots (issue 15): inspect the figure, not only the file ---------------------

GOLDEN = Path(__file__).parent / "golden" / "inputs"


def tradeoff_lines(fig) -> dict[str, list[tuple[float, float]]]:
    """method -> (x, y) points of the first panel (accuracy vs uploads)."""
    return {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in fig.axes[0].get_lines()}


def test_several_methods_one_budget_plot_one_point_each(cli, tmp_path):
    from cema_cli.results.plot import results_figure

    fig = results_figure(GOLDEN / "compare-run" / "results.csv")  # source, bn x 2 domains, no batches.csv
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "uplink (MB, all domains)"
    lines = tradeoff_lines(fig)
    assert set(lines) == {"source", "bn"} and all(len(points) == 1 for points in lines.values())
    frame = pd.read_csv(GOLDEN / "compare-run" / "results.csv")
    assert lines["bn"][0][1] == pytest.approx(100 * frame[frame["method"] == "bn"]["accuracy"].mean())
    result = cli("plot", str(GOLDEN / "compare-run" / "results.csv"), "--output", str(tmp_path / "p.png"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_method_plots_one_line():
    from cema_cli.results.plot import results_figure

    fig = results_figure(GOLDEN / "bench-run" / "results.csv")
    assert tradeoff_lines(fig) == {"bn": [(0.0, pytest.approx(93.75))]}


def test_a_sweep_plots_a_point_per_budget_and_the_stream(sweep):
    from cema_cli.results.plot import results_figure

    out, _ = sweep
    fig = results_figure(out / "results.csv")
    assert [ax.get_xlabel() for ax in fig.axes] == ["uploads delivered to the cloud (samples, all domains)",
                                                   "uplink (MB, all domains)", "cloud compute (counted GFLOPs, all domains)",
                                                   "edge batch (domains in run order)"]
    lines = tradeoff_lines(fig)
    assert set(lines) == {"tent", "cema"} and all(len(points) == 3 for points in lines.values())
    assert min(x for x, _ in lines["tent"]) == 0  # the 0-byte budget delivers nothing
    compute = {line.get_label(): list(line.get_xdata()) for line in fig.axes[2].get_lines()}
    assert min(compute["tent"]) == 0 < max(compute["tent"])  # nothing delivered, nothing computed in the cloud
    assert {line.get_label() for line in fig.axes[3].get_lines()} == {"tent", "cema"}
