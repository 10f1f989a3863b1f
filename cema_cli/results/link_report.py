"""The validation report of ``--link simulated,live``: the same stream through the simulated
channel and through a real link, side by side (no torch import).

- results: accuracy, uploads and payload bytes of each link (equal in lockstep);
- the link: bytes on the wire with the framing overhead, and the modelled against the measured
  upload time (per message that carried uploads) and staleness (batches, and seconds from the
  uploads leaving the edge to the parameters learnt from them reaching it).

The modelled times come from the cost model (README, "Cost columns"): --uplink-rate,
--downlink-rate and --rtt, which default to the --shape rates and round trip of the live link.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
from rich import box
from rich.table import Table

KEY = ["method", "corruption", "severity", "segment"]


def paired(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per (method, domain) with the simulated row's columns and the live row's
    (suffix ``_live``); empty without both links."""
    if "link" not in frame or not {"simulated", "live"} <= set(frame["link"].dropna()):
        return pd.DataFrame()
    key = [k for k in KEY + ["edge"] if k in frame and frame[k].notna().any()]
    simulated = frame[frame["link"] == "simulated"]
    live = frame[frame["link"] == "live"]
    return simulated.merge(live, on=key, suffixes=("", "_live"))


def modelled_upload_seconds(row: pd.Series) -> float | None:
    """rtt/2 + 8 B / rate for the mean payload B of a live message that carried uploads."""
    costs = json.loads(row["cost_model"]) if isinstance(row.get("cost_model"), str) else {}
    rate, rtt = costs.get("uplink_rate_bps"), costs.get("rtt_ms")
    messages = row.get("upload_messages_live") or 0
    if not messages or (rate is None and rtt is None):
        return None
    return (rtt or 0.0) / 2000.0 + (8.0 * row["uplink_bytes_live"] / messages / rate if rate else 0.0)


def number(value: Any, form: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, form)


def results_table(pairs: pd.DataFrame) -> Table:
    table = Table(title="simulated vs live link: results", box=box.SIMPLE_HEAD,
                  caption="sim/live; payload: uplink + downlink kB the channel counts; same: all three equal")
    for name in ("method", "domain", "acc %", "uploads", "payload kB", "same"):
        table.add_column(name, justify="left" if name in ("method", "domain") else "right", no_wrap=True)
    for _, row in pairs.iterrows():
        payload = (row["uplink_bytes"] + row["downlink_bytes"], row["uplink_bytes_live"] + row["downlink_bytes_live"])
        same = (row["accuracy"], row["uploads"], payload[0]) == (row["accuracy_live"], row["uploads_live"], payload[1])
        table.add_row(row["method"], f"{row['corruption']}-{row['severity']}", f"{100 * row['accuracy']:.2f}/{100 * row['accuracy_live']:.2f}",
                      f"{row['uploads']:.0f}/{row['uploads_live']:.0f}", f"{payload[0] / 1e3:.1f}/{payload[1] / 1e3:.1f}",
                      "yes" if same else "NO")
    return table


def link_table(pairs: pd.DataFrame) -> Table:
    table = Table(title="the live link: modelled vs measured", box=box.SIMPLE_HEAD,
                  caption="wire: kB on the socket, framing included (+: overhead); up s: per message with uploads, "
                          "modelled/measured; age: parameter staleness in batches (sim/live) and seconds (modelled/measured)")
    for name in ("method", "domain", "wire kB", "+", "up s", "age b", "age s"):
        table.add_column(name, justify="left" if name in ("method", "domain") else "right", no_wrap=True)
    for _, row in pairs.iterrows():
        wire = row["wire_uplink_bytes_live"] + row["wire_downlink_bytes_live"]
        table.add_row(row["method"], f"{row['corruption']}-{row['severity']}", f"{wire / 1e3:.1f}",
                      f"{number(100 * row['wire_overhead_live'], '.1f')}%",
                      f"{number(modelled_upload_seconds(row), '.2f')}/{number(row['measured_upload_seconds_live'], '.2f')}",
                      f"{row['param_delay_batches']:.1f}/{row['param_delay_batches_live']:.1f}",
                      f"{number(row.get('param_delay_seconds'), '.2f')}/{number(row['measured_staleness_seconds_live'], '.2f')}")
    return table


def validation_tables(frame: pd.DataFrame) -> list[Table]:
    """The two tables, when the run has both links; else none."""
    pairs = paired(frame)
    pairs = pairs[pairs["method_config"] == pairs["method_config_live"]] if not pairs.empty else pairs
    return [] if pairs.empty else [results_table(pairs), link_table(pairs)]
