"""Published numbers beside measured ones: the ``[[expected]]`` tables of a run configuration
(examples/*.toml; read by cema_cli/toml_config.py) and the comparison ``cema report --expected
CONFIG.toml`` prints. No torch import.

One ``[[expected]]`` entry holds numbers of one published table::

    [[expected]]
    source = "EATA README (github.com/mr-eggplant/EATA), ResNet-50 (BN) rows"
    metric = "error"            # error, accuracy, top5_error, top5_accuracy (%), or uploads
    severity = 5
    mean = { source = 82.0, tent = 57.4 }     # per method: the mean over the corruptions
    [expected.domains]                        # per method and corruption
    tent = { gaussian_noise = 71.6, shot_noise = 69.8 }

``uploads`` are counts out of ``out_of`` images per domain; they are compared as a share of
the samples (so a run on fewer images still compares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from cema_cli.errors import CemaError

METRICS = ("error", "accuracy", "top5_error", "top5_accuracy", "uploads")
MEAN = "mean"


@dataclass(frozen=True)
class Expected:
    """One published number: a method's metric on a domain (or the mean over domains)."""

    method: str
    corruption: str  # a corruption name, or MEAN
    severity: int
    metric: str
    value: float  # as published: a percent, or an upload count out of ``out_of``
    source: str
    out_of: int | None = None

    def published_percent(self) -> float:
        return 100 * self.value / self.out_of if self.metric == "uploads" else self.value


def parse_expected(tables: Any, path: Path) -> list[Expected]:
    """Every published number of ``[[expected]]`` tables, checked: a wrong key, metric, method or
    corruption is refused by name (run configurations are checked before they run)."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise CemaError(f"{path}: expected must be an array of tables ([[expected]]), not {tables!r}.")
    return [item for index, table in enumerate(tables) for item in parse_table(table, f"{path}: [[expected]] #{index + 1}")]


def parse_table(table: dict[str, Any], where: str) -> list[Expected]:
    unknown = sorted(set(table) - {"source", "metric", "severity", "out_of", "mean", "domains"})
    if unknown:
        raise CemaError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: source, metric, severity, out_of, mean, domains.")
    source, metric, severity = table.get("source"), table.get("metric"), table.get("severity", 5)
    if not isinstance(source, str) or not source.strip():
        raise CemaError(f"{where}: source must name where the numbers were published (a paper or repository).")
    if metric not in METRICS:
        raise CemaError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}.")
    if not isinstance(severity, int) or not 1 <= severity <= 5:
        raise CemaError(f"{where}: severity {severity!r} is not 1-5.")
    out_of = table.get("out_of")
    if (metric == "uploads") != (isinstance(out_of, int) and out_of > 0):
        raise CemaError(f"{where}: out_of (images per domain, e.g. 50000) goes with metric uploads, and only with it.")
    cells = [(m, MEAN, v) for m, v in mapping(table.get("mean", {}), f"{where} mean").items()]
    for method, values in mapping(table.get("domains", {}), f"{where} domains").items():
        cells += [(method, c, v) for c, v in mapping(values, f"{where} domains.{method}").items()]
    check_names(cells, where)
    return [Expected(m, c, severity, metric, float(v), source.strip(), out_of) for m, c, v in cells]


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CemaError(f"{where} must be a table of name = value, not {value!r}.")
    return value


def check_names(cells: list[tuple[str, str, Any]], where: str) -> None:
    from cema_cli.corruptions import ALL
    from cema_cli.strategies import STRATEGIES

    for method, corruption, value in cells:
        STRATEGIES.check(method)
        if corruption != MEAN and corruption not in ALL:
            raise CemaError(f"{where}: {corruption!r} is not a corruption name (e.g. gaussian_noise).")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CemaError(f"{where}: {method} {corruption} = {value!r} is not a number.")


# --- measured beside published ----------------------------------------------------------------

def measured_percent(rows: pd.DataFrame, metric: str) -> float:
    """The metric of result rows in percent (seeds and domains averaged); NaN when the rows
    lack it (top-5 below 100 classes, or no rows)."""
    if rows.empty:
        return math.nan
    if metric == "uploads":
        return float(100 * (rows["uploads"] / rows["samples"]).mean())
    column = "top5_accuracy" if metric.startswith("top5") else "accuracy"
    values = pd.to_numeric(rows[column], errors="coerce") if column in rows else pd.Series(dtype=float)
    accuracy = float(values.mean()) if values.notna().all() else math.nan
    return 100 * (1 - accuracy if metric.endswith("error") else accuracy)


def comparison_frame(frame: pd.DataFrame, expected: list[Expected]) -> pd.DataFrame:
    """One line per published number whose method and domain the results hold: measured,
    published and measured - published (points). A mean covers the corruptions that ran."""
    lines = []
    for item in expected:
        rows = frame[(frame["method"] == item.method) & (frame["severity"] == item.severity)]
        if item.corruption != MEAN:
            rows = rows[rows["corruption"] == item.corruption]
        if rows.empty:
            continue
        domains = rows["corruption"].nunique()
        per_domain = rows.groupby("corruption", sort=False)
        measured = float(pd.Series([measured_percent(g, item.metric) for _, g in per_domain]).mean())
        label = f"{item.corruption}-{item.severity}" if item.corruption != MEAN else f"mean of {domains}, sev {item.severity}"
        lines.append({"method": item.method, "domain": label, "metric": item.metric, "measured": measured,
                      "published": item.published_percent(), "difference": measured - item.published_percent(), "source": item.source})
    return pd.DataFrame(lines, columns=["method", "domain", "metric", "measured", "published", "difference", "source"])


def comparison_table(comparison: pd.DataFrame) -> Table:
    """Measured beside published with the difference in points; sources as numbered notes."""
    sources = list(dict.fromkeys(comparison["source"]))
    notes = [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    caption = "\n".join(["%: error/accuracy of the edge predictions; uploads: % of the samples uploaded", *notes])
    table = Table(title="measured vs published", box=box.SIMPLE_HEAD, caption=escape(caption))
    for name in ("method", "domain", "metric"):
        table.add_column(name, no_wrap=True)
    for name in ("measured %", "published %", "diff", "src"):
        table.add_column(name, justify="right")
    for _, line in comparison.iterrows():
        table.add_row(escape(line["method"]), line["domain"], line["metric"], _cell(line["measured"], "{:.1f}"), f"{line['published']:.1f}",
                      _cell(line["difference"], "{:+.1f}"), escape(f"[{sources.index(line['source']) + 1}]"))
    return table


def _cell(value: float, form: str) -> str:
    return "-" if pd.isna(value) else form.format(value)
