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

from cema_cli.results.report import FoldingTable, budget_label, domain_label, invalid_rows, short, shown, status_notes, status_text
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
    """One row per (method, point, seed): accuracy averaged over the domains of that seed (rows
    of different settings are refused, never pooled: ``check_poolable``)."""
    check_poolable(frame)
    return _groups(frame, ["method", *POINT, "seed"])["accuracy"].mean().reset_index()


# What rows pooled over seeds must share: the settings of one study (run/record.py), as rows record them.
POOLED_ALIKE = ("dataset", "batch_size", "protocol", "preset", "constants", "order", "dirichlet", "label_sampler", "gradual",
                "window", "method_config", "edge_weights", "cloud_weights")
FIXED_SIZE_PROTOCOLS = ("reset-each-shift", "continual", "gradual")  # each domain plays min(--samples, its size)
REPEATS = ("seed", "segment", "edge")  # a row's key within a (method, domain, point): its seed, stream segment and fleet edge


def check_poolable(frame: pd.DataFrame) -> None:
    """Refuse rows whose seeds would pool two settings: a (method, domain, point) whose seed occurs
    twice (e.g. a study re-run with another --samples), or whose fixed settings differ."""
    from cema_cli.errors import CemaError

    fixed = [c for c in POOLED_ALIKE if c in frame.columns]
    if "samples" in frame.columns and frame.get("protocol", pd.Series(dtype=str)).isin(FIXED_SIZE_PROTOCOLS).all():
        fixed.append("samples")  # elsewhere a domain's share of a stream may depend on the seed
    for key, group in _groups(frame, CELL):
        repeats = [c for c in REPEATS if c in group.columns]
        differing = [c for c in fixed if group[c].nunique(dropna=False) > 1]
        if differing or group.duplicated(repeats).any():
            shown = ", ".join(f"{c} {sorted(map(str, group[c].unique()))}" for c in differing) or f"seed {group['seed'].iloc[0]} twice"
            raise CemaError(f"{key[0]} {key[1]}-{key[2]}: the rows come from different settings ({shown}); seed statistics "
                            "never pool them. Report each study's results.csv on its own, or rerun into a new --out.")


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


def _pm(mean: float, half: float, metric: str = "accuracy") -> str:
    return f"{shown(mean, metric):.2f}" + ("" if math.isnan(half) else f" ± {100 * half:.2f}")


def seed_table(frame: pd.DataFrame, metric: str = "accuracy") -> Table:
    """Mean accuracy over domains per method (and point): mean +- 95% half-width over seeds."""
    summary = summary_frame(frame)
    means = summary[summary["corruption"] == MEAN_DOMAIN]
    caption = "\n".join(["± = 95% interval: Student-t over seeds; Wilson from the sample count for one run", *status_notes(frame)])
    points = several_points(frame)
    headline = f"{short(metric)} % ± 95%"
    table = FoldingTable(title=f"{metric} over seeds (mean over domains)", box=box.SIMPLE_HEAD, caption=caption, keys=1 + points,
                         lead=(headline, "status"))
    invalid = not invalid_rows(frame).empty
    for name in ("method", *(["point"] if points else []), "seeds", headline, "std", *(["status"] if invalid else [])):
        table.add_column(name, justify="left" if name in ("method", "point", "status") else "right")
    statuses = [status_text(g) for _, g in _groups(frame, ["method", *POINT])]  # summary_frame's order
    for (_, row), status_cell in zip(means.iterrows(), statuses):
        std = "-" if math.isnan(row["std"]) else f"{100 * row['std']:.2f}"
        status = [status_cell] if invalid else []
        table.add_row(row["method"], *([_point_label(row)] if points else []), str(row["n"]), _pm(row["mean"], row["half_width"], metric), std, *status)
    return table


def seed_domain_table(frame: pd.DataFrame, metric: str = "accuracy") -> Table:
    """Accuracy % per method (rows) and domain (columns), mean +- half-width over seeds."""
    summary = summary_frame(frame)
    cells = summary[summary["corruption"] != MEAN_DOMAIN]
    cells = cells.assign(domain=cells.apply(lambda r: domain_label({**r, "severity": int(r["severity"])}), axis=1))
    keys = ["method", *(["point"] if several_points(frame) else [])]
    cells = cells.assign(point=cells.apply(_point_label, axis=1))
    domains = list(dict.fromkeys(cells["domain"]))
    table = FoldingTable(title=f"{metric} % per domain over seeds (mean ± 95%)", box=box.SIMPLE_HEAD, caption="\n".join(status_notes(frame)) or None,
                         keys=len(keys))
    for name in (*keys, *domains):
        table.add_column(name, justify="left" if name in keys else "right")
    for key, group in _groups(cells, keys):
        by_domain = dict(zip(group["domain"], (_pm(m, h, metric) for m, h in zip(group["mean"], group["half_width"]))))
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
    table = FoldingTable(title=f"paired difference to {reference}", box=box.SIMPLE_HEAD, keys=1 + points,
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
    """Per baseline (method, domain, point), one of two rules, named in the ``rule`` column:

    - ``paired`` when the new results hold every seed of the baseline (a re-run of the same seeds):
      the seeds cancel out, so the mean over those seeds of (new - baseline) must not fall below
      ``-tolerance`` points, exactly as one run's rows are compared;
    - ``interval`` otherwise (other seeds): the new mean over its seeds must not fall below the
      baseline's lower 95% bound minus ``tolerance`` points (other seeds of the same code stay
      inside the interval; a real drop of a few points falls out of it).

    ``limit`` is the accuracy the new mean was held against. Holding a re-run of the same seeds
    to the interval (as before) passed real drops of 1.4-1.6 points as "within 0.5 points"."""
    from cema_cli.errors import CemaError
    from cema_cli.results.saved import SETTING_COLUMNS, check_same_setting

    if tolerance < 0:
        raise CemaError(f"--tolerance {tolerance:g} is negative; give the allowed drop in points, e.g. 0.5.")
    settings = baseline.drop_duplicates(CELL).merge(new.drop_duplicates(CELL), on=CELL, suffixes=("_baseline", "_new"))
    keys = {f"{c}{side}": settings[c] for c in CELL if c in SETTING_COLUMNS for side in ("_baseline", "_new")}  # equal: merged on
    check_same_setting(settings.assign(**keys, seed_new=settings["seed_baseline"]))  # the seeds differ by design
    old = summary_frame(baseline)
    old = old[old["corruption"] != MEAN_DOMAIN]
    return pd.DataFrame([_seed_verdict(row, _cell_rows(baseline, row), _cell_rows(new, row), tolerance) for _, row in old.iterrows()])


def _cell_rows(frame: pd.DataFrame, cell: pd.Series) -> pd.DataFrame:
    """The rows of one (method, domain, point) of ``frame``, by seed."""
    keyed = frame.assign(**{c: None for c in POINT if c not in frame.columns})
    same = pd.Series(True, index=keyed.index)
    for column in CELL:
        value = cell[column]
        same &= keyed[column].isna() if pd.isna(value) else keyed[column] == value
    return keyed[same].groupby("seed")["accuracy"].mean()


def _seed_verdict(cell: pd.Series, old: pd.Series, fresh: pd.Series, tolerance: float) -> dict:
    from cema_cli.errors import CemaError
    from cema_cli.results.saved import EPSILON_POINTS

    if fresh.empty:
        raise CemaError(f"the results have no row for {cell['method']} {domain_label({**cell, 'severity': int(cell['severity'])})} "
                        "of the baseline; run the baseline's methods, domains and channel points.")
    paired = set(old.index) <= set(fresh.index)
    new_mean = fresh[old.index].mean() if paired else fresh.mean()
    limit = old.mean() - tolerance / 100 if paired else cell["ci_low"] - tolerance / 100
    high = old.mean() + tolerance / 100 if paired else cell["ci_high"]
    status = "REGRESSED" if not new_mean >= limit - EPSILON_POINTS / 100 else "better" if new_mean > high else "ok"
    return {**{c: cell[c] for c in CELL}, "severity": int(cell["severity"]), "accuracy_baseline": old.mean(),
            "accuracy_new": new_mean, "diff_points": 100 * (new_mean - old.mean()), "limit": limit,
            "rule": "paired" if paired else "interval", "seeds_baseline": ",".join(map(str, old.index)),
            "seeds_new": ",".join(map(str, fresh.index)), "status": status}


def seed_half_widths(summary: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``report.sweep_frame``'s summary with the 95% half-width over seeds of each (budget,
    method) mean accuracy (NaN with one seed): the error bars of ``cema plot``."""
    keyed = per_seed_means(frame).assign(budget=lambda f: f["uplink_budget_bytes"].astype("float").fillna(float("inf")))
    halves = {key: t_interval(list(g["accuracy"])).half_width for key, g in _groups(keyed, ["budget", "method"])}
    return summary.assign(half_width=[halves.get((b, m), math.nan) for b, m in zip(summary["budget"], summary["method"])])
