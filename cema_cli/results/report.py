"""Results -> tidy DataFrame -> CSV/JSON files and rich tables. No torch import."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.table import Table

from cema_cli.results.schema import BATCH_COLUMNS, RESULT_COLUMNS, SCHEMA_VERSION

MB = 1e6
CAPTION = "acc: accuracy of the edge predictions; ratio: uploads / samples; up/down: bytes over the channel (MB = 10^6)"


def results_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    return frame.reindex(columns=[c for c in RESULT_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in RESULT_COLUMNS])


def batches_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(records)).assign(schema_version=SCHEMA_VERSION)
    return frame.reindex(columns=[c for c in BATCH_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in BATCH_COLUMNS])


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, frame.to_csv(index=False))


def write_json(data: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def domain_label(row: pd.Series) -> str:
    return row["corruption"] if row["corruption"] == "none" else f"{row['corruption']}-{row['severity']}"


def _numbers(acc: float, uploads: float, ratio: float, up: float, down: float, secs: float, ips: float) -> list[str]:
    return [f"{100 * acc:.2f}", f"{uploads:,.0f}", f"{100 * ratio:.1f}%", f"{up / MB:.2f}", f"{down / MB:.3f}", f"{secs:.1f}", f"{ips:,.0f}"]


NUMBER_HEADERS = ("acc %", "uploads", "ratio", "up MB", "down MB", "sec", "img/s")


def budget_points(frame: pd.DataFrame) -> int:
    """How many uplink budget points the rows hold (more than one in a sweep)."""
    return frame["uplink_budget_bytes"].astype("float").fillna(-1).nunique() if "uplink_budget_bytes" in frame else 1


def mean_notes(frame: pd.DataFrame) -> list[str]:
    """Say when a mean pools budget points, or averages methods over different domains."""
    notes = []
    points = budget_points(frame)
    if points > 1:
        notes.append(f"note: each mean pools {points} uplink budget points; the sweep table has one line per budget")
    domains = {method: frozenset(zip(group["corruption"], group["severity"])) for method, group in frame.groupby("method", sort=False)}
    if len(set(domains.values())) > 1:
        counts = ", ".join(f"{method} {len(d)}" for method, d in domains.items())
        notes.append(f"note: means over different domains ({counts})")
    return notes


def _caption(frame: pd.DataFrame, caption: str | None = CAPTION) -> str | None:
    return "\n".join([*([caption] if caption else []), *mean_notes(frame), *status_notes(frame)]) or None


# --- a result's status (cema_cli/results/health.py): shown wherever it is not "ok" -----------------------

def invalid_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose ``status`` is not 'ok' (diverged, collapsed); files without the column have none."""
    if "status" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["status"].fillna("ok") != "ok"]


def status_text(group: pd.DataFrame) -> str:
    """'ok', or the verdicts of a group's invalid rows by kind, e.g. 'collapsed 2, diverged 1'."""
    kinds = invalid_rows(group)["status"].map(lambda status: str(status).split(":")[0]).value_counts()
    return ", ".join(f"{kind} {count}" if count > 1 else kind for kind, count in kinds.items()) or "ok"


def status_notes(frame: pd.DataFrame) -> list[str]:
    """A note naming up to three invalid results (their accuracy is no measurement)."""
    bad = invalid_rows(frame)
    if bad.empty:
        return []
    seeds = "seed" in bad.columns and frame["seed"].nunique() > 1

    def name(row: pd.Series) -> str:
        return f"{row['method']} {domain_label(row)}" + (f" seed {row['seed']}" if seeds else "") + f": {row['status']}"

    names = "; ".join(name(row) for _, row in bad.head(3).iterrows())
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return [f"not valid (status): {names}{more}"]


def _new_table(title: str, first: Iterable[str], frame: pd.DataFrame) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, caption=_caption(frame), collapse_padding=True, pad_edge=False)
    for name in first:
        table.add_column(name, no_wrap=True, min_width=len(name) if name == "method" else 16)
    for name in NUMBER_HEADERS:
        table.add_column(name, justify="right")
    return table


def _totals(group: pd.DataFrame) -> list[str]:
    """Mean accuracy over domains; uploads, bytes and time summed; ratio and speed over the total."""
    seen, secs = group["samples"].sum(), group["seconds"].sum()
    return _numbers(
        group["accuracy"].mean(), group["uploads"].sum(), group["uploads"].sum() / seen if seen else 0.0,
        group["uplink_bytes"].sum(), group["downlink_bytes"].sum(), secs, seen / secs if secs else 0.0,
    )


def bench_table(frame: pd.DataFrame) -> Table:
    """One line per (method, domain), and a mean line per method when several domains ran; a
    status column when some result is not valid."""
    table = _new_table("cema bench", ("method", "domain"), frame)
    status = _status_column(table, frame)
    sweep = budget_points(frame) > 1
    for method, group in frame.groupby("method", sort=False):
        for index, row in group.iterrows():
            at = f" @{budget_label(row['uplink_budget_bytes'])}" if sweep else ""
            table.add_row(method, domain_label(row) + at, *_numbers(
                row["accuracy"], row["uploads"], row["upload_ratio"], row["uplink_bytes"],
                row["downlink_bytes"], row["seconds"], row["images_per_s"],
            ), *status(group.loc[[index]]))
        if len(group) > 1:
            table.add_row(method, "mean", *_totals(group), *status(group), style="bold")
    return table


def compare_table(frame: pd.DataFrame) -> Table:
    """One line per method: mean accuracy over domains, total uploads, bytes and time (and the
    invalid results, when some are)."""
    table = _new_table("cema compare", ("method",), frame)
    status = _status_column(table, frame)
    for method, group in frame.groupby("method", sort=False):
        table.add_row(method, *_totals(group), *status(group))
    return table


def _status_column(table: Table, frame: pd.DataFrame):
    """Adds a status column when some row is not valid; returns rows -> its cells ([] without)."""
    if invalid_rows(frame).empty:
        return lambda group: []
    table.add_column("status", no_wrap=True)
    return lambda group: [status_text(group)]


def domain_table(frame: pd.DataFrame) -> Table:
    """Accuracy % per method and domain with the mean over domains. Methods are rows and domains
    columns, as papers print, while that is the narrower layout; with more domains than methods
    (``--corruption all``) domains are rows, so the table reads at 80 columns."""
    labelled = frame.assign(domain=frame.apply(domain_label, axis=1))
    pivot = labelled.pivot_table(index="method", columns="domain", values="accuracy", sort=False)
    means = pivot.mean(axis=1)
    table = Table(title="accuracy % per domain", box=box.SIMPLE_HEAD, caption=_caption(frame, None))
    if len(pivot.columns) > len(pivot.index):
        return _domains_as_rows(table, pivot, means)
    table.add_column("method", no_wrap=True)
    for domain in pivot.columns:
        table.add_column(domain, justify="right")
    table.add_column("mean", justify="right", style="bold")
    for method, values in pivot.iterrows():
        table.add_row(str(method), *map(_percent, values), _percent(means[method]))
    return table


def _domains_as_rows(table: Table, pivot: pd.DataFrame, means: pd.Series) -> Table:
    table.add_column("domain", no_wrap=True)
    for method in pivot.index:
        table.add_column(str(method), justify="right")
    for domain in pivot.columns:
        table.add_row(str(domain), *map(_percent, pivot[domain]))
    table.add_row("mean", *map(_percent, means), style="bold")
    return table


def _percent(value: float) -> str:
    return "-" if pd.isna(value) else f"{100 * value:.1f}"


def check_table(diff: pd.DataFrame, tolerance: float) -> Table:
    """Baseline vs new accuracy per (method, domain); regressions beyond ``tolerance`` points in red."""
    table = Table(title=f"cema check (tolerance {tolerance:g} points)", box=box.SIMPLE_HEAD)
    for name in ("method", "domain"):
        table.add_column(name, no_wrap=True)
    for name in ("baseline %", "new %", "diff"):
        table.add_column(name, justify="right")
    table.add_column("status")
    for _, row in diff.iterrows():
        table.add_row(
            row["method"], domain_label(row), f"{100 * row['accuracy_baseline']:.2f}", f"{100 * row['accuracy_new']:.2f}",
            f"{row['diff_points']:+.2f}", row["status"], style="bold red" if row["status"] == "REGRESSED" else None,
        )
    return table


def markdown_table(table: Table) -> str:
    """A rich table as a GitHub-flavoured Markdown table (title as a bold line above it)."""
    headers = [str(column.header) for column in table.columns]
    align = ["---:" if column.justify == "right" else "---" for column in table.columns]
    cells = [[str(cell) for cell in column.cells] for column in table.columns]
    lines = [f"**{table.title}**", "", _markdown_row(headers), _markdown_row(align)]
    lines += [_markdown_row(list(row)) for row in zip(*cells)]
    lines += ["", *(f"_{line}_" for line in str(table.caption).split("\n"))] if table.caption else []
    return "\n".join(lines) + "\n"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def budget_label(value: Any) -> str:
    """Bytes per batch as a short label; a missing budget is unlimited."""
    if value is None or pd.isna(value):
        return "unlimited"
    value = float(value)
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}B"


def pareto_front(accuracy: pd.Series, cost: pd.Series) -> pd.Series:
    """True where no other row has at least the accuracy at no more cost, strictly better in one."""
    better = [
        ((accuracy >= a) & (cost <= c) & ((accuracy > a) | (cost < c))).any()
        for a, c in zip(accuracy, cost)
    ]
    return ~pd.Series(better, index=accuracy.index)


def sweep_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (uplink budget, method): mean accuracy, total uploads and uplink bytes, Pareto mark."""
    # Files written before the budget columns existed (schema 1 allows it) ran unlimited.
    budgets = frame.get("uplink_budget_bytes", pd.Series(float("nan"), index=frame.index))
    keyed = frame.assign(budget=budgets.astype("float").fillna(float("inf")), delivered_uploads=frame.get("delivered_uploads", frame["uploads"]))
    summary = keyed.groupby(["budget", "method"], sort=False).agg(
        accuracy=("accuracy", "mean"), uploads=("uploads", "sum"), delivered=("delivered_uploads", "sum"),
        uplink_bytes=("uplink_bytes", "sum"),
        samples=("samples", "sum"),
        **{column: (column, lambda v: v.sum(min_count=1)) for column in ("cloud_gflops", "cloud_cost") if column in keyed},
    ).reset_index()
    # concat, not groupby.apply: with a single budget apply returns a wide frame (a one-point plot failed)
    summary["pareto"] = pd.concat([pareto_front(g["accuracy"], g["uplink_bytes"]) for _, g in summary.groupby("budget", sort=False)])
    return summary.sort_values(["budget", "accuracy"], ascending=[True, False])


def sweep_table(frame: pd.DataFrame) -> Table:
    """Accuracy against uploads and bytes per uplink budget; * marks the Pareto-best methods
    (no other method is as accurate for fewer uplink bytes) at that budget."""
    table = Table(title="accuracy vs uplink budget (* = Pareto-best at that budget)", box=box.SIMPLE_HEAD)
    for name in ("uplink budget", "method", "acc %", "uploads", "delivered", "ratio", "up MB"):
        table.add_column(name, justify="left" if name in ("uplink budget", "method") else "right")
    for _, row in sweep_frame(frame).iterrows():
        label = budget_label(None if row["budget"] == float("inf") else row["budget"])
        mark = " *" if row["pareto"] else ""
        table.add_row(label, f"{row['method']}{mark}", f"{100 * row['accuracy']:.2f}", f"{row['uploads']:,.0f}", f"{row['delivered']:,.0f}",
                      f"{100 * row['uploads'] / row['samples']:.1f}%", f"{row['uplink_bytes'] / MB:.2f}")
    return table


# (header, column, how the method's domains combine, format); modelled columns only when assumed.
COST_COLUMNS = (
    ("edge GF/img", "edge_gflops_per_sample", "mean", "{:.3g}"),
    ("cloud GF", "cloud_gflops", "sum", "{:,.1f}"),
    ("up MB", "uplink_bytes", "sum", "{:.2f}"),
    ("exposed", "cloud_exposed_images", "sum", "{:,.0f}"),
    ("cloud s", "cloud_seconds", "sum", "{:.2f}"),
    ("stale b", "param_delay_batches", "mean", "{:.2f}"),
    ("stale s", "param_delay_seconds", "mean", "{:.3f}"),
    ("cost", "cloud_cost", "sum", "{:.2g}"),
)
COST_CAPTION = ("counted: GF = GFLOPs (flop counter, 2 per multiply-add), up MB (10^6 bytes), exposed = raw images that "
                "reached the cloud, stale b = parameter age in batches; measured: cloud s on {device}; "
                "modelled: stale s, cost; upload_seconds in results.csv (README, \"Cost columns\")")


def cost_table(frame: pd.DataFrame) -> Table | None:
    """One line per method: counted, measured and modelled costs summed (or averaged) over its
    domains; None for results written before the cost columns existed."""
    shown = [c for c in COST_COLUMNS if c[1] in frame and (c[1] not in MODELLED or frame[c[1]].notna().any())]
    if "cloud_gflops" not in frame:
        return None
    device = ", ".join(str(d) for d in frame["device"].dropna().unique()) if "device" in frame else "this machine"
    table = Table(title="cost per method (all domains)", box=box.SIMPLE_HEAD, caption=COST_CAPTION.format(device=device),
                  collapse_padding=True, pad_edge=False)
    table.add_column("method", no_wrap=True)
    for header, *_ in shown:
        table.add_column(header, justify="right")
    for method, group in frame.groupby("method", sort=False):
        table.add_row(method, *(_cost_cell(group, column, how, form) for _, column, how, form in shown))
    return table


MODELLED = ("param_delay_seconds", "cloud_cost")


def _cost_cell(group: pd.DataFrame, column: str, how: str, form: str) -> str:
    values = pd.to_numeric(group[column], errors="coerce").dropna()
    if values.empty:
        return "-"
    value = values.sum() if how == "sum" else values.mean()
    return form.format(value / MB if column.endswith("_bytes") else value)
