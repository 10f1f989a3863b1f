"""``cema sweep``: a grid (methods x domains x seeds x channel points x model pairs) run as
resumable cells (``cells.py``), then the seed statistics. No torch import here."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cema_cli.cli.cells import execute_cells, fail_on_cells, print_statistics
from cema_cli.cli.common import _run_options, console, user_errors
from cema_cli.cli.studies import fleet_requested
from cema_cli.errors import CemaError


def sweep_command(ctx: typer.Context, methods: str, **opts: Any) -> None:
    with user_errors(opts["verbose"]):
        if fleet_requested({**opts, "ctx": ctx}):
            raise CemaError("cema sweep runs single-edge cells; run a fleet with `cema bench` or `cema compare` --edges N.")
        outcome = execute_cells(methods, {**opts, "ctx": ctx}, console)
        if outcome is None:
            return
        frame, failed = outcome
        if not frame.empty:
            print_statistics(frame, opts["versus"], console)
        fail_on_cells(failed)


def _sweep_options(
    resume: Annotated[Optional[Path], typer.Option(help="Resume the sweep in this folder: its stored grid, only the missing cells.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the number of cells, how many are done, and a time estimate.")] = False,
    versus: Annotated[Optional[str], typer.Option(help="Paired comparison of every method against this one (e.g. tent).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")] = None,
    cpus_per_cell: Annotated[Optional[float], typer.Option(help="Ray: CPUs reserved per cell (default: --threads, else 1).")] = None,
    gpus_per_cell: Annotated[Optional[float], typer.Option(help="Ray: GPUs per cell, fractional allowed (default: 1 on CUDA, else 0).")] = None,
) -> None:
    """Template: the options only ``cema sweep`` has."""


def register(app: typer.Typer) -> None:
    methods = inspect.Parameter("methods", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="cema,tent,eata,source",
                                annotation=Annotated[str, typer.Option("--methods", help="Comma list of methods, or all.")])
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    shared = [*inspect.signature(_run_options, eval_str=True).parameters.values(),
              *inspect.signature(_sweep_options, eval_str=True).parameters.values()]
    sweep_command.__signature__ = inspect.Signature([context, methods, *shared])  # type: ignore[attr-defined]
    app.command("sweep", help="Run a grid (methods x domains x seeds x channel points x model pairs) as resumable cells, "
                "in parallel, with seed statistics.")(sweep_command)


