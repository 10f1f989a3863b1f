"""``cema bench`` and ``cema compare``: parse the shared run options, call ``run_study`` (which
runs one run, seed cells or a fleet), print the command's tables, apply --min-accuracy."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cema_cli.cli.cells import fail_on_cells, print_cells_run, print_statistics
from cema_cli.cli.common import console, user_errors
from cema_cli.cli.options import DEFAULT_COMPARE, DEFAULT_METHOD, RunOptions, with_run_options
from cema_cli.cli.progress import StudyDisplay
from cema_cli.cli.studies import command_line, print_fleet, print_sweep, print_written, study_from_options


@with_run_options(inspect.Parameter("method", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_METHOD,
                                    annotation=Annotated[str, typer.Option("--method", "-m", help="Method; see `cema list methods`.")]))
def bench(ctx: typer.Context, **flags: Any) -> None:
    run_and_report(ctx, flags.pop("method"), flags, lambda report, frame: [report.bench_table(frame, flags["metric"])])


@with_run_options(inspect.Parameter("methods", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_COMPARE,
                                    annotation=Annotated[str, typer.Option("--methods", help="Comma list of methods, or all.")]))
def compare(ctx: typer.Context, **flags: Any) -> None:
    def tables(report: Any, frame: Any) -> list[Any]:
        several_domains = frame[["corruption", "severity"]].drop_duplicates().shape[0] > 1
        costs = [table for table in [report.cost_table(frame)] if table is not None]
        metric = flags["metric"]
        return [report.compare_table(frame, metric)] + ([report.domain_table(frame, metric)] if several_domains else []) + costs

    run_and_report(ctx, flags.pop("methods"), flags, tables)


def run_and_report(ctx: typer.Context, methods: str, flags: dict[str, Any], tables: Callable[[Any, Any], list[Any]]) -> None:
    """Parse, run the study, print what it produced, then apply the checks of its exit status."""
    with user_errors(flags["verbose"]):
        from cema_cli.results import report
        from cema_cli.results.saved import check_finished
        from cema_cli.run.study import run_study

        options = RunOptions.from_cli(ctx, methods=methods, **flags)
        study, out = study_from_options(options)
        with StudyDisplay(console, fleet=study.kind == "fleet") as display:
            result = run_study(study, out, force=options.force, events=display.events(), command=command_line())
        if result.kind == "cells":
            return report_cells(result, options)
        if result.kind == "fleet":
            print_fleet(result)
        else:
            from cema_cli.results.link_report import validation_tables

            print_written(result)
            for table in tables(report, by_link(result.rows)) + validation_tables(result.rows):
                console.print(table)
            print_sweep(result.rows)
        check_finished(result.rows.to_dict("records"), result.rows, options.min_accuracy)


def report_cells(result: Any, options: RunOptions) -> None:
    """--seeds or --executor: the seed statistics of the cells, then the checks."""
    from cema_cli.results.saved import check_finished

    print_cells_run(result, console)
    if not result.rows.empty:
        print_statistics(result.rows, None, console, options.metric)
        print_sweep(result.rows)
    fail_on_cells(result.failed)
    if not result.rows.empty:
        check_finished(result.rows.to_dict("records"), result.rows, options.min_accuracy)


def by_link(frame: Any) -> Any:
    """With both links, the live rows' methods read "tent (live)", so no table mixes the two."""
    if "link" not in frame or frame["link"].nunique() < 2:
        return frame
    live = frame["link"] == "live"
    return frame.assign(method=frame["method"].where(~live, frame["method"] + " (live)"))
