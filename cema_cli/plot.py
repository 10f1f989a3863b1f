"""``cema plot``: accuracy versus uploads and bytes (one line per method, one point per uplink
budget) and accuracy along the stream, from results.csv and the batches.csv beside it.
No torch import; matplotlib with the Agg backend, so it works without a display."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cema_cli.errors import CemaError
from cema_cli.report import MB, budget_label, sweep_frame


def plot_results(results_csv: Path, output: Path) -> Path:
    """Write a PNG with two or three panels; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results_csv = results_csv / "results.csv" if results_csv.is_dir() else results_csv  # a run or sweep folder
    frame = read_csv(results_csv)
    batches_csv = results_csv.with_name("batches.csv")
    batches = read_csv(batches_csv) if batches_csv.exists() else None
    panels = 3 if batches is not None and not batches.empty else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), constrained_layout=True)
    from cema_cli.stats_tables import seed_half_widths

    summary = seed_half_widths(sweep_frame(frame), frame)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {m: palette[i % len(palette)] for i, m in enumerate(frame["method"].unique())}  # same in every panel
    draw_tradeoff(axes[0], summary, "delivered", "uploads delivered to the cloud (samples, all domains)", 1.0, colors)
    draw_tradeoff(axes[1], summary, "uplink_bytes", "uplink (MB, all domains)", MB, colors)
    if panels == 3:
        draw_stream(axes[2], batches, colors)
    title = f"{frame['dataset'].iloc[0]}: {frame['edge_model'].iloc[0]} edge, {frame['cloud_model'].iloc[0]} cloud, seed {frame['seed'].iloc[0]}"
    fig.suptitle(title)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise CemaError(f"{path} does not exist; pass the results.csv written by `cema bench --out DIR`.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CemaError(f"{path} is not a readable CSV ({error}); pass a results.csv written by cema.") from None


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
