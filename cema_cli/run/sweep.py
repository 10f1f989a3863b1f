"""A study as a grid of independent cells, resumable and run by any executor (issue 11).

A cell is the unit of independence: under ``reset-each-shift`` one (method, corruption,
severity, seed, channel point, model pair); under ``continual`` one (method, seed, channel
point, model pair) over the whole domain order. A cell is a one-method RunConfig, so every
random draw derives from its configuration (``api.new_strategy`` seeds from ``config.seed``),
never from the worker that ran it. Its id is a hash of its canonical configuration.

Layout of an output folder::

    run.json   grid.json   results.csv   batches.csv   summary.csv
    cells/<id>/{cell.json, results.csv, batches.csv}

A finished cell's folder appears at once (written beside it, then renamed), so ``kill -9``
loses only the cells in flight; results.csv is rebuilt from the cell folders. No torch import
here: the worker's ``run_cell`` imports the API when it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from cema_cli.config import MACHINE_FIELDS, ChannelConfig, CostModel, RunConfig
from cema_cli.errors import CemaError
from cema_cli.results.run_folder import LOCK_NAME, refuse_live_holder
from cema_cli.results.schema import SCHEMA_VERSION
from cema_cli.run.record import StudyRecord, record_of

# Differ between two runs of the same cell; everything else in a row must be identical.
# (The modelled staleness and cost read the measured cloud seconds unless --cloud-throughput is given.)
TIMING_COLUMNS = ("seconds", "images_per_s", "threads", "cloud_seconds", "param_delay_seconds", "cloud_cost",
                  "data_wait_seconds", "loader_workers")  # the loader's workers follow the idle cores (threads.py)


@dataclass(frozen=True)
class Cell:
    """One independent run: a RunConfig with one method, seed and channel point."""

    config: RunConfig

    def canonical(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self.config).items() if k not in MACHINE_FIELDS}

    @property
    def id(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        config = self.config
        domains = f"{config.corruptions[0]}-{config.severities[0]}" if len(config.domains()) == 1 else f"{len(config.domains())} domains"
        budget = config.channel.uplink_budget_bytes
        return f"{config.methods[0]} {domains} seed {config.seed}" + ("" if budget is None else f" up {budget}B")


def split_config(config: RunConfig) -> list[RunConfig]:
    """A run's cells in compare's order: domain-major, then method. Only ``reset-each-shift``
    starts each domain afresh; every other protocol is one stream per method (one cell each)."""
    def one(method: str, **domain: Any) -> RunConfig:
        options = {method: config.method_options[method]} if method in config.method_options else {}
        return replace(config, methods=(method,), method_options=options, **domain)

    if config.protocol != "reset-each-shift":
        return [one(m) for m in config.methods]
    return [one(m, corruptions=(c,), severities=(s,)) for c, s in config.domains() for m in config.methods]


def cells_of(configs: Iterable[RunConfig]) -> list[Cell]:
    """Every cell of the runs, each once, in run order."""
    cells = {cell.id: cell for config in configs for cell in map(Cell, split_config(config))}
    return list(cells.values())


# --- cells whose result cannot depend on their channel point ----------------------------------

def channel_free(config: RunConfig) -> bool:
    """Nothing of this one-method cell crosses the channel: an edge-placed method (bn, source,
    lame, t3a, or ``placement=edge``), whose rows are the same at every budget, delay and sync
    period (tested). Imports the strategy registry (torch): the driver only."""
    from cema_cli.strategies import STRATEGIES
    from cema_cli.strategies.base import placements_of

    method = config.methods[0]
    placement = config.method_options.get(method, {}).get("placement", placements_of(STRATEGIES.get(method))[0])
    return str(placement).strip() == "edge"


def reused_cells(cells: list[Cell]) -> dict[str, Cell]:
    """Cells that run once for all channel points: id -> the cell of its group that runs (the
    first in grid order); the others take its rows (``SweepFolder.write_reused``)."""
    runners: dict[str, Cell] = {}
    reused = {}
    for cell in cells:
        if channel_free(cell.config):
            key = json.dumps({k: v for k, v in cell.canonical().items() if k != "channel"}, sort_keys=True, default=str)
            runner = runners.setdefault(key, cell)
            if runner is not cell:
                reused[cell.id] = runner
    return reused


def reused_rows(frame: pd.DataFrame, cell: Cell, runner: Cell) -> pd.DataFrame:
    """``runner``'s rows (or batch records) as ``cell``'s: its channel point, and where they come from."""
    channel = cell.config.channel
    values = {"uplink_budget_bytes": channel.uplink_budget_bytes, "downlink_budget_bytes": channel.downlink_budget_bytes}
    if "channel" in frame.columns:
        values["channel"] = frame["channel"].map(lambda recorded: reused_channel(channel, recorded))
    return frame.assign(**{k: v for k, v in values.items() if k in frame.columns}, reused_from=runner.id)


def reused_channel(channel: ChannelConfig, recorded: str) -> str:
    """The cell's channel as its own run records it: the uplink encoding resolved as the
    runner's run resolved it (``native`` -> the dataset's samples, run/assumptions.py)."""
    return json.dumps({**asdict(channel), "uplink_encoding": json.loads(recorded)["uplink_encoding"]}, sort_keys=True)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """The inverse of ``asdict`` for a RunConfig (as stored in grid.json)."""
    lists = {k: tuple(data[k]) for k in ("methods", "corruptions", "severities")}
    return RunConfig(**{**data, **lists, "channel": ChannelConfig(**data["channel"]), "costs": CostModel(**data.get("costs", {}))})


# --- running one cell (in a worker) ----------------------------------------------------------

@dataclass
class CellResult:
    """What a worker returns: the rows and batch records, or why the cell failed."""

    status: str  # "ok" or "failed"
    reason: str = ""
    seconds: float = 0.0
    threads: int = 1
    rows: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)


def run_cell(config: RunConfig, threads: int, layout: Any = None, *parts: Any) -> CellResult:
    """Run one cell with ``threads`` torch threads. ``layout`` and ``parts``: the shared read-only
    inputs the driver computed once (shared_inputs.py; None: the cell computes its own). An error
    of the run is returned as a failed result (recorded, not retried); a crash of the process is
    the executor's to handle."""
    from cema_cli.run.threads import apply_threads

    apply_threads(threads)
    from cema_cli.run.api import Events, run_benchmark
    from cema_cli.run.shared_inputs import assemble

    batches: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        inputs = assemble(config, layout, parts) if layout is not None else None
        rows = run_benchmark(config, Events(on_batch=lambda record: batches.append({**record, "seed": config.seed})), inputs)
    except Exception as error:  # noqa: BLE001 - a failed cell must not stop the sweep
        return CellResult("failed", f"{type(error).__name__}: {error}", time.perf_counter() - start, threads)
    return CellResult("ok", "", time.perf_counter() - start, threads, rows, batches)


# --- the output folder -----------------------------------------------------------------------

# What a study's folder holds besides unrelated files (--force replaces these).
STUDY_FILES = ("run.json", "grid.json", "results.csv", "batches.csv", "summary.csv")


class SweepFolder:
    """The cell folders, the merged files, the grid and the record of one study (record.py)."""

    def __init__(self, out: Path, note: Any = None) -> None:
        self.out = Path(out)
        self.cells_dir = self.out / "cells"
        self.frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}  # finished cells, read back from disk
        self.note = note or (lambda text: None)  # one line about a torn file set aside

    def holds_study(self) -> bool:
        return (self.out / "grid.json").exists() or self.cells_dir.is_dir()

    def check(self, force: bool = False) -> None:
        """Refuse, before anything is written: a file, a folder another live run holds, a `cema
        bench` folder, a study of another schema version, and (without --force) unrelated files."""
        if self.out.exists() and not self.out.is_dir():
            raise CemaError(f"--out {self.out} is a file; give a folder for the study (e.g. --out {self.out.with_suffix('')}-study).")
        if (self.out / LOCK_NAME).exists():
            refuse_live_holder(self.out)  # another sweep writes here now: say so first
        if not self.holds_study():
            if (self.out / "results.csv").exists() or (self.out / "run.json").exists():
                raise CemaError(f"{self.out} is a `cema bench/compare` folder, not a sweep; give a new --out folder.")
            if not force and self.out.is_dir() and any(p.name != LOCK_NAME for p in self.out.iterdir()):
                raise CemaError(f"--out {self.out} holds files that are not a cema study; give a new or empty --out, "
                                "or add --force to write the study beside them.")
            return
        for name in ("run.json", "grid.json"):
            found = self.read_json(name, required=name == "grid.json").get("schema_version", SCHEMA_VERSION)
            if found != SCHEMA_VERSION:
                raise CemaError(f"{self.out} was written by results schema version {found}; this cema writes version "
                                f"{SCHEMA_VERSION}. Resume it with the cema that wrote it, or give a new --out folder.")

    def read_json(self, name: str, required: bool) -> dict[str, Any]:
        """A JSON file of the folder ({} when absent). A torn grid.json is refused with the way
        out; a torn run.json is noted (the driver rewrites it)."""
        path = self.out / name
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as error:
            if required:
                raise CemaError(f"{path} is not valid JSON ({error}); move it aside and run the sweep again: the grid is "
                                f"rebuilt from the finished cells in {self.cells_dir}.") from None
            self.note(f"{path} is not valid JSON ({error}); it is written anew.")
            return {}

    def clear(self) -> None:
        """--force: replace a study's files and cells (unrelated files stay)."""
        for name in STUDY_FILES:
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.cells_dir, ignore_errors=True)

    def load_finished(self) -> set[str]:
        """Ids of the cells finished in an earlier run (their rows are read back); a cell whose
        files are torn is noted and runs again."""
        if self.cells_dir.is_dir():
            for folder in sorted(self.cells_dir.iterdir()):
                if folder.name.startswith(".") or not (folder / "cell.json").exists():
                    continue
                meta = self.cell_meta(folder)
                if meta.get("schema_version") != SCHEMA_VERSION:
                    raise CemaError(f"{folder} was written by results schema version {meta.get('schema_version')}; "
                                    f"this cema writes {SCHEMA_VERSION}. Give a new --out folder.")
                if meta.get("status") == "ok":
                    self.read_cell(folder)
        return set(self.frames)

    def cell_meta(self, folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / "cell.json").read_text())
        except (ValueError, UnicodeDecodeError) as error:
            self.note(f"{folder / 'cell.json'} is not valid JSON ({error}); that cell runs again.")
            return {"schema_version": SCHEMA_VERSION, "status": "torn"}

    def read_cell(self, folder: Path) -> None:
        try:
            self.frames[folder.name] = (pd.read_csv(folder / "results.csv"), pd.read_csv(folder / "batches.csv"))
        except (OSError, ValueError, pd.errors.ParserError) as error:
            self.note(f"{folder}: its rows cannot be read ({error}); that cell runs again.")

    def cell_seconds(self) -> list[float]:
        """Wall seconds of the finished cells that ran (for --dry-run's estimate)."""
        metas = [json.loads((self.cells_dir / i / "cell.json").read_text()) for i in self.frames]
        return [meta["seconds"] for meta in metas if not meta.get("reused_from")]

    def write_cell(self, cell: Cell, result: CellResult, reused_from: str | None = None) -> None:
        """cells/<id>/: written beside, then renamed, so it exists whole or not at all (a write
        that fails, e.g. on a full disk, leaves nothing beside)."""
        from cema_cli.results import report

        final = self.cells_dir / cell.id
        staging = self.cells_dir / f".{cell.id}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        meta = {"schema_version": SCHEMA_VERSION, "id": cell.id, "label": cell.label, "status": result.status,
                "reason": result.reason, "seconds": result.seconds, "threads": result.threads, "config": cell.canonical(),
                "reused_from": reused_from}
        try:
            staging.mkdir(parents=True)
            if result.status == "ok":
                report.write_csv(report.results_frame(result.rows), staging / "results.csv")
                report.write_csv(report.batches_frame(result.batches), staging / "batches.csv")
            report.write_json(meta, staging / "cell.json")
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)  # an earlier failed attempt
        os.replace(staging, final)
        if result.status == "ok":
            self.frames[cell.id] = (pd.read_csv(final / "results.csv"), pd.read_csv(final / "batches.csv"))

    def write_reused(self, cell: Cell, runner: Cell) -> None:
        """cells/<id>/ of a channel-free cell from its runner's finished rows (``reused_cells``)."""
        rows, batches = (reused_rows(frame, cell, runner) for frame in self.frames[runner.id])
        self.write_cell(cell, CellResult("ok", rows=rows.to_dict("records"), batches=batches.to_dict("records")), reused_from=runner.id)

    def merge(self, order: list[str]) -> pd.DataFrame:
        """results.csv, batches.csv and summary.csv from every finished cell: the grid's order
        first, then cells of earlier grids. Returns the merged rows."""
        from cema_cli.results import report
        from cema_cli.results.tables import summary_frame

        ids = [i for i in order if i in self.frames] + sorted(set(self.frames) - set(order))
        if not ids:
            return pd.DataFrame()
        rows = pd.concat([self.frames[i][0] for i in ids], ignore_index=True)
        report.write_csv(rows, self.out / "results.csv")
        report.write_csv(pd.concat([self.frames[i][1] for i in ids], ignore_index=True), self.out / "batches.csv")
        report.write_csv(summary_frame(rows), self.out / "summary.csv")
        return rows

    def stored_grid(self) -> list[Cell]:
        """The grid of every cell ever planned here; rebuilt from the finished cells when grid.json
        is gone (moved aside after a crash tore it)."""
        if not self.holds_study():
            raise CemaError(f"{self.out} holds no sweep (no grid.json); give the folder of an earlier `cema sweep --out`.")
        data = self.read_json("grid.json", required=True)
        if data:
            return [Cell(config_from_dict(config)) for config in data["cells"]]
        self.load_finished()
        return [Cell(config_from_dict(self.cell_meta(self.cells_dir / i)["config"])) for i in sorted(self.frames)]

    def study(self) -> StudyRecord | None:
        """The study's record (older folders: derived from their grid); None for a new folder."""
        if not self.holds_study():
            return None
        recorded = self.read_json("grid.json", required=True).get("study")
        cells = self.stored_grid()
        if recorded:
            return StudyRecord.from_json(recorded)
        return record_of([cell.config for cell in cells]) if cells else None

    def write_grid(self, cells: list[Cell], study: StudyRecord) -> None:
        """grid.json: the union of every grid run into this folder (so --resume needs no flags),
        and the study's record."""
        from cema_cli.results import report

        known = self.stored_grid() if self.holds_study() else []
        union = {c.id: c for c in [*known, *cells]}
        report.write_json({"schema_version": SCHEMA_VERSION, "cells": [asdict(c.config) for c in union.values()],
                           "study": study.to_json()}, self.out / "grid.json")
