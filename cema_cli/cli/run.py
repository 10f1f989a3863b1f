"""``cema bench`` and ``cema compare``: parse the shared run options, run the study (one run,
seed cells or a fleet: ``studies.py``), print the command's tables, apply --min-accuracy."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cema_cli.cli.common import DEFAULT_COMPARE, DEFAULT_METHOD, console, resolve_methods, user_errors, with_run_options
from cema_cli.cli.cells import execute_cells, fail_on_cells, print_statistics
from cema_cli.errors import CemaError
from cema_cli.cli.studies import execute, execute_fleet, fleet_requested, print_sweep


@with_run_options(inspect.Parameter("method", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=DEFAULT_METHOD,
                                    annotation=Annotated[str, typer.Option("--method", "-m", help="Method; see `cema list methods`.")]))
def bench(ctx: typer.Context, method: str, **opts: Any) -> None:
    run_and_report(ctx, method, opts, lambda report, frame: [report.bench_table(frame)])


@with_run_options(inspect.Parameter("methods", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=DEFAULT_COMPARE,
                                    annotation=Annotated[str, typer.Option("--methods", help="Comma list of methods, or all.")]))
def compare(ctx: typer.Context, methods: str, **opts: Any) -> None:
    def tables(report: Any, frame: Any) -> list[Any]:
        several_domains = frame[["corruption", "severity"]].drop_duplicates().shape[0] > 1
        costs = [table for table in [report.cost_table(frame)] if table is not None]
        return [report.compare_table(frame)] + ([report.domain_table(frame)] if several_domains else []) + costs

    run_and_report(ctx, methods, opts, tables)


def run_and_report(ctx: typer.Context, methods: str, opts: dict[str, Any], tables: Callable[[Any, Any], list[Any]]) -> None:
    """Run, print the command's tables (and the sweep table), then apply --min-accuracy."""
    with user_errors(opts["verbose"]):
        from cema_cli.results.saved import check_min_accuracy, checked_min_accuracy

        checked_min_accuracy(opts["min_accuracy"])
        if fleet_requested({**opts, "ctx": ctx}):
            return fleet_and_report(resolve_methods(methods), {**opts, "ctx": ctx})
        if opts["seeds"] is not None or opts["executor"] is not None:
            refuse_live_cells(opts)
            return run_cells_and_report(ctx, methods, opts)
        rows = execute(resolve_methods(methods), {**opts, "ctx": ctx})
        from cema_cli.results import report
        from cema_cli.results.health import check_status
        from cema_cli.results.link_report import validation_tables

        frame = report.results_frame(rows)
        for table in tables(report, by_link(frame)) + validation_tables(frame):
            console.print(table)
        print_sweep(frame)
        check_status(rows)
        check_min_accuracy(frame, opts["min_accuracy"])


def fleet_and_report(methods: list[str], opts: dict[str, Any]) -> None:
    """--edges N or a [fleet] table: the fleet's run, tables and checks (studies.py)."""
    from cema_cli.results import report
    from cema_cli.results.health import check_status
    from cema_cli.results.saved import check_min_accuracy

    result = execute_fleet(methods, opts, console)
    check_status(result.rows)
    check_min_accuracy(report.results_frame(result.rows), opts["min_accuracy"])


def run_cells_and_report(ctx: typer.Context, methods: str, opts: dict[str, Any]) -> None:
    """--seeds or --executor: the run as sweep cells (cells.py), then the seed statistics."""
    from cema_cli.results.saved import check_min_accuracy

    frame, failed = execute_cells(methods, {**opts, "ctx": ctx}, console)
    if not frame.empty:
        print_statistics(frame, None, console)
        print_sweep(frame)
        check_min_accuracy(frame, opts["min_accuracy"])
    fail_on_cells(failed)



def refuse_live_cells(opts: dict[str, Any]) -> None:
    if "live" in opts["link"]:
        raise CemaError("--seeds and --executor run cells in worker processes; a live link runs one study at a time: "
                        "drop --seeds/--executor (one seed per command) or --link live.")


def by_link(frame: Any) -> Any:
    """With both links, the live rows' methods read "tent (live)", so no table mixes the two."""
    if "link" not in frame or frame["link"].nunique() < 2:
        return frame
    live = frame["link"] == "live"
    return frame.assign(method=frame["method"].where(~live, frame["method"] + " (live)"))
