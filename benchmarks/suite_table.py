"""The default benchmark's table, as the README shows it (not a test):

    cema sweep --suite embedded --versus bn --out suite && python benchmarks/suite_table.py suite

Per method: the seeds finished, mean accuracy over the seeds with its 95% Student-t interval, the paired gain over
bn (same seeds, same streams) with its interval, and the mean uploads per seed. Then every pair
of methods: separated when the 95% interval of their paired difference excludes 0 (the test the
seeds allow), and whether their own intervals overlap (a stricter reading). Markdown on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import math

import pandas as pd

from cema_cli.results.schema import read_results
from cema_cli.results.stats import t_interval

REFERENCE = "bn"


def per_seed(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """method x seed: the column summed over the domains' samples (accuracy: correct / samples)."""
    sums = frame.groupby(["method", "seed"], sort=False)[[column, "samples"]].sum()
    return (sums[column] / sums["samples"] if column == "correct" else sums[column]).unstack("seed")


def finite(values: pd.Series) -> list[float]:
    """The seeds that finished (a partial sweep folder leaves the others empty)."""
    return list(values.dropna())


def interval_text(values: list[float], sign: bool = False) -> str:
    t = t_interval(values)
    mean = f"{100 * t.mean:+.2f}" if sign else f"{100 * t.mean:.2f}"
    return mean if math.isnan(t.half_width) else f"{mean} ± {100 * t.half_width:.2f}"


def method_table(accuracy: pd.DataFrame, uploads: pd.DataFrame, samples: float) -> list[str]:
    lines = [f"| method | seeds | accuracy % (mean ± 95%) | gain over {REFERENCE} (points) | uploads per seed |", "|---|---:|---:|---:|---:|"]
    for method, row in accuracy.iterrows():
        gain = "" if method == REFERENCE else interval_text(finite(row - accuracy.loc[REFERENCE]), sign=True)
        lines.append(f"| {method} | {row.count()} | {interval_text(finite(row))} | {gain} | {uploads.loc[method].mean():,.0f} of {samples:,.0f} |")
    return lines


def separation(accuracy: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(pairs whose paired interval includes 0, pairs separated but whose own intervals overlap)."""
    unseparated, overlapping = [], []
    for a, b in itertools.combinations(accuracy.index, 2):
        diff = t_interval(finite(accuracy.loc[a] - accuracy.loc[b]))
        ia, ib = t_interval(finite(accuracy.loc[a])), t_interval(finite(accuracy.loc[b]))
        label = f"{a} vs {b} ({100 * diff.mean:+.2f} ± {100 * diff.half_width:.2f})"
        if diff.low <= 0 <= diff.high or math.isnan(diff.half_width):
            unseparated.append(label)
        elif ia.low <= ib.high and ib.low <= ia.high:
            overlapping.append(label)
    return unseparated, overlapping


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", help="a sweep folder (or results.csv) of cema sweep --suite embedded")
    frame = read_results(parser.parse_args().folder)
    accuracy, uploads = per_seed(frame, "correct"), per_seed(frame, "uploads")
    samples = frame.groupby(["method", "seed"])["samples"].sum().iloc[0]
    print("\n".join(method_table(accuracy, uploads, samples)))
    unseparated, overlapping = separation(accuracy)
    pairs = len(accuracy) * (len(accuracy) - 1) // 2
    print(f"\n{pairs - len(unseparated)} of {pairs} pairs separated (paired 95% interval excludes 0).")
    print("Not separated: " + ("; ".join(unseparated) or "none") + ".")
    print("Separated, but their own intervals overlap: " + ("; ".join(overlapping) or "none") + ".")


if __name__ == "__main__":
    main()
