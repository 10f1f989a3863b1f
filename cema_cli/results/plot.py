"""``cema plot``: accuracy versus uploads, bytes and cloud cost (one line per method, one point
per uplink budget) and accuracy along the stream, from results.csv and the batches.csv beside it.
No torch import; matplotlib with the Agg backend, so it works without a display."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cema_cli.errors import CemaError
from cema_cli.results.report import MB, budget_label, sweep_frame
from cema_cli.results.schema import read_results


def plot_results(results_csv: Path, output: Path) -> Path:
    """Write a PNG with two to four panels; return its path."""
    import matplotlib.pyplot as plt

    fig = results_figure(results_csv)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def results_figure(results_csv: Path):
    """The figure: accuracy vs uploads, vs uplink bytes, vs cloud cost (results with the cost
    columns), and (with batches.csv) along the stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = read_results(results_csv)  # the schema and value checks of every saved-results reader
    batches_csv = (results_csv if results_csv.is_dir() else results_csv.parent) / "batches.csv"
    batches = read_batches(batches_csv) if batches_csv.exists() else None
    cost = cloud_cost_axis(frame)
    panels = 2 + (cost is not None) + (batches is not None and not batches.empty)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), constrained_layout=True)
    from cema_cli.results.tables import seed_half_widths

    summary = seed_half_widths(sweep_frame(frame), frame)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {m: palette[i % len(palette)] for i, m in enumerate(frame["method"].unique())}  # same in every panel
    draw_tradeoff(axes[0], summary, "delivered", "uploads delivered to the cloud (samples, all domains)", 1.0, colors)
    draw_tradeoff(axes[1], summary, "uplink_bytes", "uplink (MB, all domains)", MB, colors)
    if cost is not None:
        draw_tradeoff(axes[2], summary, *cost, 1.0, colors)
    if batches is not None and not batches.empty:
        draw_stream(axes[-1], batches, colors)
    title = f"{frame['dataset'].iloc[0]}: {frame['edge_model'].iloc[0]} edge, {frame['cloud_model'].iloc[0]} cloud, seed {frame['seed'].iloc[0]}"
    fig.suptitle(title)
    return fig


def cloud_cost_axis(frame: pd.DataFrame) -> tuple[str, str] | None:
    """(column, label) of the cloud-cost panel: the modelled cost when every row has one (a
    --cloud-price run), else the counted cloud GFLOPs; None for files without cost columns."""
    if "cloud_cost" in frame and frame["cloud_cost"].notna().all():
        return "cloud_cost", "cloud cost (--cloud-price x cloud hours, all domains)"
    if "cloud_gflops" in frame and frame["cloud_gflops"].notna().all():
        return "cloud_gflops", "cloud compute (counted GFLOPs, all domains)"
    return None


BATCH_NEEDS = ("method", "batch", "seen", "correct")


def read_batches(path: Path) -> pd.DataFrame:
    """batches.csv for the stream panel: readable, with whole non-negative counts."""
    try:
        batches = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CemaError(f"{path} is not a readable CSV ({' '.join(str(error).split())}); delete it to plot without the stream panel.") from None
    missing = [c for c in BATCH_NEEDS if c not in batches.columns]
    if missing:
        raise CemaError(f"{path} lacks the column(s) {', '.join(missing)}; it is not a cema batches.csv (delete it to plot without it).")
    counts = batches[["batch", "seen", "correct"]].apply(pd.to_numeric, errors="coerce")
    if (counts.isna() | (counts < 0)).any(axis=None):
        raise CemaError(f"{path} has a row without whole counts (a torn last line?); delete that line or the file.")
    return batches


def draw_tradeoff(ax, summary: pd.DataFrame, column: str, label: str, scale: float, colors: dict[str, str]) -> None:
    """Mean accuracy against total uploads or bytes; points labelled with their budget."""
    for method, group in summary.groupby("method", sort=False):
        group = group.sort_values("budget")
        ax.plot(group[column] / scale, 100 * group["accuracy"], marker="o", label=method, color=colors[method])
        if group["half_width"].notna().any():  # several seeds: 95% interval of the mean
            ax.errorbar(group[column] / scale, 100 * group["accuracy"], yerr=100 * group["half_width"], fmt="none",
                        ecolor=colors[method], capsize=3)
        for _, row in group.iterrows():
            if summary["budget"].nunique() > 1:
                text = budget_label(None if row["budget"] == float("inf") else row["budget"])
                ax.annotate(text, (row[column] / scale, 100 * row["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(label)
    ax.set_ylabel("mean accuracy over domains (%)")
    ax.grid(alpha=0.3)
    ax.legend(title="method", fontsize=8)


def draw_stream(ax, batches: pd.DataFrame, colors: dict[str, str]) -> None:
    """Per-batch accuracy (moving average of 5 batches) along the stream, domains in run order."""
    unlimited = batches[batches["uplink_budget_bytes"].isna()] if "uplink_budget_bytes" in batches else batches
    batches = unlimited if not unlimited.empty else batches
    if "seed" in batches:  # a sweep: the stream of its first seed
        batches = batches[batches["seed"] == batches["seed"].min()]
    for method, group in batches.groupby("method", sort=False):
        per_batch = group["correct"].diff().where(group["batch"] > 1, group["correct"])
        size = group["seen"].diff().where(group["batch"] > 1, group["seen"])
        accuracy = (100 * per_batch / size).rolling(5, min_periods=1).mean()
        ax.plot(range(len(group)), accuracy.to_numpy(), label=method, linewidth=1, color=colors.get(method))
    ax.set_xlabel("edge batch (domains in run order)")
    ax.set_ylabel("batch accuracy, moving average of 5 (%)")
    ax.set_title("accuracy along the stream", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="method", fontsize=8)
