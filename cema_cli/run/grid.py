"""A study as a grid of resumable cells, run into its folder (``study.run_study`` calls these).

``plan_grid`` checks everything before anything is written: the folder (sweep.py), the study's
record (record.py: a resume that changes a fixed setting is refused, naming each difference),
the remembered ``versus``, and which cells are already finished. ``run_grid`` then locks the
folder (a second writer is refused, a dead one's lock taken over with a note), records the
grid's growth, runs the missing cells with an executor, writes each finished cell and merges
them, and keeps run.json current. Progress goes to ``StudyEvents``; nothing here prints. No
torch import.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cema_cli.config import RunConfig
from cema_cli.errors import CemaError
from cema_cli.results.run_folder import acquire_lock
from cema_cli.run.events import StudyEvents
from cema_cli.run.executors import Plan, make_plan, run_cells
from cema_cli.run.record import StudyRecord, differences, growth, merged, record_of
from cema_cli.run.runner import end_status, interrupted, sigterm_as_interrupt
from cema_cli.run.sweep import Cell, CellResult, SweepFolder, cells_of, reused_cells

MERGE_EVERY_S = 2.0  # results.csv is rebuilt at most this often while cells finish (and at the end)


@dataclass
class GridPlan:
    """What a grid run will do: every cell of the grid, those still to run, who runs them, and
    the study's record once they ran (its growth in ``added``)."""

    folder: SweepFolder
    cells: list[Cell]
    todo: list[Cell]
    plan: Plan
    record: StudyRecord
    added: dict[str, list[Any]]
    force: bool = False

    @property
    def done(self) -> int:
        return len(self.cells) - len(self.todo)

    @property
    def reused(self) -> dict[str, Cell]:
        """Channel-free cells (edge-only methods) that take the rows of one run at another channel point."""
        return reused_cells(self.cells)

    @property
    def runs(self) -> list[Cell]:
        """The cells still to run that really run (the others reuse an edge-only run)."""
        return [cell for cell in self.todo if cell.id not in self.reused]

    def eta_seconds(self) -> float | None:
        """The mean wall time of the finished cells x the cells to run / the workers (None: no cell finished yet)."""
        seconds = self.folder.cell_seconds()
        return sum(seconds) / len(seconds) * len(self.runs) / self.plan.workers if seconds else None


def plan_grid(configs: list[RunConfig], out: Path, execution: Any, versus: str | None, resume: bool, force: bool,
              note: Any) -> GridPlan:
    """Check the folder, the record and ``versus``; find the finished cells. ``configs`` empty:
    the study already in ``out``, as it is."""
    folder = SweepFolder(out, note)
    if resume and force:
        raise CemaError("--resume continues a study and --force replaces it; give one of them.")
    if resume and not folder.holds_study():
        raise CemaError(f"--resume {out}: no study there (no grid.json or cells/); give the folder of an earlier "
                        "`cema sweep --out`, or start one with --out.")
    folder.check(force)
    study = None if force else folder.study()
    cells = cells_of(configs) if configs else folder.stored_grid()
    if not cells:
        raise CemaError("the grid is empty: no method, domain, seed or channel point to run.")
    grid = record_of([cell.config for cell in cells])
    record = grown(study, grid, out)
    record.versus = versus or record.versus
    check_versus(record)
    finished = set() if force else folder.load_finished()
    todo = [cell for cell in cells if cell.id not in finished]
    runs = [cell for cell in todo if cell.id not in reused_cells(cells)]  # the others reuse an edge-only run
    plan = make_plan(execution.executor, len(runs), cells[0].config.device, execution.threads, execution.cpus_per_cell,
                     execution.gpus_per_cell, execution.ray_address)
    return GridPlan(folder, cells, todo, plan, record, growth(study, grid) if study else {}, force)


def grown(study: StudyRecord | None, grid: StudyRecord, out: Path) -> StudyRecord:
    """The study with the grid's new axis values; a grid that changes a fixed setting is refused."""
    if study is None:
        return grid
    changed = differences(study, grid)
    if changed:
        raise CemaError(f"{out} is a study of fixed settings, and this command changes them: {'; '.join(changed)}. "
                        "Drop those flags to resume it (new methods, domains, seeds and budgets may be added), "
                        "or give a new --out for the new settings.")
    return merged(study, grid)


def check_versus(record: StudyRecord) -> None:
    methods = record.axes["methods"]
    if record.versus is not None and record.versus not in methods:
        raise CemaError(f"--versus {record.versus} is not a method of the study ({', '.join(methods)}); "
                        "pick one of them, or drop --versus.")


def run_grid(grid: GridPlan, events: StudyEvents, command: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Lock the folder, record the grid, run the missing cells; return the merged rows and the
    failed cells. The lock goes whatever happens."""
    folder = grid.folder
    created = not folder.out.exists()
    folder.out.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(folder.out)
    if lock.note():
        events.on_note(lock.note())
    try:
        if grid.force:
            folder.clear()
        grid.record.history.append({"started": now(), "command": command, "cells": len(grid.cells), "to_run": len(grid.todo),
                                    "added": grid.added})
        folder.write_grid(grid.cells, grid.record)
        driver = Driver(folder, grid.cells, grid.plan, command, events)
        with sigterm_as_interrupt():
            driver.run(grid.todo)
        return folder.merge(driver.order), driver.failed
    finally:
        lock.release()
        if created and not any(folder.out.iterdir()):  # stopped before anything was written (a full disk)
            folder.out.rmdir()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Driver:
    """Runs the missing cells of a grid into a SweepFolder, reporting to StudyEvents."""

    def __init__(self, folder: SweepFolder, cells: list[Cell], plan: Plan, command: str, events: StudyEvents) -> None:
        self.folder, self.cells, self.plan, self.events = folder, cells, plan, events
        self.order = [c.id for c in cells]
        self.reused = reused_cells(cells)  # channel-free cells: id -> the cell that runs for them
        self.failed: dict[str, str] = {}
        self.meta = {"schema_version": None, "command": command, "executor": plan.executor, "workers": plan.workers,
                     "threads": plan.threads, "cells": len(cells), "started": now(), "pid": os.getpid(), "host": socket.gethostname()}
        self.sessions = earlier_sessions(folder.out)
        self.session: dict[str, Any] = {}
        self.last_merge = 0.0

    def write_meta(self, **updates: Any) -> None:
        from cema_cli.results import report
        from cema_cli.results.schema import SCHEMA_VERSION

        self.meta.update(updates, schema_version=SCHEMA_VERSION, done=len(set(self.order) & set(self.folder.frames)),
                         failed=self.failed)
        self.session.update({k: self.meta[k] for k in ("status", "pid", "host", "started", "finished") if k in self.meta})
        report.write_json({**self.meta, "sessions": [*self.sessions, self.session]}, self.folder.out / "run.json")

    def run(self, todo: list[Cell]) -> None:
        self.session.update(missing=len(todo), ran=0, reused=0)
        self.write_meta(status="running")
        self.reuse_finished(todo)
        todo = [cell for cell in todo if cell.id not in self.reused]
        runs = len(self.cells) - len(self.reused)  # the progress counts the cells that run
        self.events.on_cells(runs, runs - len(todo), len(todo), self.plan)
        try:
            run_cells(self.plan, todo, self.events.on_cell_start, self.on_done)
        except BaseException as error:
            self.stopped(error)
            if isinstance(error, KeyboardInterrupt):
                raise interrupted(error, len(self.folder.frames), self.folder.out, "cell") from None
            raise
        self.folder.merge(self.order)
        self.write_meta(status="complete" if not self.failed else "failed cells", finished=now())

    def stopped(self, error: BaseException) -> None:
        """Merge what finished and say why the run stopped, as far as the disk allows."""
        try:
            self.folder.merge(self.order)
            self.write_meta(**end_status(error))
        except OSError:
            pass  # a full disk: the error being raised names the file that failed

    def reuse_finished(self, todo: list[Cell]) -> None:
        """Missing channel-free cells whose runner has finished take its rows now."""
        for cell in todo:
            runner = self.reused.get(cell.id)
            if runner is not None and runner.id in self.folder.frames:
                self.folder.write_reused(cell, runner)
                self.session["reused"] += 1

    def on_done(self, slot: int, cell: Cell, result: CellResult) -> None:
        """Write the cell's folder (and those of the cells that reuse its rows); merge into
        results.csv at most every 2 s (and at the end)."""
        self.folder.write_cell(cell, result)
        self.session["ran"] += 1
        if result.status != "ok":
            self.failed[cell.id] = f"{cell.label}: {result.reason}"
        else:
            self.reuse_finished([c for c in self.cells if getattr(self.reused.get(c.id), "id", None) == cell.id])
        if time.monotonic() - self.last_merge > MERGE_EVERY_S:
            self.folder.merge(self.order)
            self.write_meta()
            self.last_merge = time.monotonic()
        self.events.on_cell_done(slot, cell, result)


def earlier_sessions(out: Path) -> list[dict[str, Any]]:
    """The drivers that wrote this study before (run.json ``sessions``): what each found missing,
    ran and reused, and how it ended; one whose process is gone while "running" crashed."""
    import json

    from cema_cli.results.run_folder import with_crashes

    try:
        return with_crashes(json.loads((out / "run.json").read_text()).get("sessions", []))
    except (OSError, ValueError, AttributeError):
        return []
