"""Is a result valid? The verdict on one (method, domain) stream, written to the row's ``status``
column, and the run-level check the CLI maps to exit code 3 (``errors.Diverged``). No torch import.

A stream *diverged* when the logits the engine scored were not all finite (the batch is named),
or when a model the strategy adapts ends the domain with a non-finite parameter or buffer (a
non-finite loss shows up here: the optimiser step writes it into the parameters).

A stream *collapsed* when, from some batch to its end, its predictions crowd onto one or two
classes far beyond what the true labels of the same samples do. Over that stretch both must hold:
  1. at least ``collapse_share`` (default 0.9) of the predictions fall in the two most
     predicted classes;
  2. the labels leave at least ``COLLAPSE_EVIDENCE`` (10) samples outside their own two most
     frequent classes, and at least twice as many as the predictions do.
The stretch starts after the first batch, which every strategy scores before adapting; if that
first batch already put ``collapse_share`` of its predictions in the stretch's two crowded
classes, the collapse is the source model's own behaviour on this shift (a measurement, not a
failure; e.g. the embedded model on gaussian_noise-5, on any stream order) and is not flagged.
So a collapse is one the adaptation caused, found from where it began; a stream whose labels
are concentrated (label shift) is judged against its own labels; and a
stretch too short to tell (fewer than 10 samples outside two classes) is never flagged.

A finite, uncollapsed stream is *degraded* when its accuracy is far below what the same stream
gives without learning, or near chance while that reference is not (``degraded_status``). The
reference is the better of ``source`` (the edge model as shipped) and ``bn`` (its BatchNorm with
each test batch's statistics) run on the same batches; ``bn`` is held against ``source`` alone,
and ``source`` against nothing. Chance is the share of the stream's most frequent label. With R
the reference and A the accuracy (points):
  1. far below: R - A >= ``DEGRADED_DROP`` (10 points);
  2. near chance: A <= chance + ``NEAR_CHANCE`` (5 points) and R - A >= ``NEAR_CHANCE``.
A degraded row is a measurement (its numbers are kept and compared), flagged: exit 4.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from cema_cli.errors import Degraded, Diverged

OK = "ok"
DEGRADED = "degraded"
COLLAPSE_SHARE = 0.9
COLLAPSE_EVIDENCE = 10
DEGRADED_DROP = 0.10  # accuracy (a fraction) below the reference that flags a row
NEAR_CHANCE = 0.05
# The no-learning references, and the ones each is held against (itself excluded).
REFERENCE_METHODS = ("source", "bn")


def outside_top(counts: Counter, k: int) -> int:
    """How many samples lie outside the ``k`` most frequent classes."""
    return sum(counts.values()) - sum(n for _, n in counts.most_common(k))


def top_share(counts: Counter, k: int) -> float:
    """The share of samples in the ``k`` most frequent classes."""
    total = sum(counts.values())
    return 1 - outside_top(counts, k) / total if total else 0.0


def collapsed(predicted: Counter, labels: Counter, share: float) -> bool:
    """Conditions 1 and 2 of the module doc on one stretch of the stream."""
    pred_out = outside_top(predicted, 2)
    return top_share(predicted, 2) >= share and outside_top(labels, 2) >= max(COLLAPSE_EVIDENCE, 2 * pred_out)


def collapse_status(batches: list[tuple[Counter, Counter]], share: float = COLLAPSE_SHARE) -> str:
    """'collapsed: 98% of predictions in 2 classes from batch 5 (labels: 21%)' for the longest
    collapsed stretch that ends the stream, or 'ok'. ``batches``: (predicted, label) class counts."""
    start = collapse_start(batches, share)
    if start is None:
        return OK
    predicted = sum((p for p, _ in batches[start:]), Counter())
    labels = sum((l for _, l in batches[start:]), Counter())
    crowded = {c for c, _ in predicted.most_common(2)}
    first = batches[0][0]
    if sum(first[c] for c in crowded) >= share * sum(first.values()):  # so before adapting: the source model's behaviour
        return OK
    classes = 1 if top_share(predicted, 1) >= share else 2
    return (f"collapsed: {top_share(predicted, classes):.0%} of predictions in {classes} class{'es' if classes > 1 else ''} "
            f"from batch {start + 1} (labels: {top_share(labels, classes):.0%})")


def collapse_start(batches: list[tuple[Counter, Counter]], share: float) -> int | None:
    """The earliest batch after the first (scored before any adaptation) from which the rest of
    the stream is collapsed; None if no such stretch."""
    predicted, labels, start = Counter(), Counter(), None
    for index in range(len(batches) - 1, 0, -1):  # every stretch that ends the stream, shortest first
        predicted.update(batches[index][0])
        labels.update(batches[index][1])
        if collapsed(predicted, labels, share):
            start = index
    return start


def references_for(method: str) -> tuple[str, ...]:
    """The reference methods a row of ``method`` is held against: none for ``source``."""
    return REFERENCE_METHODS[: REFERENCE_METHODS.index(method)] if method in REFERENCE_METHODS else REFERENCE_METHODS


def degraded_status(accuracy: float, reference: tuple[str, float] | None, chance: float) -> str:
    """'degraded: ...' with the numbers compared (rules 1 and 2 of the module doc), or 'ok'.
    ``reference``: (method, accuracy) of the better reference on the same stream; None: none."""
    if reference is None:
        return OK
    name, ref = reference
    drop = round(ref - accuracy, 9)  # fractions: 0.1 points below must not miss by a rounding bit
    against = f"{100 * drop:.1f} points below {name} ({100 * ref:.1f}%) on the same stream"
    if drop >= DEGRADED_DROP:
        return f"{DEGRADED}: {100 * accuracy:.1f}% is {against}"
    if accuracy <= chance + NEAR_CHANCE and drop >= NEAR_CHANCE:
        return f"{DEGRADED}: {100 * accuracy:.1f}% is near chance ({100 * chance:.1f}%) and {against}"
    return OK


def is_degraded(status: Any) -> bool:
    return str(status).startswith(DEGRADED)


def row_name(row: dict[str, Any]) -> str:
    """'cema snow-5', with the edge of a fleet's row: 'cema edge 1 snow-5'."""
    edge = row.get("edge")
    at = "" if edge is None or edge != edge else f" edge {int(edge)}"  # NaN: a single-edge row in a merged file
    return f"{row['method']}{at} {row['corruption']}-{row['severity']}"


def _bad(rows: Iterable[dict[str, Any]], degraded: bool) -> list[str]:
    return [f"{row_name(row)}: {row['status']}" for row in rows
            if row.get("status", OK) != OK and is_degraded(row.get("status")) == degraded]


def check_status(rows: Iterable[dict[str, Any]]) -> None:
    """Raise Diverged (exit 3), naming every result that is not valid (diverged, collapsed)."""
    bad = _bad(rows, degraded=False)
    if bad:
        raise Diverged(f"{len(bad)} result(s) are not valid: {'; '.join(bad)}. The rows are kept with their status "
                       "in results.csv; lower the learning rate, or check the weights (--edge-checkpoint).")


def check_degraded(rows: Iterable[dict[str, Any]]) -> None:
    """Raise Degraded (exit 4), naming every degraded result (after the other checks)."""
    bad = _bad(rows, degraded=True)
    if bad:
        shown = "; ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        raise Degraded(f"{len(bad)} result(s) are degraded: {shown}. The numbers are kept in results.csv; the rule is in "
                       "the README (\"Statuses\").")
