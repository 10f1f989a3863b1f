"""The ``cema`` Typer app: one-line usage errors, ``--version``, and the commands of every
command module registered in the order ``cema --help`` lists them. No torch import at module
level, so ``cema --help`` answers at once."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cema_cli.cli import catalog, corrupt, results, run, serve, sweep
from cema_cli.cli.common import click_errors, print_error, print_help_and_exit, usage_message


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown flag, a value of the wrong type) as one ``error:`` line too,
    instead of click's usage block and boxed panel, which span several lines in a log."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as error:
            print_help_and_exit(error)
        except click_errors.ClickException as error:
            print_error(usage_message(error))
            sys.exit(2 if isinstance(error, click_errors.UsageError) else error.exit_code)
        except typer.Abort:
            print_error("aborted.", "interrupted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="cema",
    help="Benchmark test-time adaptation methods on a cloud and an edge device under distribution shift and bandwidth budgets; `cema list methods` names every method.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=OneLineErrors,
)


def version_callback(value: bool) -> None:
    if value:
        from cema_cli import __version__

        typer.echo(f"cema {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Benchmark cloud-edge test-time adaptation (CEMA, Tent, EATA, BN) under distribution shift."""



app.command(help="Run one adaptation method on the chosen domains and print a table.")(run.bench)
app.command(help="Run several methods on the same stream and print one comparison table.")(run.compare)
sweep.register(app)
app.command("list", help="List methods, datasets, corruptions or models.")(catalog.list_command)
app.command(help="Ready the package-file datasets (fetches vaderSentiment's source archive with pip) and the shipped models (a changed recipe is trained and cached).")(catalog.prepare)
app.command("check", help="Compare a run with a baseline results.csv: exit 1 on an accuracy regression.")(results.check_command)
app.command("report", help="Re-render and merge saved results.csv files (table, csv, markdown or json).")(results.report_command)
app.command(help="Plot accuracy versus uploads, bytes and cloud cost, and along the stream, from a results.csv.")(results.plot)
app.command("corrupt", help="Write a corrupted copy of an image tree (ImageNet-C layout) or .npy (CIFAR-10-C layout).")(corrupt.corrupt_command)
app.command("serve", help="Serve the cloud halves of edges' runs over a real link (edges: --link live --cloud-url HOST:PORT).")(serve.serve_command)


def main() -> None:
    app()
