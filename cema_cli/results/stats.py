"""Uncertainty of accuracies: Student-t intervals over seeds, paired differences, and Wilson
intervals for one run's accuracy from its sample count. Pure Python, no torch, no scipy.

All intervals are two-sided 95%. Over 3-5 seeds the t interval is the honest choice (a
bootstrap over so few values understates the spread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_975 = 1.959963984540054  # the standard normal's 97.5% quantile
# Student-t 97.5% quantiles for 1..30 degrees of freedom (checked against scipy in the tests).
T_975 = (
    12.706204736, 4.30265273, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252, 2.306004135,
    2.262157163, 2.228138852, 2.20098516, 2.17881283, 2.160368656, 2.144786688, 2.131449546, 2.119905299,
    2.109815578, 2.10092204, 2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.06865761, 2.063898562,
    2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)


def t_quantile_975(df: int) -> float:
    """The t distribution's 97.5% quantile: the table up to 30 df, then the Cornish-Fisher
    expansion around the normal quantile (error below 1e-6 from 31 df on)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    terms = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


@dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation and the 95% interval of ``n`` values."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_interval(values: Sequence[float]) -> Interval:
    """Student-t 95% interval of the mean; with one value the interval is unknown (NaN)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``correct / total`` (test-set sampling error)."""
    if total <= 0:
        return (math.nan, math.nan)
    p, z2 = correct / total, Z_975**2
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = Z_975 / (1 + z2 / total) * math.sqrt(p * (1 - p) / total + z2 / (4 * total**2))
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Paired:
    """A method against a reference on the same seeds: the differences' interval and the wins."""

    difference: Interval
    wins: int


def paired_difference(values: Sequence[float], reference: Sequence[float]) -> Paired:
    """Per-seed differences ``values[i] - reference[i]``: their t interval and how many are > 0."""
    if len(values) != len(reference):
        raise ValueError("paired values need one reference value per seed")
    diffs = [v - r for v, r in zip(values, reference)]
    return Paired(t_interval(diffs), sum(d > 0 for d in diffs))
