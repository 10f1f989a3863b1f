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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from cema_cli.errors import Diverged

OK = "ok"
COLLAPSE_SHARE = 0.9
COLLAPSE_EVIDENCE = 10


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


def check_status(rows: Iterable[dict[str, Any]]) -> None:
    """Raise Diverged (exit 3), naming every result whose status is not 'ok'."""
    bad = [f"{row['method']} {row['corruption']}-{row['severity']}: {row['status']}"
           for row in rows if row.get("status", OK) != OK]
    if bad:
        raise Diverged(f"{len(bad)} result(s) are not valid: {'; '.join(bad)}. The rows are kept with their status "
                       "in results.csv; lower the learning rate, or check the weights (--edge-checkpoint).")
