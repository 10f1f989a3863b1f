"""`cema plot` right by construction for every run kind (issue 22, item 4): single run, several
methods, budget sweep, seeds, fleet and streams. Each test reads the figure's data back (the
artists' points, titles, legends and text boxes), not only the file."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from typer.testing import CliRunner

from cema_cli.cli import app
from cema_cli.results.plot import batch_accuracy, results_figure

matplotlib.use("Agg")


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One small real run of every kind, each in its own folder."""
    root = tmp_path_factory.mktemp("kinds")
    kinds = {
        "single": ["bench", "-m", "bn", "-c", "contrast", "--samples", "192"],
        "methods": ["compare", "--methods", "source,lame,bn", "-c", "gaussian_noise,contrast", "--samples", "128"],
        "budgets": ["compare", "--methods", "source,bn,tent", "-c", "contrast", "--samples", "128", "--uplink-budget", "0,6kB,12kB,unlimited"],
        "seeds": ["compare", "--methods", "bn", "-c", "contrast", "--samples", "128", "--seeds", "0,1", "--executor", "serial"],
        "fleet": ["bench", "-m", "bn", "--edges", "2", "-c", "gaussian_noise,contrast", "--samples", "128", "--no-independent"],
        "stream": ["compare", "--methods", "bn", "-c", "gaussian_noise", "--protocol", "gradual", "--samples", "64"],
    }
    for kind, args in kinds.items():
        result = CliRunner().invoke(app, [*args, "--threads", "1", "--out", str(root / kind)], catch_exceptions=False)
        assert result.exit_code in (0, 4), (kind, result.output)  # 4: lame is degraded on gaussian_noise
    return {kind: root / kind for kind in kinds}


def stream_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_title().startswith("accuracy along the stream")]


def method_lines(ax) -> dict[str, list[tuple[float, float]]]:
    return {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in ax.get_lines() if not line.get_label().startswith("_")}


def text_overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of non-empty texts drawn on the figure whose boxes overlap. Only the texts that the
    draw renders count: an axis keeps Tick objects (with stale positions) for ticks outside its
    view limits, which ``findobj`` returns but nothing draws."""
    from matplotlib.text import Text

    drawn = []
    draw = Text.draw

    def recording(text, renderer):
        drawn.append(text)
        return draw(text, renderer)

    Text.draw = recording
    try:
        fig.canvas.draw()
    finally:
        Text.draw = draw
    renderer = fig.canvas.get_renderer()
    texts = [t for t in dict.fromkeys(drawn) if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def test_a_single_run(runs):
    fig = results_figure(runs["single"] / "results.csv")
    assert fig._suptitle.get_text() == "mnist: mnist-edge edge, mnist-foundation cloud; seed 0"
    (ax,) = stream_axes(fig)
    batches = pd.read_csv(runs["single"] / "batches.csv")
    expected = batch_accuracy(batches).rolling(5, min_periods=1).mean().tolist()
    assert method_lines(ax)["bn"] == [(i, pytest.approx(v)) for i, v in enumerate(expected)]
    assert text_overlaps(fig) == []


def test_several_methods_with_the_same_numbers_stay_visible(runs):
    """source and lame score the same on every domain here: the later one is drawn on top,
    thinner and dashed, so both are seen."""
    fig = results_figure(runs["methods"] / "results.csv")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    source, lame = lines["source"], lines["lame"]
    assert list(source.get_ydata()) == list(lame.get_ydata())  # the same point
    assert source.get_linestyle() != lame.get_linestyle() and source.get_linewidth() > lame.get_linewidth()
    assert lame.get_zorder() > source.get_zorder()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["source", "lame", "bn"]
    assert text_overlaps(fig) == []


def test_a_budget_sweep_names_budgets_by_marker_and_no_label_overprints(runs):
    fig = results_figure(runs["budgets"] / "results.csv")
    budgets = fig.legends[1]
    assert budgets.get_title().get_text() == "uplink budget per batch"
    assert [t.get_text() for t in budgets.get_texts()] == ["0B", "6kB", "12kB", "unlimited"]
    markers = [h.get_marker() for h in budgets.legend_handles]
    assert len(set(markers)) == 4
    ax = fig.axes[0]
    assert list(ax.texts) == []  # no label sits on a point
    points = {(tuple(c.get_offsets()[0]), c.get_paths()[0].vertices.tobytes(), tuple(c.get_edgecolor()[0])) for c in ax.collections}
    assert len(points) == len(ax.collections) == 3 * 4  # one marker per method and budget
    # tent at 0 bytes delivers nothing and so scores bn's numbers: the same point and budget marker;
    # the later method's marker is drawn smaller, hollow and on top, so both are seen
    at = {}
    for c in ax.collections:
        at.setdefault((tuple(c.get_offsets()[0]), c.get_paths()[0].vertices.tobytes()), []).append(c)
    for same in (group for group in at.values() if len(group) > 1):
        same.sort(key=lambda c: c.get_zorder())
        assert all(a.get_sizes()[0] > b.get_sizes()[0] for a, b in zip(same, same[1:]))
        assert all(len(b.get_facecolor()) == 0 or b.get_facecolor()[0][3] == 0 for b in same[1:])
    tent = method_lines(ax)["tent"]
    assert len(tent) == 4 and tent[0][0] == 0  # the 0-byte budget delivers nothing
    (stream,) = stream_axes(fig)
    assert "uplink unlimited" in stream.get_title()
    assert text_overlaps(fig) == []


def test_a_multi_seed_run_is_titled_with_its_seeds_and_averages_them(runs):
    fig = results_figure(runs["seeds"] / "results.csv")
    title = fig._suptitle.get_text()
    assert "seeds 0, 1 (mean ± 95% over seeds)" in title and "seed 0" not in title.replace("seeds 0, 1", "")
    (ax,) = stream_axes(fig)
    assert "mean over 2 seeds" in ax.get_title()
    batches = pd.read_csv(runs["seeds"] / "batches.csv")
    per_seed = [batch_accuracy(group) for _, group in batches.groupby("seed")]
    expected = (sum(per_seed) / 2).rolling(5, min_periods=1).mean().tolist()
    assert [y for _, y in method_lines(ax)["bn"]] == pytest.approx(expected)
    assert any(c.__class__.__name__ == "LineCollection" for c in fig.axes[0].collections)  # the 95% error bars
    assert text_overlaps(fig) == []


def test_a_fleet_traces_each_edge_apart(runs):
    """batches.csv interleaves the edges: read as one stream the accuracy ran from -35% to 290%."""
    fig = results_figure(runs["fleet"] / "results.csv")
    assert "fleet of 2 edges" in fig._suptitle.get_text()
    axes = stream_axes(fig)
    assert [ax.get_title().split("\n")[1] for ax in axes] == ["(edge 0)", "(edge 1)"]
    batches = pd.read_csv(runs["fleet"] / "batches.csv")
    for edge, ax in enumerate(axes):
        ys = [y for _, y in method_lines(ax)["bn"]]
        assert all(0 <= y <= 100 for y in ys)
        mine = batch_accuracy(batches[batches["edge"] == edge]).rolling(5, min_periods=1).mean().tolist()
        assert ys == pytest.approx(mine)
    assert text_overlaps(fig) == []


def test_a_gradual_stream_names_its_protocol_and_plays_every_segment(runs):
    fig = results_figure(runs["stream"] / "results.csv")
    assert fig._suptitle.get_text().endswith("protocol gradual (md)")
    (ax,) = stream_axes(fig)
    assert len(method_lines(ax)["bn"]) == 9  # severities 1..5..1, one batch of 64 each
    assert text_overlaps(fig) == []


def test_one_panel_per_file_and_pdf_svg_output(runs, cli, tmp_path):
    result = cli("plot", str(runs["fleet"]), "--output", str(tmp_path / "f.svg"), "--split")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["f-bytes.svg", "f-cost.svg", "f-stream-edge0.svg", "f-stream-edge1.svg", "f-uploads.svg"]
    assert all(b"<svg" in (tmp_path / n).read_bytes()[:500] for n in names)
    result = cli("plot", str(runs["single"]), "--output", str(tmp_path / "one.pdf"))
    assert result.exit_code == 0 and (tmp_path / "one.pdf").read_bytes()[:5] == b"%PDF-"


def test_an_unknown_output_format_is_one_line_and_writes_nothing(runs, cli, tmp_path):
    result = cli("plot", str(runs["single"]), "--output", str(tmp_path / "p.xyz"))
    assert result.exit_code == 2
    assert flat(result.output) == f"error: --output {tmp_path / 'p.xyz'}: cannot write .xyz; end the name with .png, .pdf, .svg (e.g. --output p.png)."
    assert list(tmp_path.iterdir()) == []


def test_a_fleet_report_names_each_edge_and_adds_the_fleet_tables(runs, cli):
    """`cema report` on a fleet once dropped the edge column: the same "snow-5" row repeated, no fleet tables."""
    frame = pd.read_csv(runs["fleet"] / "results.csv")
    result = cli("report", str(runs["fleet"]))
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    for row in frame.itertuples():
        assert f"bn edge {row.edge} {row.corruption}-{row.severity} {100 * row.correct / row.samples:.2f}" in text
    per_edge = frame.groupby("edge").apply(lambda f: 100 * (f["correct"] / f["samples"]).mean())
    assert "fleet: accuracy % per edge" in text and "fleet accuracy %" in text
    assert f"bn {per_edge[0]:.2f} {per_edge[1]:.2f}" in text
