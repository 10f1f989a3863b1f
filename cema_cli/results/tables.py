"""Seed statistics of result rows: summary.csv, the mean +- 95% tables, paired comparisons,
and ``cema check`` against a multi-seed baseline. No torch import (``cema report``).

Aggregates (the mean over domains) are computed per seed first, then the interval across
seeds, as the issue asks; a single run's interval is the Wilson interval of its accuracy.
"""

from __future__ import annotations

import math

import pandas as pd
from rich import box
from rich.table import Table

from cema_cli.results.report import budget_label, domain_label, invalid_rows, status_notes, status_text
from cema_cli.results.stats import paired_difference, t_interval, wilson_interval

# A channel point and model pair: seeds of the same point are repetitions of one experiment.
POINT = ["uplink_budget_bytes", "downlink_budget_bytes", "edge_model", "cloud_model"]
CELL = ["method", "corruption", "severity", *POINT]
MEAN_DOMAIN = "mean"


def _groups(frame: pd.DataFrame, keys: list[str]):
    """Group by ``keys``; a channel/model column that an older results file lacks counts as one value."""
    frame = frame.assign(**{c: None for c in POINT if c in keys and c not in frame.columns})
    return frame.groupby(keys, sort=False, dropna=False)


def per_seed_means(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, point, seed): accuracy averaged over the domains of that seed."""
    return _groups(frame, ["method", *POINT, "seed"])["accuracy"].mean().reset_index()


def _interval_columns(accuracies: list[float], correct: float, samples: float) -> dict[str, float]:
    """n, mean, std and the 95% interval: over seeds (t), or Wilson for a single run."""
    interval = t_interval(accuracies)
    low, high = (interval.low, interval.high) if interval.n > 1 else wilson_interval(int(correct), int(samples))
    return {"n": interval.n, "mean": interval.mean, "std": interval.std, "ci_low": low, "ci_high": high,
            "half_width": (high - low) / 2 if not math.isnan(low) else math.nan}


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: per (method, domain, point) and per (method, point) over the domains ('mean')."""
    rows = [{**dict(zip(CELL, key)), **_interval_columns(list(g["accuracy"]), g["correct"].sum(), g["samples"].sum())}
            for key, g in _groups(frame, CELL)]
    for key, g in _groups(per_seed_means(frame), ["method", *POINT]):
        single = frame[(frame["method"] == key[0])]
        rows.append({"method": key[0], "corruption": MEAN_DOMAIN, "severity": None, **dict(zip(POINT, key[1:])),
                     **_interval_columns(list(g["accuracy"]), single["correct"].sum() if len(g) == 1 else 0, single["samples"].sum())})
    return pd.DataFrame(rows)


def several_points(frame: pd.DataFrame) -> bool:
    return _groups(frame, POINT).ngroups > 1


def _point_label(row: pd.Series) -> str:
    up = budget_label(row["uplink_budget_bytes"])
    models = f"{row['edge_model']}/{row['cloud_model']}"
    return f"{up} {models}"


def _pm(mean: float, half: float) -> str:
    return f"{100 * mean:.2f}" + ("" if math.isnan(half) else f" ± {100 * half:.2f}")


def seed_table(frame: pd.DataFrame) -> Table:
    """Mean accuracy over domains per method (and point): mean +- 95% half-width over seeds."""
    summary = summary_frame(frame)
    means = summary[summary["corruption"] == MEAN_DOMAIN]
    caption = "\n".join(["± = 95% interval: Student-t over seeds; Wilson from the sample count for one run", *status_notes(frame)])
    table = Table(title="accuracy over seeds (mean over domains)", box=box.SIMPLE_HEAD, caption=caption)
    points = several_points(frame)
    invalid = not invalid_rows(frame).empty
    for name in ("method", *(["point"] if points else []), "seeds", "acc % ± 95%", "std", *(["status"] if invalid else [])):
        table.add_column(name, justify="left" if name in ("method", "point", "status") else "right")
    statuses = [status_text(g) for _, g in _groups(frame, ["method", *POINT])]  # summary_frame's order
    for (_, row), status_cell in zip(means.iterrows(), statuses):
        std = "-" if math.isnan(row["std"]) else f"{100 * row['std']:.2f}"
        status = [status_cell] if invalid else []
        table.add_row(row["method"], *([_point_label(row)] if points else []), str(row["n"]), _pm(row["mean"], row["half_width"]), std, *status)
    return table


def seed_domain_table(frame: pd.DataFrame) -> Table:
    """Accuracy % per method (rows) and domain (columns), mean +- half-width over seeds."""
    summary = summary_frame(frame)
    cells = summary[summary["corruption"] != MEAN_DOMAIN]
    cells = cells.assign(domain=cells.apply(lambda r: domain_label({**r, "severity": int(r["severity"])}), axis=1))
    keys = ["method", *(["point"] if several_points(frame) else [])]
    cells = cells.assign(point=cells.apply(_point_label, axis=1))
    domains = list(dict.fromkeys(cells["domain"]))
    table = Table(title="accuracy % per domain over seeds (mean ± 95%)", box=box.SIMPLE_HEAD, caption="\n".join(status_notes(frame)) or None)
    for name in (*keys, *domains):
        table.add_column(name, justify="left" if name in keys else "right")
    for key, group in _groups(cells, keys):
        by_domain = dict(zip(group["domain"], (_pm(m, h) for m, h in zip(group["mean"], group["half_width"]))))
        table.add_row(*map(str, key if isinstance(key, tuple) else (key,)), *(by_domain.get(d, "-") for d in domains))
    return table


def paired_frame(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each method against ``reference`` on the same seeds and point: mean paired difference of
    the per-seed means over domains, its 95% t interval, and wins k of n."""
    from cema_cli.errors import CemaError

    means = per_seed_means(frame)
    if reference not in set(means["method"]):
        raise CemaError(f"--versus {reference}: no such method in the results ({', '.join(dict.fromkeys(means['method']))}).")
    ref = means[means["method"] == reference].drop(columns="method")
    joined = means[means["method"] != reference].merge(ref, on=[*POINT, "seed"], suffixes=("", "_ref"))
    rows = []
    for key, g in _groups(joined, ["method", *POINT]):
        paired = paired_difference(list(g["accuracy"]), list(g["accuracy_ref"]))
        d = paired.difference
        rows.append({**dict(zip(["method", *POINT], key)), "n": d.n, "mean_difference": d.mean, "ci_low": d.low,
                     "ci_high": d.high, "half_width": d.half_width, "wins": paired.wins})
    return pd.DataFrame(rows)


def paired_table(frame: pd.DataFrame, reference: str) -> Table:
    paired = paired_frame(frame, reference)
    points = several_points(frame)
    table = Table(title=f"paired difference to {reference}", box=box.SIMPLE_HEAD,
                  caption="points, mean over domains, same seeds; ± = 95% t interval; wins = seeds where the method is ahead")
    for name in ("method", *(["point"] if points else []), "diff ± 95%", "wins"):
        table.add_column(name, justify="left" if name in ("method", "point") else "right")
    for _, row in paired.iterrows():
        diff = f"{100 * row['mean_difference']:+.2f}" + ("" if math.isnan(row["half_width"]) else f" ± {100 * row['half_width']:.2f}")
        table.add_row(row["method"], *([_point_label(row)] if points else []), diff, f"{row['wins']} of {row['n']}")
    return table


# --- cema check against a multi-seed baseline ----------------------------------------------------

def is_multi_seed(frame: pd.DataFrame) -> bool:
    """Some (method, domain, point) ran with several seeds (merged single runs are not)."""
    return bool(_groups(frame, CELL)["seed"].nunique().max() > 1)


def compare_seeds(baseline: pd.DataFrame, new: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per baseline (method, domain, point): REGRESSED when the new mean over seeds is below the
    baseline's lower 95% bound minus ``tolerance`` points. Other seeds of the same code stay inside
    the interval; a real drop of a few points falls out of it."""
    from cema_cli.errors import CemaError
    from cema_cli.results.saved import EPSILON_POINTS, SETTING_COLUMNS, check_same_setting

    if tolerance < 0:
        raise CemaError(f"--tolerance {tolerance:g} is negative; give the allowed drop in points, e.g. 0.5.")
    settings = baseline.drop_duplicates(CELL).merge(new.drop_duplicates(CELL), on=CELL, suffixes=("_baseline", "_new"))
    keys = {f"{c}{side}": settings[c] for c in CELL if c in SETTING_COLUMNS for side in ("_baseline", "_new")}  # equal: merged on
    check_same_setting(settings.assign(**keys, seed_new=settings["seed_baseline"]))  # the seeds differ by design
    old, fresh = summary_frame(baseline), summary_frame(new)
    old, fresh = (s[s["corruption"] != MEAN_DOMAIN] for s in (old, fresh))
    merged = old.merge(fresh, on=CELL, how="left", suffixes=("_baseline", "_new"))
    missing = merged[merged["mean_new"].isna()]
    if not missing.empty:
        first = missing.iloc[0]
        raise CemaError(f"the results have no row for {first['method']} {domain_label(first)} of the baseline; "
                        "run the baseline's methods, domains and channel points.")
    floor = merged["ci_low_baseline"] - tolerance / 100
    status = ["REGRESSED" if n < f - EPSILON_POINTS / 100 else "better" if n > h else "ok"
              for n, f, h in zip(merged["mean_new"], floor, merged["ci_high_baseline"])]
    return merged[CELL].assign(severity=merged["severity"].astype(int), accuracy_baseline=merged["mean_baseline"], accuracy_new=merged["mean_new"],
                               baseline_low=merged["ci_low_baseline"],
                               diff_points=100 * (merged["mean_new"] - merged["mean_baseline"]), status=status)


def seed_half_widths(summary: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``report.sweep_frame``'s summary with the 95% half-width over seeds of each (budget,
    method) mean accuracy (NaN with one seed): the error bars of ``cema plot``."""
    keyed = per_seed_means(frame).assign(budget=lambda f: f["uplink_budget_bytes"].astype("float").fillna(float("inf")))
    halves = {key: t_interval(list(g["accuracy"])).half_width for key, g in _groups(keyed, ["budget", "method"])}
    return summary.assign(half_width=[halves.get((b, m), math.nan) for b, m in zip(summary["budget"], summary["method"])])
