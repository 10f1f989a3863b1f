"""From the options of bench, compare and sweep to a ``Study`` (run/study.py), and the study's
result to the terminal: the fleet's tables and the budget-sweep table. Which kind of study runs
(one run, cells or a fleet) is ``run_study``'s decision, not the command's. No torch import."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.markup import escape

from cema_cli.cli.common import console, default_out_dir
from cema_cli.cli.options import SETTING_FLAGS, RunOptions, build_configs, link_options, with_shaped_costs
from cema_cli.errors import CemaError

# Fleet flags and their defaults (None: the flag was not given).
FLEET_FLAGS = {"cloud_batching": "per-edge", "student": None, "foundation": "shared", "cloud_capacity": None,
               "cloud_gflops_per_tick": None, "scheduler": "round-robin", "independent": True}


def command_line() -> str:
    return " ".join(["cema", *sys.argv[1:]])


def study_from_options(options: RunOptions, sweep: bool = False) -> tuple[Any, Path]:
    """The study the options describe, and its folder: --resume or --out (whose study, if it
    holds one, takes the place of the defaults), else a new cema-runs/<time>-<methods>."""
    from cema_cli.run.study import Execution, Study
    from cema_cli.toml_config import read_run_file

    file = read_run_file(options.config) if options.config is not None else None
    fleet = fleet_of(options, file, sweep)
    if fleet is not None and not options.typed("protocol"):
        options = replace(options, protocol="continual")  # fleets stream continually by default (a --config protocol still wins)
    wants_cells = sweep or options.seeds is not None or options.executor is not None or (file is not None and "seeds" in file.axes)
    given = getattr(options, "resume", None) or options.out
    record = stored_study(Path(given)) if given and wants_cells else None
    as_stored = record is not None and not options.explicit & SETTING_FLAGS  # a plain resume: the grid as it is
    configs = () if as_stored else tuple(with_shaped_costs(c, options) for c in build_configs(options, file, record))
    execution = Execution(options.executor, options.threads, getattr(options, "cpus_per_cell", None),
                          getattr(options, "gpus_per_cell", None), getattr(options, "ray_address", None))
    study = Study(configs, fleet, wants_cells, execution, getattr(options, "versus", None))
    out = Path(given) if given else default_out_dir(["sweep", *configs[0].methods] if study.kind == "cells" else list(configs[0].methods))
    return replace(study, links=link_options(options, out / "cloud")), out  # a live link's local server logs in <out>/cloud


def stored_study(out: Path) -> Any:
    """The record of the study in ``out`` (None: no study there)."""
    from cema_cli.run.sweep import SweepFolder

    return SweepFolder(out).study()


def fleet_of(options: RunOptions, file: Any, sweep: bool) -> Any:
    """The fleet of --edges and the fleet flags, or of the file's [fleet] table (flags typed on
    the command line win); None when no fleet is asked for (fleet flags alone are refused)."""
    from cema_cli.run.fleet_config import FleetConfig, fleet_from_table, rotated_edges

    table = file.fleet if file is not None else {}
    wanted = options.edges is not None or bool(table)
    stray = sorted(flag for flag in FLEET_FLAGS if options.typed(flag))
    if stray and not wanted:
        flags = ", ".join("--" + f.replace("_", "-") for f in stray)
        raise CemaError(f"{flags} configure a fleet; add --edges N (or a [fleet] table in --config), or drop them.")
    if not wanted:
        return None
    if sweep:
        raise CemaError("cema sweep runs single-edge cells; run a fleet with `cema bench` or `cema compare` --edges N.")
    if options.seeds is not None or options.executor is not None:
        raise CemaError("--seeds and --executor run single-edge cells; run a fleet without them (one seed per command).")
    values: dict[str, Any] = fleet_from_table(file.path, table) if table else {}
    if options.edges is not None:
        values["edges"] = rotated_edges(options.edges)
    for flag in FLEET_FLAGS:
        if options.typed(flag) or flag not in values:
            values[flag] = getattr(options, flag)
    if values["student"] is None:  # pooled batching trains one cloud model: the shared student
        values["student"] = "shared" if values["cloud_batching"] == "pooled" else "per-edge"
    return FleetConfig(**values).validate()


# --- rendering a result ------------------------------------------------------------------------------

def print_written(result: Any) -> None:
    files = {"run": ["results.csv", "batches.csv", "run.json"],
             "fleet": ["results.csv", "fleet.csv", *(["independent.csv"] if result.fleet and result.fleet.independent else []),
                       "batches.csv", "run.json"]}[result.kind]
    console.print(f"results written to [bold]{escape(str(result.out))}[/] ({', '.join(files)})")


def print_fleet(result: Any) -> None:
    """The fleet's tables (over a live link: the server's figures too); then an error when an edge
    process failed (the finished rows are kept)."""
    from cema_cli.results.fleet_tables import edge_table, fleet_summary_table, live_fleet_table, server_line

    print_written(result)
    console.print(edge_table(result.rows))
    if "link" in result.rows and (result.rows["link"] == "live").any():
        console.print(live_fleet_table(result.fleet.summary))
        console.print(server_line(result.fleet.summary), highlight=False)
    else:
        for table in fleet_summary_table(result.fleet.summary):
            console.print(table)
    if result.failed:
        raise CemaError(f"{len(result.failed)} edge process(es) failed ({', '.join(f'edge {e}: {why}' for e, why in result.failed.items())}); "
                        f"their finished rows are kept in {result.out / 'results.csv'}.")


def print_sweep(frame: Any) -> None:
    """With several uplink budgets, the accuracy-versus-upload table as well."""
    from cema_cli.results import report

    if report.budget_points(frame) > 1:
        console.print(report.sweep_table(frame))
