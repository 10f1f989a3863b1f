"""The ``cema`` command line: parse, call the API, render.

``app.py`` assembles the Typer app from one module per command group (``run``: bench and compare,
``sweep``, ``results``: check, report and plot, ``corrupt``, ``catalog``: list and prepare, ``serve``: the cloud of a real link). They
share ``common`` (consoles, errors, run options), ``studies`` (one run or a fleet, with files) and
``cells`` (a grid of resumable cells); a command module never imports another command module.
"""

from cema_cli.cli.app import app, main

__all__ = ["app", "main"]
