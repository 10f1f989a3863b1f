"""Results -> tidy DataFrame -> CSV/JSON files and rich tables. No torch import."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.table import Table

from cema_cli.data import NATURAL_DOMAINS
from cema_cli.results.schema import BATCH_COLUMNS, RESULT_COLUMNS, SCHEMA_VERSION

MB = 1e6


class FoldingTable(Table):
    """A table that never cuts a cell short. Wider than the console (80 columns in a log or a
    pipe), it prints as several tables in a row, each repeating its first ``keys`` columns
    (method, domain) and the ``lead`` columns (the headline accuracy and the status) when it has
    them, the rest in order; a cell that alone is wider than the console folds onto a next line
    (never "…"). The caption goes under the last part, as wide as the console."""

    def __init__(self, *args: Any, keys: int = 1, lead: tuple[str, ...] = ("acc %", "status"), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys, self.lead = keys, lead

    def add_column(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        parts = self.parts(console, options)
        for part in parts:
            yield from Table.__rich_console__(part, console, options)
        if len(parts) > 1 and self.caption:  # at the console's width, not the last part's
            yield Text(str(self.caption), style="table.caption", justify="center")

    def natural_width(self, console: Any, options: Any, columns: list[Any]) -> int:
        from rich.measure import Measurement

        return Measurement.get(console, options.update(width=10**5), self.part(columns, 0, 1)).maximum

    def parts(self, console: Any, options: Any) -> list[Table]:
        """The sub-tables: as many columns in each as fit ``options.max_width``."""
        if self.natural_width(console, options, self.columns) <= options.max_width:
            return [self.part(self.columns, 0, 1)]
        fixed = self.columns[: self.keys] + [c for c in self.columns[self.keys :] if str(c.header) in self.lead]
        rest = [c for c in self.columns if c not in fixed]
        groups: list[list[Any]] = [[]]
        for column in rest:
            if groups[-1] and self.natural_width(console, options, fixed + groups[-1] + [column]) > options.max_width:
                groups.append([])
            groups[-1].append(column)
        return [self.part(fixed + group, index, len(groups)) for index, group in enumerate(groups)]

    def part(self, columns: list[Any], index: int, count: int) -> Table:
        import copy

        part = copy.copy(self)
        part.__class__ = Table
        part.columns = [copy.copy(c) for c in sorted(columns, key=self.columns.index)]
        for position, column in enumerate(part.columns):
            column._index = position
        if count > 1:
            part.title = f"{self.title} ({index + 1} of {count})" if self.title else None
            part.caption = None  # printed once under the last part
        return part
CAPTION = "acc: accuracy of the edge predictions; ratio: uploads / samples; up/down: bytes over the channel (MB = 10^6)"
# --metric: the tables show accuracy or error (%, top-1; top-5 beside it from 100 classes up).
METRICS = ("accuracy", "error")


def shown(fraction: float, metric: str = "accuracy") -> float:
    """A share of correct predictions as the percent a table shows: accuracy, or error = 100 - accuracy."""
    return 100 * (fraction if metric == "accuracy" else 1 - fraction)


def short(metric: str) -> str:
    return "acc" if metric == "accuracy" else "err"


def results_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    return frame.reindex(columns=[c for c in RESULT_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in RESULT_COLUMNS])


def batches_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(records)).assign(schema_version=SCHEMA_VERSION)
    return frame.reindex(columns=[c for c in BATCH_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in BATCH_COLUMNS])


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves a torn file. A
    write that fails (a full disk) removes the temporary file and names ``path`` in the error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, f"{error.strerror or error}; {path} keeps its previous contents", str(path)) from None
    os.replace(tmp, path)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, frame.to_csv(index=False))


def write_json(data: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


NATURAL = frozenset(name for names in NATURAL_DOMAINS.values() for name in names)  # no image corruption has these names


def domain_label(row: Mapping[str, Any]) -> str:
    """'snow-5'; 'none' and the natural domains (watch's 'subject', sentiment's 'tweets') have no
    severity: their bare name. A fleet's row is prefixed by its edge: 'edge 1 snow-5'. ``row``: a
    result row, or any mapping with those keys."""
    corruption = row["corruption"]
    domain = corruption if corruption == "none" or corruption in NATURAL else f"{corruption}-{row['severity']}"
    edge = row.get("edge")
    return domain if edge is None or pd.isna(edge) else f"edge {int(edge)} {domain}"


def _numbers(acc: float, uploads: float, ratio: float, up: float, down: float, secs: float, ips: float, metric: str = "accuracy") -> list[str]:
    return [f"{shown(acc, metric):.2f}", f"{uploads:,.0f}", f"{100 * ratio:.1f}%", f"{up / MB:.2f}", f"{down / MB:.3f}", f"{secs:.1f}", f"{ips:,.0f}"]


NUMBER_HEADERS = ("acc %", "uploads", "ratio", "up MB", "down MB", "sec", "img/s")


def has_top5(frame: pd.DataFrame) -> bool:
    """Rows of a dataset with at least 100 classes carry top-5 accuracy (a column of its own)."""
    return "top5_accuracy" in frame and pd.to_numeric(frame["top5_accuracy"], errors="coerce").notna().all()


def _top5(rows: pd.DataFrame, metric: str) -> list[str]:
    return [f"{shown(pd.to_numeric(rows['top5_accuracy']).mean(), metric):.2f}"] if has_top5(rows) else []


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
    """Rows whose ``status`` is not 'ok' (diverged, collapsed, degraded); files without the column have none."""
    if "status" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["status"].fillna("ok") != "ok"]


def status_text(group: pd.DataFrame) -> str:
    """'ok', or the verdicts of a group's invalid rows by kind, e.g. 'collapsed 2, diverged 1'."""
    kinds = invalid_rows(group)["status"].map(lambda status: str(status).split(":")[0]).value_counts()
    return ", ".join(f"{kind} {count}" if count > 1 else kind for kind, count in kinds.items()) or "ok"


def status_notes(frame: pd.DataFrame) -> list[str]:
    """A note naming up to three results whose status is not ok: diverged or collapsed (their
    accuracy is no measurement) or degraded (a measurement, flagged)."""
    bad = invalid_rows(frame)
    if bad.empty:
        return []
    seeds = "seed" in bad.columns and frame["seed"].nunique() > 1

    def name(row: pd.Series) -> str:
        return f"{row['method']} {domain_label(row)}" + (f" seed {row['seed']}" if seeds else "") + f": {row['status']}"

    names = "; ".join(name(row) for _, row in bad.head(3).iterrows())
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return [f"status not ok: {names}{more}"]


def _new_table(title: str, first: Iterable[str], frame: pd.DataFrame, metric: str = "accuracy") -> Table:
    caption = _caption(frame, CAPTION.replace("acc: accuracy of", "err: error (100 - accuracy) of") if metric == "error" else CAPTION)
    headline = f"{short(metric)} %"
    table = FoldingTable(title=title, box=box.SIMPLE_HEAD, caption=caption, collapse_padding=True, pad_edge=False,
                         keys=len(tuple(first)), lead=(headline, "status"))
    for name in first:
        table.add_column(name, no_wrap=True, min_width=len(name) if name == "method" else 16)
    for name in (headline, *([f"top-5 {short(metric)} %"] if has_top5(frame) else []), *NUMBER_HEADERS[1:]):
        table.add_column(name, justify="right")
    return table


def _totals(group: pd.DataFrame, metric: str = "accuracy") -> list[str]:
    """Mean accuracy (or error) over domains; uploads, bytes and time summed; ratio and speed over the total."""
    seen, secs = group["samples"].sum(), group["seconds"].sum()
    cells = _numbers(
        group["accuracy"].mean(), group["uploads"].sum(), group["uploads"].sum() / seen if seen else 0.0,
        group["uplink_bytes"].sum(), group["downlink_bytes"].sum(), secs, seen / secs if secs else 0.0, metric,
    )
    return [cells[0], *_top5(group, metric), *cells[1:]]


def bench_table(frame: pd.DataFrame, metric: str = "accuracy") -> Table:
    """One line per (method, domain), and a mean line per method when several domains ran; a
    status column when some result is not valid."""
    table = _new_table("cema bench", ("method", "domain"), frame, metric)
    status = _status_column(table, frame)
    sweep = budget_points(frame) > 1
    for method, group in frame.groupby("method", sort=False):
        for index, row in group.iterrows():
            at = f" @{budget_label(row['uplink_budget_bytes'])}" if sweep else ""
            table.add_row(method, domain_label(row) + at, *_totals(group.loc[[index]], metric), *status(group.loc[[index]]))
        if len(group) > 1:
            table.add_row(method, "mean", *_totals(group, metric), *status(group), style="bold")
    return table


def compare_table(frame: pd.DataFrame, metric: str = "accuracy") -> Table:
    """One line per method: mean accuracy (or error) over domains, total uploads, bytes and time
    (and the invalid results, when some are)."""
    table = _new_table("cema compare", ("method",), frame, metric)
    status = _status_column(table, frame)
    for method, group in frame.groupby("method", sort=False):
        table.add_row(method, *_totals(group, metric), *status(group))
    return table


def _status_column(table: Table, frame: pd.DataFrame):
    """Adds a status column when some row is not valid; returns rows -> its cells ([] without)."""
    if invalid_rows(frame).empty:
        return lambda group: []
    table.add_column("status", no_wrap=True)
    return lambda group: [status_text(group)]


def domain_table(frame: pd.DataFrame, metric: str = "accuracy") -> Table:
    """Accuracy % per method and domain with the mean over domains. Methods are rows and domains
    columns, as papers print, while that is the narrower layout; with more domains than methods
    (``--corruption all``) domains are rows, so the table reads at 80 columns."""
    labelled = frame.assign(domain=frame.apply(domain_label, axis=1))
    pivot = labelled.pivot_table(index="method", columns="domain", values="accuracy", sort=False)
    means = pivot.mean(axis=1)
    table = FoldingTable(title=f"{metric} % per domain", box=box.SIMPLE_HEAD, caption=_caption(frame, None))
    pivot, means = (pivot, means) if metric == "accuracy" else (1 - pivot, 1 - means)
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


def check_table(diff: pd.DataFrame, tolerance: float, metric: str = "accuracy") -> Table:
    """Baseline vs new accuracy (or error) per (method, domain), the limit each was held against,
    and the rule in the caption; regressions in red (an error that rose, an accuracy that fell)."""
    table = FoldingTable(title=f"cema check (tolerance {tolerance:g} points)", box=box.SIMPLE_HEAD, caption=check_rule(diff, tolerance),
                         keys=2, lead=("diff", "status"))
    for name in ("method", "domain"):
        table.add_column(name, no_wrap=True)
    for name in (f"baseline {short(metric)} %", f"new {short(metric)} %", "diff", f"limit {short(metric)} %"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    sign = 1 if metric == "accuracy" else -1
    for _, row in diff.iterrows():
        table.add_row(
            row["method"], domain_label(row), f"{shown(row['accuracy_baseline'], metric):.2f}", f"{shown(row['accuracy_new'], metric):.2f}",
            f"{sign * row['diff_points']:+.2f}", f"{shown(row['limit'], metric):.2f}", row["status"],
            style="bold red" if row["status"] == "REGRESSED" else None,
        )
    return table


def check_rule(diff: pd.DataFrame, tolerance: float) -> str:
    """The rule ``cema check`` applied (cema_cli/results/tables.py ``compare_seeds``) and the worst
    difference it saw, in words."""
    texts = {
        "row": f"rule: each row's new accuracy >= its baseline's - {tolerance:g} points",
        "paired": "rule: the baseline's own seeds re-run (seeds {seeds}), so paired: each mean over those seeds "
                  f">= the baseline's mean - {tolerance:g} points",
        "interval": "rule: other seeds ({seeds} against the baseline's {old}): each new mean over seeds >= the "
                    f"baseline's lower 95% bound - {tolerance:g} points",
    }
    parts = []
    for rule, group in diff.groupby("rule", sort=False):
        first = group.iloc[0]
        parts.append(texts[rule].format(seeds=first.get("seeds_new"), old=first.get("seeds_baseline")))
    worst = diff.loc[diff["diff_points"].idxmin()] if len(diff) else None
    if worst is not None:
        parts.append(f"worst difference {worst['diff_points']:+.2f} points ({worst['method']} {domain_label(worst)})")
    return "; ".join(parts)


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


def sweep_table(frame: pd.DataFrame, metric: str = "accuracy") -> Table:
    """Accuracy against uploads and bytes per uplink budget; * marks the Pareto-best methods
    (no other method is as accurate for fewer uplink bytes) at that budget."""
    table = FoldingTable(title=f"{metric} vs uplink budget (* = Pareto-best at that budget)", box=box.SIMPLE_HEAD, keys=2,
                         lead=(f"{short(metric)} %", "status"))
    for name in ("uplink budget", "method", f"{short(metric)} %", "uploads", "delivered", "ratio", "up MB"):
        table.add_column(name, justify="left" if name in ("uplink budget", "method") else "right")
    for _, row in sweep_frame(frame).iterrows():
        label = budget_label(None if row["budget"] == float("inf") else row["budget"])
        mark = " *" if row["pareto"] else ""
        table.add_row(label, f"{row['method']}{mark}", f"{shown(row['accuracy'], metric):.2f}", f"{row['uploads']:,.0f}", f"{row['delivered']:,.0f}",
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
COST_CAPTION = ("counted: GF = GFLOPs (flop counter, 2 per multiply-add), up MB (10^6 bytes), exposed = raw samples "
                "(images, sensor windows, sentences) that reached the cloud, stale b = parameter age in batches; measured: cloud s on {device}; "
                "modelled: stale s, cost; upload_seconds in results.csv (README, \"Cost columns\")")


def cost_table(frame: pd.DataFrame) -> Table | None:
    """One line per method: counted, measured and modelled costs summed (or averaged) over its
    domains; None for results written before the cost columns existed."""
    shown = [c for c in COST_COLUMNS if c[1] in frame and (c[1] not in MODELLED or frame[c[1]].notna().any())]
    if "cloud_gflops" not in frame:
        return None
    device = ", ".join(str(d) for d in frame["device"].dropna().unique()) if "device" in frame else "this machine"
    table = FoldingTable(title="cost per method (all domains)", box=box.SIMPLE_HEAD, caption=COST_CAPTION.format(device=device),
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
