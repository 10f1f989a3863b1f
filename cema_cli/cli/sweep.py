"""``cema sweep``: a grid (methods x domains x seeds x channel points x model pairs) run as
resumable cells by ``run_study``, then the seed statistics. No torch import here."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from cema_cli.cli.cells import dry_run_text, fail_on_cells, print_cells_run, print_statistics
from cema_cli.cli.common import console, user_errors
from cema_cli.cli.options import DEFAULT_COMPARE, SweepOptions, with_run_options
from cema_cli.cli.progress import StudyDisplay
from cema_cli.cli.studies import command_line, study_from_options


def sweep_command(ctx: typer.Context, **flags: Any) -> None:
    with user_errors(flags["verbose"]):
        from cema_cli.run.study import run_study

        from dataclasses import replace

        from cema_cli.suites import config_or_suite

        options = SweepOptions.from_cli(ctx, methods=flags.pop("methods"), **flags)
        options = replace(options, config=config_or_suite(options.config, options.suite))
        study, out = study_from_options(options, sweep=True)
        with StudyDisplay(console) as display:
            result = run_study(study, out, force=options.force, resume=options.resume is not None, dry_run=options.dry_run,
                               events=display.events(), command=command_line())
        if options.dry_run:
            console.print(dry_run_text(result), highlight=False)
            return
        print_cells_run(result, console)
        if not result.rows.empty:
            print_statistics(result.rows, result.versus, console, options.metric)
        fail_on_cells(result.failed)
        from cema_cli.results.saved import check_finished

        check_finished(result.rows.to_dict("records"), result.rows, None)


def register(app: typer.Typer) -> None:
    methods = inspect.Parameter("methods", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_COMPARE,
                                annotation=Annotated[str, typer.Option("--methods", help="Comma list of methods, or all.")])
    with_run_options(methods, SweepOptions)(sweep_command)
    app.command("sweep", help="Run a grid (methods x domains x seeds x channel points x model pairs) as resumable cells, "
                "in parallel, with seed statistics.")(sweep_command)
