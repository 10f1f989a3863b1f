"""One entry point for a study, for the command line and for Python alike:

    from cema_cli.config import RunConfig
    from cema_cli.run.study import Study, run_study

    config = RunConfig(methods=("source", "bn", "tent"), corruptions=("gaussian_noise", "contrast"), samples=256)
    result = run_study(Study.of(config, seeds=(0, 1, 2)), "study")   # seed cells: resumable
    result.rows                                                       # one pandas row per cell's (method, domain)

``run_study`` decides how the study runs, from the study alone:

- a **fleet** (``fleet`` given): N edges sharing one cloud (fleet.py), one folder of files;
- **cells** (several seeds or model pairs, an executor, or ``cells=True``): a grid of resumable
  cells (grid.py), each written whole as it finishes; the folder's study has fixed settings
  (record.py) and may grow;
- else **one run**: every method on every domain (and budget point) into one folder.

``links`` (issue 24): ``None`` is the simulated channel; a ``link.options.LinkOptions`` runs the
cloud halves across a real link (a ``cema serve`` process). One run plays each link in turn (the
validation report of ``--link simulated,live``); a fleet over a live link is N edge processes
against one server; cells run on the simulated channel only.

It validates everything before the folder is created, keeps the folder's files current while it
runs, and reports progress through ``StudyEvents`` (events.py); it prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from cema_cli.config import RunConfig, check_seed
from cema_cli.errors import CemaError
from cema_cli.run.events import StudyEvents
from cema_cli.run.fleet_config import FleetConfig

KINDS = ("run", "cells", "fleet")


@dataclass(frozen=True)
class Execution:
    """Who runs a study's cells (executors.py) and with how many torch threads; machine settings,
    never part of a result."""

    executor: str | None = None  # serial, process or ray; None: serial for one cell, process for more
    threads: int | None = None  # torch threads per run or cell; None: the thread policy (threads.py)
    cpus_per_cell: float | None = None  # ray only
    gpus_per_cell: float | None = None  # ray only
    ray_address: str | None = None  # ray only

    def validate(self) -> "Execution":
        if self.threads is not None and self.threads < 1:
            raise CemaError(f"--threads {self.threads} must be at least 1.")
        for flag, value in (("--cpus-per-cell", self.cpus_per_cell), ("--gpus-per-cell", self.gpus_per_cell)):
            if value is not None and not 0 <= value < float("inf"):
                raise CemaError(f"{flag} {value} must be a finite number of 0 or more.")
        return self


@dataclass(frozen=True)
class Study:
    """What to run: ``configs`` (one per seed, channel point and model pair; each may hold several
    methods and domains), optionally as a ``fleet``; ``cells`` forces resumable cells; ``versus``
    is the method a study's paired comparison is made against (remembered by the study). No
    ``configs``: the study already in the folder, as it is (a plain resume)."""

    configs: tuple[RunConfig, ...] = ()
    fleet: FleetConfig | None = None
    cells: bool = False
    execution: Execution = field(default_factory=Execution)
    versus: str | None = None
    links: tuple[Any, ...] = (None,)  # None: the simulated channel; a LinkOptions: a real link

    @classmethod
    def of(cls, config: RunConfig, seeds: tuple[int, ...] | None = None, **options: Any) -> "Study":
        """One configuration, on each of ``seeds`` (cells) or on its own seed; ``options``: the
        other fields, with ``executor`` and ``threads`` accepted here too."""
        execution = Execution(**{k: options.pop(k) for k in list(options) if k in Execution.__dataclass_fields__})
        configs = tuple(replace(config, seed=check_seed(s, "seeds: the seed")) for s in seeds) if seeds is not None else (config,)
        return cls(configs, execution=execution, cells=options.pop("cells", seeds is not None), **options)

    @property
    def kind(self) -> str:
        """fleet, cells or run (see the module docstring)."""
        if self.fleet is not None:
            return "fleet"
        several = len({(c.seed, c.edge, c.cloud) for c in self.configs}) > 1
        return "cells" if self.cells or several or not self.configs or self.execution.executor is not None else "run"

    def validate(self) -> "Study":
        """Every configuration, the fleet and the execution, before anything is created."""
        from cema_cli.run.api import check_method_options

        self.execution.validate()
        for config in self.configs:
            config.validate()
        if self.configs:
            check_method_options(self.configs[0])  # the options of every method, before the folder exists
        if self.fleet is not None:
            self.validate_fleet()
        self.validate_links()
        return self  # versus: checked against every method of the study (grid.py), earlier runs' included

    @property
    def live_link(self) -> Any:
        """The real link of the study, or None when it runs on the simulated channel only."""
        return next((link for link in self.links if link is not None), None)

    def validate_links(self) -> None:
        """What a real link cannot do, refused before anything loads; its own options checked."""
        live = self.live_link
        if live is None:
            return
        if self.kind == "cells":
            raise CemaError("--seeds and --executor run cells in worker processes; a live link runs one study at a time: "
                            "drop --seeds/--executor (one seed per command) or --link live.")
        if self.kind == "fleet" and len(self.links) > 1:
            raise CemaError("--link simulated,live compares one edge's run; a fleet runs over one link: give --link live or simulated.")
        if self.kind == "fleet":
            from cema_cli.link.fleet import check_fleet

            check_fleet(self.fleet)
        live.check_run(self.configs[0])

    def validate_fleet(self) -> None:
        from cema_cli.run.fleet_config import edge_configs

        if self.cells or self.execution.executor is not None or len(self.configs) != 1:
            raise CemaError("a fleet runs one configuration, one seed and one uplink and downlink budget, not as cells; "
                            "drop --seeds and --executor and give one budget each (or per edge in [[fleet.edges]]).")
        self.fleet.validate()
        edge_configs(self.configs[0], self.fleet)  # each edge's own settings


@dataclass
class StudyResult:
    """What a study produced: ``rows`` (results.csv's rows: every finished cell of a grid, which
    may hold cells of earlier runs), ``failed`` cells with their reasons, a fleet's ``fleet``
    result, and for a grid its counts (``cells``, ``done_before``, ``ran``, ``reused``: cells of an
    edge-only method that take the rows of its run at another channel point) and ``versus``.
    A dry run has ``plan`` (executors.Plan) and ``eta_seconds``, and no rows."""

    kind: str
    out: Path
    rows: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)
    fleet: Any = None
    cells: int = 0
    done_before: int = 0
    ran: int = 0
    reused: int = 0
    versus: str | None = None
    plan: Any = None
    eta_seconds: float | None = None


def run_study(study: Study, out: str | Path, *, force: bool = False, resume: bool = False, dry_run: bool = False,
              events: StudyEvents | None = None, command: str = "run_study") -> StudyResult:
    """Run ``study`` into the folder ``out``; see the module docstring. ``force`` replaces what
    ``out`` holds (a run's files, or a study); ``resume`` continues the study in ``out`` (only
    its missing cells run); ``dry_run`` (cells) counts the cells and runs nothing; ``command`` is
    recorded in run.json. Bad input raises CemaError before ``out`` is created."""
    out, events = Path(out), events or StudyEvents()
    kind = study.validate().kind
    if (resume or dry_run) and kind != "cells":
        raise CemaError(f"resume and dry run apply to a study of cells; this study is a {kind}.")
    if kind == "cells":
        return run_cell_study(study, out, force, resume, dry_run, events, command)
    from cema_cli.results.report import results_frame
    from cema_cli.results.run_folder import check_out_dir
    from cema_cli.run.runner import run_fleet_with_files, run_with_files

    check_out_dir(out, force)  # before anything is created: a bad input leaves no folder
    threads = study.execution.threads
    if kind == "fleet" and study.live_link is not None:
        from cema_cli.run.runner import run_live_fleet_with_files

        fleet, failed = run_live_fleet_with_files(study.configs[0], study.fleet, study.live_link, out, command, force, events)
        return StudyResult(kind, out, results_frame(fleet.rows), failed, fleet=fleet)
    if kind == "fleet":
        fleet = run_fleet_with_files(study.configs[0], study.fleet, out, command, force, threads, events)
        return StudyResult(kind, out, results_frame(fleet.rows), fleet=fleet)
    rows = run_with_files(list(study.configs), out, command, force, threads, events, links=list(study.links))
    return StudyResult(kind, out, results_frame(rows))


def run_cell_study(study: Study, out: Path, force: bool, resume: bool, dry_run: bool, events: StudyEvents,
                   command: str) -> StudyResult:
    from cema_cli.run.grid import plan_grid, run_grid

    grid = plan_grid(list(study.configs), out, study.execution, study.versus, resume, force, events.on_note)
    counts = {"cells": len(grid.cells), "done_before": grid.done, "versus": grid.record.versus, "plan": grid.plan,
              "reused": len(grid.todo) - len(grid.runs)}
    if dry_run:
        return StudyResult("cells", out, pd.DataFrame(), eta_seconds=grid.eta_seconds(), **counts)
    rows, failed = run_grid(grid, events, command)
    return StudyResult("cells", out, rows, failed, ran=len(grid.runs), **counts)
