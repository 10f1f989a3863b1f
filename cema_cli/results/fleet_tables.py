"""A fleet's tables (``cema bench|compare --edges N`` and ``cema report`` of its folder): accuracy
per edge, and fleet.csv's summary as accuracy with the collaboration gain and what it cost. No
torch import."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich import box
from rich.table import Table

from cema_cli.results.report import FoldingTable


def is_fleet(frame: pd.DataFrame) -> bool:
    """Rows of a fleet carry their edge (single-edge runs have no ``edge`` column, or it is empty)."""
    return "edge" in frame.columns and frame["edge"].notna().any()


def edge_table(frame: pd.DataFrame) -> Table:
    """Accuracy % per method and edge, over that edge's domains (correct / samples)."""
    totals = frame.groupby(["method", "edge"], sort=False)[["correct", "samples"]].sum()
    accuracy = (totals["correct"] / totals["samples"]).unstack("edge")
    table = FoldingTable(title="fleet: accuracy % per edge", box=box.SIMPLE_HEAD)
    table.add_column("method", no_wrap=True)
    edges = sorted(accuracy.columns)
    for edge in edges:
        table.add_column(f"edge {int(edge)}", justify="right")
    for method, values in accuracy.iterrows():
        table.add_row(str(method), *("-" if pd.isna(values[e]) else f"{100 * values[e]:.2f}" for e in edges))
    return table


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # fleet.csv read back: NaN


def fleet_summary_table(summary: list[dict[str, Any]]) -> list[Table]:
    """fleet.csv as two tables: accuracy with the collaboration gain, and what it cost."""
    accuracy = FoldingTable(title="fleet accuracy %", box=box.SIMPLE_HEAD, lead=("mean",),
                            caption="gain: fleet mean minus the mean of the edges run alone (points)")
    for name in ("method", "edges", "batching", "student", "mean", "worst edge", "alone", "gain"):
        accuracy.add_column(name, justify="left" if name in ("method", "batching", "student") else "right", no_wrap=True)
    cost = FoldingTable(title="fleet cost", box=box.SIMPLE_HEAD,
                        caption="wait: ticks an upload waits for the cloud; param age: batches since the edge's parameters were sent")
    for name in ("method", "up MB", "down MB", "cloud steps/tick", "util", "max queue", "wait", "param age"):
        cost.add_column(name, justify="left" if name == "method" else "right", no_wrap=True)
    for s in summary:
        alone, gain, util = s["independent_mean_accuracy"], s["collaboration_gain"], s["cloud_utilisation"]
        accuracy.add_row(s["method"], str(s["edges"]), s["cloud_batching"], s["student"], f"{100 * s['mean_accuracy']:.2f}",
                         f"{100 * s['worst_edge_accuracy']:.2f}", "-" if _missing(alone) else f"{100 * alone:.2f}",
                         "-" if _missing(gain) else f"{100 * gain:+.2f}")
        cost.add_row(s["method"], f"{s['uplink_bytes'] / 1e6:.2f}", f"{s['downlink_bytes'] / 1e6:.3f}", f"{s['cloud_steps_per_tick']:.2f}",
                     "-" if _missing(util) else f"{100 * util:.0f}%", str(s["longest_queue"]), f"{s['mean_queue_wait_ticks']:.2f}",
                     f"{s['mean_staleness_batches']:.2f}")
    return [accuracy, cost]
