"""A study as resumable cells (``cema sweep``, and ``bench``/``compare`` with --seeds or
--executor, ``cema check``'s re-run of a grid): the grid from the flags or a TOML ``[sweep]``
table, cells run by an executor with one progress display, files merged as cells finish, seed
statistics printed. No torch import here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cema_cli.cli.common import build_configs, default_out_dir, explicit_flags, resolve_methods, split_list
from cema_cli.config import RunConfig
from cema_cli.errors import CemaError

# [sweep] keys -> the flag that sets the same axis (flags typed on the command line win).
SWEEP_AXES = {"methods": "methods", "corruptions": "corruption", "severities": "severity", "seeds": "seeds",
              "uplink_budgets": "uplink_budget", "downlink_budgets": "downlink_budget", "edges": "edge", "clouds": "cloud"}
SHOWN_WORKERS = 8


class CellsFailed(CemaError):
    """Some cells raised: their reasons are in run.json; the others' rows are kept. Exit 3."""

    exit_code = 3


def parse_seeds(text: str | None) -> list[int] | None:
    """'0,1,2' -> [0, 1, 2]; '5' -> [0, 1, 2, 3, 4] (a count); None -> None (use --seed)."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise CemaError(f"--seeds {text!r} is not a count or a list; use e.g. 5 (seeds 0-4) or 0,1,2.") from None
    if len(values) == 1:
        if values[0] < 1:
            raise CemaError(f"--seeds {values[0]} is not a positive count; use e.g. --seeds 3 (seeds 0, 1, 2) or a list 0,1,2.")
        return list(range(values[0]))
    if not values or min(values) < 0:
        raise CemaError(f"--seeds {text!r} needs seeds of 0 or more; use e.g. 0,1,2.")
    return list(dict.fromkeys(values))


def sweep_table(path: Path | None) -> dict[str, Any]:
    """The [sweep] table of a TOML file, its keys checked (empty without a file)."""
    if path is None:
        return {}
    from cema_cli.toml_config import read_toml

    table = read_toml(path).get("sweep", {})
    unknown = sorted(set(table) - set(SWEEP_AXES))
    if unknown:
        raise CemaError(f"{path}: unknown [sweep] key(s) {', '.join(unknown)}; valid axes: {', '.join(SWEEP_AXES)}.")
    return table


def _as_text(value: Any) -> str:
    """A TOML axis value (a list or a scalar) as the flag's comma text."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def axis_options(methods: str, opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The flags, with the [sweep] table's axes filled in where the flag was not typed."""
    explicit = explicit_flags(opts["ctx"])
    table = sweep_table(opts["config"])
    for key, flag in SWEEP_AXES.items():
        if key in table and flag not in explicit:
            text = _as_text(table[key])
            if not text.strip():
                raise CemaError(f"the grid is empty: [sweep] {key} has no values; give at least one.")
            if flag == "methods":
                methods = text
            else:
                opts = {**opts, flag: text}
    return methods, opts


def grid_configs(methods: list[str], opts: dict[str, Any]) -> list[RunConfig]:
    """One RunConfig per (model pair, channel point, seed), each holding every method and domain."""
    seeds = parse_seeds(opts.get("seeds")) or [opts["seed"]]
    edges, clouds = (split_list(opts[k]) if opts[k] else [None] for k in ("edge", "cloud"))
    configs = [config for edge in edges for cloud in clouds for config in build_configs(methods, {**opts, "edge": edge, "cloud": cloud})]
    return [replace(config, seed=seed) for config in configs for seed in seeds]


# --- the driver ----------------------------------------------------------------------------------

def new_display(console: Any) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


class Driver:
    """Runs the missing cells of a grid into a SweepFolder, with one progress display."""

    def __init__(self, folder: Any, cells: list[Any], plan: Any, console: Any, command: str) -> None:
        self.folder, self.cells, self.plan, self.console = folder, cells, plan, console
        self.order = [c.id for c in cells]
        self.failed: dict[str, str] = {}
        self.meta = {"schema_version": None, "command": command, "executor": plan.executor, "workers": plan.workers,
                     "threads": plan.threads, "cells": len(cells), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.last_merge = 0.0

    def write_meta(self, **updates: Any) -> None:
        from cema_cli.results import report
        from cema_cli.results.schema import SCHEMA_VERSION

        self.meta.update(updates, schema_version=SCHEMA_VERSION, done=len(set(self.order) & set(self.folder.frames)),
                         failed=self.failed)
        report.write_json(self.meta, self.folder.out / "run.json")

    def run(self, todo: list[Any]) -> None:
        from cema_cli.run.executors import run_cells

        self.write_meta(status="running")
        with new_display(self.console) as display:
            overall = display.add_task("cells", total=len(self.cells), completed=len(self.cells) - len(todo))
            workers = [display.add_task(f"  worker {i}: idle", total=None, visible=i < SHOWN_WORKERS)
                       for i in range(max(self.plan.workers, min(len(todo), SHOWN_WORKERS) if self.plan.executor == "ray" else 0))]

            def on_start(slot: int, cell: Any) -> None:
                if slot < len(workers):
                    display.update(workers[slot], description=f"  worker {slot}: {cell.label}")

            def on_done(slot: int, cell: Any, result: Any) -> None:
                self.finish(cell, result)
                display.update(overall, advance=1, description=f"cells ({len(self.failed)} failed)" if self.failed else "cells")
                if slot < len(workers):
                    display.update(workers[slot], description=f"  worker {slot}: idle")

            try:
                run_cells(self.plan, todo, on_start, on_done)
            except BaseException:
                self.folder.merge(self.order)
                self.write_meta(status="interrupted")
                raise
        self.folder.merge(self.order)
        self.write_meta(status="complete" if not self.failed else "failed cells",
                        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def finish(self, cell: Any, result: Any) -> None:
        """Write the cell's folder; merge into results.csv at most every 2 s (and at the end)."""
        self.folder.write_cell(cell, result)
        if result.status != "ok":
            self.failed[cell.id] = f"{cell.label}: {result.reason}"
            self.console.print(f"[red]cell failed[/] {cell.label}: {result.reason}", highlight=False)
        if time.monotonic() - self.last_merge > 2:
            self.folder.merge(self.order)
            self.write_meta()
            self.last_merge = time.monotonic()


def dry_run_text(folder: Any, cells: list[Any], todo: list[Any], plan: Any) -> str:
    seconds = folder.cell_seconds()
    if seconds:
        estimate = sum(seconds) / len(seconds) * len(todo) / plan.workers
        eta = f"about {estimate / 60:.1f} min with {plan.workers} {plan.executor} worker(s) (mean of {len(seconds)} finished cells)"
    else:
        eta = "unknown until a cell has finished"
    return (f"{len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run; "
            f"executor {plan.executor}, {plan.workers} worker(s) x {plan.threads} thread(s); time {eta}")


def execute_cells(methods: str, opts: dict[str, Any], console: Any) -> Any:
    """Run the grid the options describe (resuming into --out); return the merged rows.
    Raises CellsFailed after the run when some cells failed (their rows are simply absent)."""
    from cema_cli.run.executors import make_plan
    from cema_cli.run.sweep import SweepFolder, cells_of

    methods, opts = axis_options(methods, opts)
    resume = opts.get("resume")
    out = Path(resume or opts["out"] or default_out_dir(["sweep", *resolve_methods(methods)]))
    folder = SweepFolder(out)
    folder.check()
    cells = folder.stored_grid() if resume and not grid_flags_typed(opts) else cells_of(grid_configs(resolve_methods(methods), opts))
    if not cells:
        raise CemaError("the grid is empty: no method, domain, seed or channel point to run.")
    finished = folder.load_finished()
    todo = [c for c in cells if c.id not in finished]
    plan = make_plan(opts.get("executor"), len(todo), cells[0].config.device, opts.get("threads"), opts.get("cpus_per_cell"),
                     opts.get("gpus_per_cell"), opts.get("ray_address"))
    if opts.get("dry_run"):
        console.print(dry_run_text(folder, cells, todo, plan), highlight=False)
        return None
    return run_grid(folder, cells, todo, plan, console, " ".join(["cema", *sys.argv[1:]]))


def run_grid(folder: Any, cells: list[Any], todo: list[Any], plan: Any, console: Any, command: str) -> tuple[Any, dict[str, str]]:
    """Run the ``todo`` cells of the grid into the folder; return the merged rows and the failed cells."""
    folder.write_grid(cells)
    driver = Driver(folder, cells, plan, console, command)
    driver.run(todo)
    console.print(f"{len(cells) - len(todo)} cells already done, {len(todo)} run; results in [bold]{folder.out}[/] "
                  "(results.csv, summary.csv, batches.csv, cells/, run.json)")
    rows = driver.folder.merge(driver.order)
    return rows, driver.failed


def run_configs(configs: list[RunConfig], out: Path, console: Any, executor: str | None, threads: int | None,
                command: str) -> tuple[Any, dict[str, str]]:
    """Run every cell of the configurations into a new sweep folder (``cema check``'s re-run)."""
    from cema_cli.run.executors import make_plan
    from cema_cli.run.sweep import SweepFolder, cells_of

    cells = cells_of(configs)
    plan = make_plan(executor, len(cells), cells[0].config.device, threads)
    return run_grid(SweepFolder(out), cells, cells, plan, console, command)


def grid_flags_typed(opts: dict[str, Any]) -> bool:
    return bool(explicit_flags(opts["ctx"]) & {"methods", *SWEEP_AXES.values()})


def print_statistics(frame: Any, versus: str | None, console: Any) -> None:
    """The mean +- 95% tables (per method, per domain) and the paired comparison."""
    from cema_cli.results import tables as stats_tables

    console.print(stats_tables.seed_table(frame))
    if frame[["corruption", "severity"]].drop_duplicates().shape[0] > 1:
        console.print(stats_tables.seed_domain_table(frame))
    if versus:
        console.print(stats_tables.paired_table(frame, versus))


def fail_on_cells(failed: dict[str, str]) -> None:
    if failed:
        first = next(iter(failed.values()))
        raise CellsFailed(f"{len(failed)} cell(s) failed (first: {first}); their reasons are in run.json. "
                          "Fix the cause and rerun the same command: only the missing cells run.")
