"""The callbacks through which a run or a study reports what it does; the caller draws progress
and writes files from them (nothing in ``cema_cli/run`` prints). No torch import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Events:
    """Optional callbacks of one run (``api.run_benchmark``) or fleet."""

    on_row: Callable[[dict[str, Any]], None] = lambda row: None
    on_batch: Callable[[dict[str, Any]], None] = lambda record: None
    on_domain_start: Callable[[str, str, int, int], None] = lambda method, corruption, severity, batches: None
    on_model_progress: Callable[[str, int, int], None] | None = None


@dataclass
class StudyEvents(Events):
    """A study's callbacks (``study.run_study``): a run's or fleet's (above), and a grid's cells.
    ``on_cells(total, done, todo, plan)``: the grid is about to run; ``on_cell_start(slot, cell)``
    and ``on_cell_done(slot, cell, result)``: a worker slot took or finished a cell; ``on_note``:
    one line worth telling (a stale lock taken over, a torn file set aside)."""

    on_cells: Callable[[int, int, int, Any], None] = lambda total, done, todo, plan: None
    on_cell_start: Callable[[int, Any], None] = lambda slot, cell: None
    on_cell_done: Callable[[int, Any, Any], None] = lambda slot, cell, result: None
    on_note: Callable[[str], None] = lambda text: None


def also(first: Callable[..., None], second: Callable[..., None]) -> Callable[..., None]:
    """A callback that calls ``first``, then ``second``, with the same arguments."""

    def both(*args: Any) -> None:
        first(*args)
        second(*args)

    return both
