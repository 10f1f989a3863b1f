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

from cema_cli.config import ChannelConfig, CostModel, RunConfig
from cema_cli.errors import CemaError
from cema_cli.results.schema import SCHEMA_VERSION

# Where the run happens, not what it computes: left out of a cell's id.
MACHINE_FIELDS = ("device", "workers", "data_root", "clean_root")
# Differ between two runs of the same cell; everything else in a row must be identical.
# (The modelled staleness and cost read the measured cloud seconds unless --cloud-throughput is given.)
TIMING_COLUMNS = ("seconds", "images_per_s", "threads", "cloud_seconds", "param_delay_seconds", "cloud_cost")


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
    """A run's cells in compare's order: domain-major, then method (continual: one per method)."""
    def one(method: str, **domain: Any) -> RunConfig:
        options = {method: config.method_options[method]} if method in config.method_options else {}
        return replace(config, methods=(method,), method_options=options, **domain)

    if config.protocol == "continual":
        return [one(m) for m in config.methods]
    return [one(m, corruptions=(c,), severities=(s,)) for c, s in config.domains() for m in config.methods]


def cells_of(configs: Iterable[RunConfig]) -> list[Cell]:
    """Every cell of the runs, each once, in run order."""
    cells = {cell.id: cell for config in configs for cell in map(Cell, split_config(config))}
    return list(cells.values())


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

class SweepFolder:
    """The cell folders, the merged files and the grid of one study."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.cells_dir = self.out / "cells"
        self.frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}  # finished cells, read back from disk

    def check(self) -> None:
        """Refuse a folder of another schema version, or one that is not a sweep's."""
        meta = self.out / "run.json"
        if not meta.exists():
            if (self.out / "results.csv").exists():
                raise CemaError(f"{self.out} holds a results.csv but no sweep; give a new --out folder for the sweep.")
            return
        found = json.loads(meta.read_text()).get("schema_version")
        if found != SCHEMA_VERSION:
            raise CemaError(f"{self.out} was written by results schema version {found}; this cema writes version "
                            f"{SCHEMA_VERSION}. Resume it with the cema that wrote it, or give a new --out folder.")
        if not (self.out / "grid.json").exists():
            raise CemaError(f"{self.out} is a `cema bench/compare` folder, not a sweep; give a new --out folder.")

    def load_finished(self) -> set[str]:
        """Ids of the cells finished in an earlier run (their rows are read back)."""
        if self.cells_dir.is_dir():
            for folder in sorted(self.cells_dir.iterdir()):
                if folder.name.startswith(".") or not (folder / "cell.json").exists():
                    continue
                meta = json.loads((folder / "cell.json").read_text())
                if meta.get("schema_version") != SCHEMA_VERSION:
                    raise CemaError(f"{folder} was written by results schema version {meta.get('schema_version')}; "
                                    f"this cema writes {SCHEMA_VERSION}. Give a new --out folder.")
                if meta["status"] == "ok":
                    self.frames[folder.name] = (pd.read_csv(folder / "results.csv"), pd.read_csv(folder / "batches.csv"))
        return set(self.frames)

    def cell_seconds(self) -> list[float]:
        """Wall seconds of the finished cells (for --dry-run's estimate)."""
        return [json.loads((self.cells_dir / i / "cell.json").read_text())["seconds"] for i in self.frames]

    def write_cell(self, cell: Cell, result: CellResult) -> None:
        """cells/<id>/: written beside, then renamed, so it exists whole or not at all."""
        from cema_cli.results import report

        final = self.cells_dir / cell.id
        staging = self.cells_dir / f".{cell.id}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        meta = {"schema_version": SCHEMA_VERSION, "id": cell.id, "label": cell.label, "status": result.status,
                "reason": result.reason, "seconds": result.seconds, "threads": result.threads, "config": cell.canonical()}
        if result.status == "ok":
            report.write_csv(report.results_frame(result.rows), staging / "results.csv")
            report.write_csv(report.batches_frame(result.batches), staging / "batches.csv")
        report.write_json(meta, staging / "cell.json")
        shutil.rmtree(final, ignore_errors=True)  # an earlier failed attempt
        os.replace(staging, final)
        if result.status == "ok":
            self.frames[cell.id] = (pd.read_csv(final / "results.csv"), pd.read_csv(final / "batches.csv"))

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
        path = self.out / "grid.json"
        if not path.exists():
            raise CemaError(f"{self.out} holds no sweep (no grid.json); give the folder of an earlier `cema sweep --out`.")
        return [Cell(config_from_dict(data)) for data in json.loads(path.read_text())["cells"]]

    def write_grid(self, cells: list[Cell]) -> None:
        """grid.json: the union of every grid run into this folder (so --resume needs no flags)."""
        from cema_cli.results import report

        known = self.stored_grid() if (self.out / "grid.json").exists() else []
        union = {c.id: c for c in [*known, *cells]}
        report.write_json({"schema_version": SCHEMA_VERSION, "cells": [asdict(c.config) for c in union.values()]},
                          self.out / "grid.json")
