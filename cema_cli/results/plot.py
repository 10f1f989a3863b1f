"""``cema plot``: accuracy versus uploads, bytes and cloud cost (one line per method, one point
per uplink budget) and accuracy along the stream, from results.csv and the batches.csv beside it.
No torch import; matplotlib with the Agg backend, so it works without a display.

Right by construction for every run kind: the title names what the figure holds (seeds, model
pairs, edges, protocol); budgets are told apart by marker shape, named in a legend outside the
axes, so no label sits on a point or another label; methods that score the same stay visible
(each drawn thinner and dashed differently on top of the one before); the stream is traced per
edge of a fleet (batches.csv interleaves them) and averaged over seeds, at one budget point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from cema_cli.errors import CemaError
from cema_cli.results.report import MB, budget_label, shown, sweep_frame
from cema_cli.results.schema import read_results

FORMATS = (".png", ".pdf", ".svg")
LINESTYLES = ("-", "--", ":", "-.")
BUDGET_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
COLUMNS = 3  # panels per row of the combined figure


def check_output(output: Path) -> None:
    """A file name whose suffix picks the format: .png, .pdf or .svg."""
    if output.suffix.lower() not in FORMATS:
        raise CemaError(f"--output {output}: cannot write {output.suffix or 'a file without a suffix'}; "
                        f"end the name with {', '.join(FORMATS)} (e.g. --output {output.with_suffix('.png').name}).")


def plot_results(results_csv: Path, output: Path, split: bool = False, metric: str = "accuracy") -> list[Path]:
    """Write the figure of accuracy (or error, --metric) (or, with ``split``, one file per panel,
    ``<stem>-<panel><suffix>``); return the paths written."""
    import matplotlib.pyplot as plt

    check_output(output)
    data = PlotData.read(results_csv, metric)
    figures = [(output.with_name(f"{output.stem}-{p.name}{output.suffix}"), figure_of(data, [p])) for p in panels(data)] \
        if split else [(output, figure_of(data, panels(data)))]
    output.parent.mkdir(parents=True, exist_ok=True)
    for path, fig in figures:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return [path for path, _ in figures]


def results_figure(results_csv: Path, metric: str = "accuracy"):
    """The combined figure (every panel), for callers that inspect it."""
    data = PlotData.read(results_csv, metric)
    return figure_of(data, panels(data))


# --- what is plotted -----------------------------------------------------------------------------

@dataclass
class PlotData:
    frame: pd.DataFrame
    batches: pd.DataFrame | None
    summary: pd.DataFrame  # per (budget, method): mean accuracy, uploads, bytes (+ half-width over seeds)
    metric: str = "accuracy"  # --metric: accuracy or error (100 - accuracy) on the y axes

    @classmethod
    def read(cls, results_csv: Path, metric: str = "accuracy") -> PlotData:
        from cema_cli.results.tables import seed_half_widths

        frame = read_results(results_csv)  # the schema and value checks of every saved-results reader
        batches_csv = (results_csv if results_csv.is_dir() else results_csv.parent) / "batches.csv"
        batches = read_batches(batches_csv) if batches_csv.exists() else None
        return cls(frame, batches if batches is not None and not batches.empty else None, seed_half_widths(sweep_frame(frame), frame), metric)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.frame["method"]))

    @property
    def budgets(self) -> list[float]:
        return sorted(self.summary["budget"].unique())

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in self.frame["seed"].unique())


@dataclass
class Panel:
    name: str  # in file names with --split
    draw: Callable[[Any, PlotData, dict[str, Any]], None]


def panels(data: PlotData) -> list[Panel]:
    """accuracy vs uploads and vs bytes, vs cloud cost (results with cost columns), and along the
    stream (with batches.csv): one panel per edge of a fleet."""
    found = [Panel("uploads", lambda ax, d, s: draw_tradeoff(ax, d, s, "delivered", "uploads delivered to the cloud (samples, all domains)", 1.0)),
             Panel("bytes", lambda ax, d, s: draw_tradeoff(ax, d, s, "uplink_bytes", "uplink (MB, all domains)", MB))]
    cost = cloud_cost_axis(data.frame)
    if cost is not None:
        found.append(Panel("cost", lambda ax, d, s: draw_tradeoff(ax, d, s, *cost, 1.0)))
    if data.batches is not None:
        edges = sorted(int(e) for e in data.batches["edge"].dropna().unique()) if "edge" in data.batches else []
        for edge in edges or [None]:
            found.append(Panel("stream" if edge is None else f"stream-edge{edge}", lambda ax, d, s, e=edge: draw_stream(ax, d, s, e)))
    return found


def figure_of(data: PlotData, chosen: list[Panel]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(COLUMNS, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.3 * rows + 1.2), layout="constrained", squeeze=False)
    styles = method_styles(data.methods)
    for ax, panel in zip(axes.flat, chosen):
        panel.draw(ax, data, styles)
    for ax in list(axes.flat)[len(chosen):]:
        ax.remove()
    fig.suptitle(run_title(data))
    add_legends(fig, data, styles)
    return fig


def method_styles(methods: list[str]) -> dict[str, dict[str, Any]]:
    """Colour, line style and width per method, the same in every panel. Later methods are drawn
    thinner and on top, so a method with the same numbers as an earlier one never hides it."""
    import matplotlib.pyplot as plt

    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    count = len(methods)
    return {m: {"color": palette[i % len(palette)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
                "linewidth": 1.2 + 1.6 * (count - 1 - i) / max(count - 1, 1), "markersize": 5 + 5 * (count - 1 - i) / max(count - 1, 1),
                "zorder": 2 + i, "filled": i == 0} for i, m in enumerate(methods)}


def budget_marker(budget: float, budgets: list[float]) -> str:
    return BUDGET_MARKERS[budgets.index(budget) % len(BUDGET_MARKERS)]


def budget_name(budget: float) -> str:
    return budget_label(None if budget == float("inf") else budget)


def add_legends(fig, data: PlotData, styles: dict[str, dict[str, Any]]) -> None:
    """The methods and (a sweep) the budgets' markers, below the panels: nothing inside the axes."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s["color"], linestyle=s["linestyle"], linewidth=s["linewidth"]) for s in styles.values()]
    fig.legend(handles, list(styles), title="method", loc="outside lower left", ncols=min(len(handles), 6), fontsize=8)
    if len(data.budgets) > 1:
        marks = [Line2D([], [], color="0.3", linestyle="none", marker=budget_marker(b, data.budgets)) for b in data.budgets]
        fig.legend(marks, [budget_name(b) for b in data.budgets], title="uplink budget per batch", loc="outside lower right",
                   ncols=min(len(marks), 6), fontsize=8)


def run_title(data: PlotData) -> str:
    """What the figure holds: dataset, models, seeds, edges and protocol, as the rows say."""
    frame = data.frame
    pairs = frame[["edge_model", "cloud_model"]].drop_duplicates()
    models = (f"{pairs.iloc[0]['edge_model']} edge, {pairs.iloc[0]['cloud_model']} cloud" if len(pairs) == 1
              else f"{len(pairs)} edge/cloud model pairs")
    seeds = data.seeds
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))} (mean ± 95% over seeds)"
    parts = [f"{', '.join(dict.fromkeys(frame['dataset'].astype(str)))}: {models}", seed_text]
    if "edge" in frame and frame["edge"].notna().any():
        parts.append(f"fleet of {frame['edge'].nunique()} edges")
    protocols = list(dict.fromkeys(frame["protocol"].astype(str)))
    if protocols != ["reset-each-shift"]:
        gradual = f" ({frame['gradual'].iloc[0]})" if protocols == ["gradual"] and "gradual" in frame else ""
        parts.append(f"protocol {', '.join(protocols)}{gradual}")
    return "; ".join(parts)


# --- the panels ----------------------------------------------------------------------------------

def cloud_cost_axis(frame: pd.DataFrame) -> tuple[str, str] | None:
    """(column, label) of the cloud-cost panel: the modelled cost when every row has one (a
    --cloud-price run), else the counted cloud GFLOPs; None for files without cost columns."""
    if "cloud_cost" in frame and frame["cloud_cost"].notna().all():
        return "cloud_cost", "cloud cost (--cloud-price x cloud hours, all domains)"
    if "cloud_gflops" in frame and frame["cloud_gflops"].notna().all():
        return "cloud_gflops", "cloud compute (counted GFLOPs, all domains)"
    return None


def draw_tradeoff(ax, data: PlotData, styles: dict[str, dict[str, Any]], column: str, label: str, scale: float) -> None:
    """Mean accuracy against total uploads, bytes or cost: one line per method through its budget
    points, each point's marker naming its budget; error bars: 95% over seeds."""
    for method, group in data.summary.groupby("method", sort=False):
        group = group.sort_values("budget")
        style = styles[method]
        x, y = group[column] / scale, shown(group["accuracy"], data.metric)
        ax.plot(x, y, color=style["color"], linestyle=style["linestyle"], linewidth=style["linewidth"], zorder=style["zorder"],
                label=method)
        for budget, xi, yi in zip(group["budget"], x, y):
            ax.scatter([xi], [yi], marker=budget_marker(budget, data.budgets), s=style["markersize"] ** 2, edgecolors=style["color"],
                       facecolors=style["color"] if style["filled"] else "none", linewidths=1.2, zorder=style["zorder"])
        if group["half_width"].notna().any():  # several seeds: 95% interval of the mean
            ax.errorbar(x, y, yerr=100 * group["half_width"], fmt="none", ecolor=style["color"], capsize=3, zorder=style["zorder"])
    start_at_zero(ax, (data.summary[column] / scale).max())
    ax.set_xlabel(label)
    ax.set_ylabel(f"mean {data.metric} over domains (%)")
    ax.grid(alpha=0.3)


def start_at_zero(ax, largest: float) -> None:
    """Uploads, bytes and cost are never negative: the x axis starts just left of 0 (the marker
    at 0 whole) and, when nothing was sent, runs to 1 rather than around 0 in tiny steps."""
    right = largest * 1.05 if largest > 0 else 1.0
    ax.set_xlim(-0.04 * right, right)


BATCH_NEEDS = ("method", "batch", "seen", "correct")


def read_batches(path: Path) -> pd.DataFrame:
    """batches.csv for the stream panel: readable, with whole non-negative counts."""
    try:
        batches = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CemaError(f"{path} is not a readable CSV ({' '.join(str(error).split())[:200]}); "
                        "delete it to plot without the stream panel.") from None
    missing = [c for c in BATCH_NEEDS if c not in batches.columns]
    if missing:
        raise CemaError(f"{path} lacks the column(s) {', '.join(missing)}; it is not a cema batches.csv (delete it to plot without it).")
    counts = batches[["batch", "seen", "correct"]].apply(pd.to_numeric, errors="coerce")
    if (counts.isna() | (counts < 0)).any(axis=None):
        raise CemaError(f"{path} has a row without whole counts (a torn last line?); delete that line or the file.")
    return batches


def stream_budget(batches: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The records of one budget point: unlimited when the run has it, else the largest."""
    if "uplink_budget_bytes" not in batches:
        return batches, ""
    budgets = batches["uplink_budget_bytes"].astype("float").fillna(float("inf"))
    chosen = budgets.max()
    picked = batches[budgets == chosen]
    return picked, f"uplink {budget_name(chosen)}" if budgets.nunique() > 1 else ""


def batch_accuracy(records: pd.DataFrame) -> pd.Series:
    """Per-batch accuracy (%) of one method's records of one edge, seed and budget, in file order:
    ``seen`` and ``correct`` count from the start of each domain (batch 1)."""
    first = records["batch"] == 1
    correct = records["correct"].diff().where(~first, records["correct"])
    seen = records["seen"].diff().where(~first, records["seen"])
    return (100 * correct / seen).reset_index(drop=True)


def stream_curves(batches: pd.DataFrame, edge: int | None) -> dict[str, pd.Series]:
    """Per method: the per-batch accuracy along the stream of ``edge``, averaged over seeds batch by batch."""
    if edge is not None:
        batches = batches[batches["edge"] == edge]
    curves = {}
    for method, records in batches.groupby("method", sort=False):
        per_seed = [batch_accuracy(r) for _, r in records.groupby("seed", sort=True)] if "seed" in records else [batch_accuracy(records)]
        length = min(len(c) for c in per_seed)
        curves[method] = pd.concat([c[:length] for c in per_seed], axis=1).mean(axis=1)
    return curves


def draw_stream(ax, data: PlotData, styles: dict[str, dict[str, Any]], edge: int | None) -> None:
    """Per-batch accuracy (moving average of 5 batches) along the stream, domains in run order."""
    batches, budget = stream_budget(data.batches)
    for method, curve in stream_curves(batches, edge).items():
        style = styles.get(method, {})
        values = curve if data.metric == "accuracy" else 100 - curve  # curves are accuracy in %
        ax.plot(range(len(curve)), values.rolling(5, min_periods=1).mean().to_numpy(), color=style.get("color"),
                linestyle=style.get("linestyle", "-"), linewidth=style.get("linewidth", 1.0), zorder=style.get("zorder", 2), label=method)
    seeds = data.seeds
    where = [f"edge {edge}" if edge is not None else "", budget,
             f"mean over {len(seeds)} seeds" if "seed" in batches and batches["seed"].nunique() > 1 else ""]
    extra = ", ".join(w for w in where if w)
    ax.set_title(f"{data.metric} along the stream" + (f"\n({extra})" if extra else ""), fontsize=10)
    ax.set_xlabel("edge batch (domains in run order)")
    ax.set_ylabel(f"batch {data.metric}, moving average of 5 (%)")
    ax.grid(alpha=0.3)
