"""What every command module shares: the consoles, one-line error handling, the default output
folder. The run options of bench, compare and sweep are in options.py. No torch import."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

try:  # typer 0.2x vendors click; older typer uses the click package
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors

from cema_cli.errors import CemaError, Interrupted


console = Console()
# Errors are one line wherever stderr goes (a log wraps nothing), and never read as rich markup.
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


# --- error handling ---------------------------------------------------------------------------

def print_error(message: str, kind: str = "error") -> None:
    """``kind: message`` on one line; the message is plain text (``[/x]`` is printed as is)."""
    line = " ".join(str(message).split())
    style = "bold red" if kind == "error" else "yellow"
    err_console.print(Text.assemble((f"{kind}:", style), " ", line), soft_wrap=True)


def usage_message(error: Any) -> str:
    """click's message plus where to look: ``cema bench --help``, or the flag this command uses."""
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "cema"
    hint = ""
    if isinstance(error, click_errors.NoSuchOption) and error.option_name == "-o":
        hint = " (-o is --option of bench and compare; here write --output)"
    return f"{error.format_message().rstrip('.')}{hint}; see `{command} --help`."


def print_help_and_exit(error: Any) -> None:
    """``cema`` alone: the help, as click would print it."""
    typer.echo(error.ctx.get_help())
    sys.exit(0)


@contextlib.contextmanager
def user_errors(verbose: bool) -> Iterator[None]:
    """One clear line and a non-zero exit for every failure; a traceback only with --verbose."""
    try:
        yield
    except CemaError as error:
        if verbose:
            traceback.print_exc()
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt as error:  # run.runner raises Interrupted, which says what was kept
        print_error(str(error) if isinstance(error, Interrupted) else "stopped before any result was written.", "interrupted")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except OSError as error:  # the file system refused: a path or permission the user can fix
        if verbose:
            traceback.print_exc()
        print_error(f"{error.filename or 'a file'}: {error.strerror or error}; check the path, its permissions and free space.")
        raise typer.Exit(2) from None
    except Exception as error:  # noqa: BLE001 - the last line of defence for a CLI
        if verbose:
            traceback.print_exc()
        print_error(f"{type(error).__name__}: {error} (an internal error: run with --verbose for the traceback and report it)")
        raise typer.Exit(1) from None

def default_out_dir(methods: list[str]) -> Path:
    from cema_cli.results.run_folder import unique_dir

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return unique_dir(Path("cema-runs") / f"{stamp}-{'-'.join(methods)[:60]}")

