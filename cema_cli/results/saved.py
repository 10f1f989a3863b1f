"""Working with saved results: merge files, rebuild a run's configuration from its rows,
compare accuracy with a baseline, and a floor on mean accuracy. No torch import.

Every function takes frames read by :func:`cema_cli.results.schema.read_results` (schema checked).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from cema_cli.config import ChannelConfig, CostModel, RunConfig
from cema_cli.errors import CemaError, CheckFailed
from cema_cli.results.report import budget_label

KEY = ["method", "corruption", "severity"]
BUDGETS = ["uplink_budget_bytes", "downlink_budget_bytes"]  # a sweep has one row per budget point
# One row of a sweep's results.csv: seeds and channel points repeat a (method, domain).
ROW_KEY = [*KEY, "edge", "seed", "segment", "uplink_budget_bytes", "downlink_budget_bytes", "link"]  # link: --link simulated,live
# One value per run: rows that disagree on these cannot come from one `cema` invocation.
RUN_COLUMNS = ("dataset", "seed", "batch_size", "protocol", "edge_model", "cloud_model", "constants", "channel")
# Compared row by row between a baseline and new results: a difference means another setting.
SETTING_COLUMNS = ("dataset", "samples", "seed", "batch_size", "protocol", "edge_model", "cloud_model", "constants",
                   "channel", "method_config")
JSON_COLUMNS = ("channel", "method_config")
# The stream's parameters (shared/spec/streams.md), in rows written since they exist.
STREAM_COLUMNS = ("order", "dirichlet", "label_sampler", "gradual", "window")
EPSILON_POINTS = 1e-9


def row_label(row: Any) -> str:
    budget = row.get("uplink_budget_bytes")
    at = "" if budget is None or pd.isna(budget) else f" at {budget_label(budget)} uplink"
    return f"{row['method']} {row['corruption']}-{row['severity']}{at}"


# --- merging files (cema report) ---------------------------------------------------------------

def run_label(path: Path) -> str:
    """The run's name: its folder for a results.csv, else the file's stem."""
    path = Path(path)
    return path.name if path.is_dir() else path.parent.name if path.name == "results.csv" else path.stem


def merge_results(labelled: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Concatenate result files; when a (method, domain) occurs in several, tag methods with the run."""
    merged = pd.concat([frame for _, frame in labelled], ignore_index=True)
    key = [k for k in ROW_KEY if k in merged.columns]
    if pd.concat([frame[KEY].drop_duplicates() for _, frame in labelled]).duplicated().any():  # the same row in two files
        labels = [label for label, _ in labelled]
        if len(set(labels)) < len(labels):
            labels = [f"{index + 1}:{label}" for index, label in enumerate(labels)]
        merged = pd.concat([frame.assign(method=frame["method"] + f" ({label})") for label, (_, frame) in zip(labels, labelled)],
                           ignore_index=True)
    duplicated = merged[merged.duplicated(key)]
    if not duplicated.empty:
        raise CemaError(f"{row_label(duplicated.iloc[0])} occurs twice in one file; a results.csv holds one row per method and domain.")
    return merged


# --- rebuilding the configuration (cema check without --results) --------------------------------

def _plain(value: Any) -> Any:
    """numpy scalars -> Python; NaN (an empty CSV cell) -> None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def single_value(frame: pd.DataFrame, column: str) -> Any:
    values = list(dict.fromkeys(_plain(v) for v in frame[column]))
    if len(values) != 1:
        shown = ", ".join(repr(v) for v in values[:4])
        raise CemaError(f"cannot reproduce the baseline: its rows disagree on {column} ({shown}); "
                        "a baseline must be the results.csv of one run.")
    return values[0]


def _unique(frame: pd.DataFrame, column: str) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(_plain(v) for v in frame[column]))


def _require_full_grid(frame: pd.DataFrame, methods: tuple[str, ...], corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
    expected = len(methods) * len(corruptions) * len(severities)
    if len(frame) != expected or frame.duplicated(KEY).any():
        raise CemaError(f"cannot reproduce the baseline: its {len(frame)} rows are not every combination of "
                        f"{len(methods)} method(s) x {len(corruptions)} corruption(s) x {len(severities)} severity(ies); "
                        "was the run interrupted, or several files merged?")


def _json(text: Any, column: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise CemaError(f"cannot reproduce the baseline: its {column} column holds {text!r}, not a JSON object.") from None
    if not isinstance(value, dict):
        raise CemaError(f"cannot reproduce the baseline: its {column} column holds {text!r}, not a JSON object.")
    return value


def _channel(text: Any) -> ChannelConfig:
    try:
        return ChannelConfig(**_json(text, "channel"))
    except TypeError as error:
        raise CemaError(f"cannot reproduce the baseline: its channel settings do not fit this cema ({error}).") from None


def config_from_results(frame: pd.DataFrame, device: str = "auto", data_root: str | None = None) -> RunConfig:
    """The RunConfig that produced ``frame`` (one run's results.csv), not yet validated.

    ``device`` and ``data_root`` are not in the rows: they belong to the machine, not the result.
    """
    run = {column: single_value(frame, column) for column in RUN_COLUMNS}
    methods, corruptions = _unique(frame, "method"), _unique(frame, "corruption")
    severities = tuple(int(s) for s in _unique(frame, "severity"))
    if run["protocol"] == "gradual":  # the schedule sets the severities; segments repeat domains
        severities = (5,)
    else:
        _require_full_grid(frame, methods, corruptions, severities)
    options = {m: _json(single_value(frame[frame["method"] == m], "method_config"), "method_config") for m in methods}
    stream = {column: single_value(frame, column) for column in STREAM_COLUMNS if column in frame.columns}
    return RunConfig(
        methods=methods, dataset=run["dataset"], corruptions=corruptions, severities=severities,
        samples=_samples_cap(frame, run["protocol"]), batch_size=int(run["batch_size"]), seed=int(run["seed"]),
        edge=run["edge_model"], cloud=run["cloud_model"], device=device, protocol=run["protocol"],
        constants=run["constants"], data_root=data_root, channel=_channel(run["channel"]), method_options=options, **stream,
        costs=_costs(frame),
    )


def _costs(frame: pd.DataFrame) -> CostModel:
    """The cost assumptions (--cloud-throughput changes the parameter delay, so the accuracy);
    none for files written before the ``cost_model`` column."""
    if "cost_model" not in frame.columns:
        return CostModel()
    try:
        return CostModel(**_json(single_value(frame, "cost_model"), "cost_model"))
    except TypeError as error:
        raise CemaError(f"cannot reproduce the baseline: its cost_model does not fit this cema ({error}).") from None


# One configuration each: a multi-seed baseline repeats its grid per seed, channel point and model pair.
GRID_COLUMNS = ("seed", "channel", "edge_model", "cloud_model")


def configs_from_results(frame: pd.DataFrame, seeds: list[int] | None = None, device: str = "auto",
                         data_root: str | None = None) -> list[RunConfig]:
    """The RunConfigs of a sweep's or multi-seed run's rows, validated: one per (seed, channel
    point, model pair), each a full grid; with ``seeds``, the same grids on those seeds instead."""
    from dataclasses import replace

    columns = [c for c in GRID_COLUMNS if c in frame.columns]
    configs = [config_from_results(group, device, data_root).validate()
               for _, group in frame.groupby(columns, sort=False, dropna=False)]
    if seeds is not None:
        unique = {json.dumps(asdict(replace(c, seed=0)), sort_keys=True, default=str): c for c in configs}
        configs = [replace(c, seed=seed) for c in unique.values() for seed in seeds]
    return configs


def _samples_cap(frame: pd.DataFrame, protocol: str) -> int:
    """--samples: per domain, except a mixed stream's rows (one per source domain) share one cap."""
    if protocol.startswith("mixed"):
        return int(frame.groupby("method")["samples"].sum().max())
    return int(frame["samples"].max())


def row_key(*frames: pd.DataFrame) -> list[str]:
    """What identifies a row: (method, corruption, severity), plus, where every frame carries them,
    the segment (a gradual stream visits a domain more than once) and the budget point (a sweep)."""
    optional = ["segment", *BUDGETS]
    return KEY + [column for column in optional if all(column in frame.columns for frame in frames)]


# --- comparing with a baseline -------------------------------------------------------------------

def _setting_value(value: Any, column: str) -> Any:
    value = _plain(value)
    return json.loads(value) if column in JSON_COLUMNS and isinstance(value, str) else value


def check_same_setting(matched: pd.DataFrame) -> None:
    """``matched`` = baseline rows merged with new rows (suffixes _baseline/_new) on KEY."""
    for column in SETTING_COLUMNS:
        for _, row in matched.iterrows():
            old, new = (_setting_value(row[f"{column}{s}"], column) for s in ("_baseline", "_new"))
            if old != new:
                raise CemaError(f"the results do not come from the baseline's setting: {column} is {new!r} in the results "
                                f"and {old!r} in the baseline ({row_label(row)}); compare like with like, or regenerate the baseline.")


def compare_accuracy(baseline: pd.DataFrame, new: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """One row per baseline (method, domain): both accuracies, the difference in points, a status."""
    if not (math.isfinite(tolerance) and 0 <= tolerance <= 100):
        raise CemaError(f"--tolerance {tolerance:g} is not an allowed drop in percentage points (0-100); give e.g. 0.5.")
    key = row_key(baseline, new)
    for name, frame in (("baseline", baseline), ("results", new)):
        if frame.duplicated(key).any():
            raise CemaError(f"the {name} holds {row_label(frame[frame.duplicated(key)].iloc[0])} twice; give one run's results.csv.")
    columns = key + ["accuracy", *[c for c in SETTING_COLUMNS if c != "dataset"], "dataset"]
    merged = baseline[columns].merge(new[columns], on=key, how="left", suffixes=("_baseline", "_new"), indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    check_same_setting(merged[merged["_merge"] == "both"])
    if not missing.empty:
        names = ", ".join(row_label(row) for _, row in missing.head(5).iterrows())
        raise CemaError(f"the results have no row for {names} of the baseline; run the baseline's methods and domains.")
    diff = 100 * (merged["accuracy_new"] - merged["accuracy_baseline"])
    # `not d >= ...`: a difference that is not a number is a regression, never "ok".
    status = ["REGRESSED" if not d >= -tolerance - EPSILON_POINTS else "better" if d > tolerance else "ok" for d in diff]
    return merged[key + ["accuracy_baseline", "accuracy_new"]].assign(
        diff_points=diff, limit=merged["accuracy_baseline"] - tolerance / 100, rule="row", status=status)


def check_valid(frame: pd.DataFrame, source: str) -> None:
    """Raise Diverged (exit 3) when some new result's ``status`` is not 'ok': a diverged or
    collapsed stream is no accuracy to compare (the verdicts: cema_cli/results/health.py)."""
    from cema_cli.errors import Diverged

    from cema_cli.results.health import is_degraded

    if "status" not in frame.columns:
        return
    status = frame["status"].fillna("ok")
    bad = frame[(status != "ok") & ~status.map(is_degraded)]  # a degraded row is a measurement: compared
    if not bad.empty:
        names = "; ".join(f"{row_label(r)} seed {r['seed']}: {r['status']}" for _, r in bad.head(5).iterrows())
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise Diverged(f"{len(bad)} result(s) of {source} are not valid, so their accuracy is no measurement: "
                       f"{names}{more}; the code under test diverged or collapsed (rows kept with their status).")


def fail_on_regression(diff: pd.DataFrame, tolerance: float) -> None:
    regressed = diff[diff["status"] == "REGRESSED"]
    if not regressed.empty:
        names = "; ".join(f"{row_label(r)} {100 * r['accuracy_baseline']:.2f}% -> {100 * r['accuracy_new']:.2f}% "
                          f"({r['diff_points']:+.2f})" for _, r in regressed.iterrows())
        raise CheckFailed(f"accuracy regressed by more than {tolerance:g} points: {names}.")


# --- a floor on accuracy (cema bench --min-accuracy) --------------------------------------------

def checked_min_accuracy(minimum_percent: float | None) -> float | None:
    """--min-accuracy is in percent, as the tables print; a value in (0, 1] reads as a fraction
    (as results.csv stores) just as well, so it is refused rather than guessed."""
    if minimum_percent is None:
        return None
    if not (math.isfinite(minimum_percent) and 0 <= minimum_percent <= 100):
        raise CemaError(f"--min-accuracy {minimum_percent:g} is not a percentage; give e.g. 90 for 90%.")
    if 0 < minimum_percent <= 1:
        raise CemaError(f"--min-accuracy {minimum_percent:g} is ambiguous: it is in percent, so this means "
                        f"{minimum_percent:g}%; for {100 * minimum_percent:g}% write --min-accuracy {100 * minimum_percent:g}.")
    return minimum_percent


def check_min_accuracy(frame: pd.DataFrame, minimum_percent: float | None) -> None:
    """Exit 1 (CheckFailed) when a method's mean accuracy over the domains is below the floor
    (or not a number at all)."""
    if checked_min_accuracy(minimum_percent) is None:
        return
    means = frame.groupby("method", sort=False)["accuracy"].mean() * 100
    low = [f"{method} {mean:.2f}%" for method, mean in means.items() if not mean >= minimum_percent]
    if low:
        raise CheckFailed(f"mean accuracy below --min-accuracy {minimum_percent:g}%: {', '.join(low)}.")


def check_finished(rows: list[dict[str, Any]], frame: pd.DataFrame, min_accuracy: float | None) -> None:
    """The exit status of finished rows: 3 when some result is not valid, then 1 below
    --min-accuracy, then 4 when some result is degraded (cema_cli/results/health.py)."""
    from cema_cli.results.health import check_degraded, check_status

    check_status(rows)
    check_min_accuracy(frame, min_accuracy)
    check_degraded(rows)
