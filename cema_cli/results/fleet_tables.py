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


def live_fleet_table(summary: list[dict[str, Any]]) -> Table:
    """Per method: the edges' accuracy and what the link lost; the server's figures are the run's."""
    table = Table(title=f"live fleet of {summary[0]['edges'] if summary else 0} edge processes", box=box.SIMPLE_HEAD,
                  caption="acc: mean/worst edge; lost: uploads that found no cloud; not ok: rows whose link had an outage or loss")
    for name in ("method", "acc %", "uploads", "wire MB", "lost", "not ok"):
        table.add_column(name, justify="left" if name == "method" else "right", no_wrap=True)
    for s in summary:
        table.add_row(s["method"], f"{100 * (s['mean_accuracy'] or 0):.2f}/{100 * (s['worst_edge_accuracy'] or 0):.2f}", str(s["uploads"]),
                      f"{(s['wire_uplink_bytes'] + s['wire_downlink_bytes']) / 1e6:.2f}", str(s["uploads_lost"]), str(s["links_not_ok"]))
    return table


def server_line(summary: list[dict[str, Any]]) -> str:
    """What the server measured over the whole run (every method's sessions)."""
    s = summary[0] if summary else {}
    return (f"server: utilisation {100 * (s.get('cloud_utilisation') or 0):.0f}% of {s.get('cloud_capacity')} worker(s), "
            f"queue wait mean {s.get('mean_queue_wait_s') or 0:.3f} s p99 {s.get('p99_queue_wait_s') or 0:.3f} s, "
            f"request latency p50 {s.get('p50_request_s') or 0:.3f} s p99 {s.get('p99_request_s') or 0:.3f} s "
            f"({s.get('requests') or 0} requests), sessions held at most {s.get('peak_sessions')}, "
            f"peak memory {(s.get('server_peak_rss_bytes') or 0) / 1e6:.0f} MB")
