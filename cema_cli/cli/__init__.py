"""The ``cema`` command line: parse, call the API, render.

``app.py`` assembles the Typer app from one module per command group (``run``: bench and compare,
``sweep``, ``results``: check, report and plot, ``corrupt``, ``catalog``: list and prepare,
``serve``: the cloud of a real link). They
share ``common`` (consoles, errors), ``options`` (the typed run options and their RunConfigs),
``studies`` (options -> a Study for ``run.study.run_study``; fleet tables), ``cells`` (a grid's
tables) and ``progress`` (progress drawn from the study's events); a command module never imports
another command module.
"""

from cema_cli.cli.app import app, main

__all__ = ["app", "main"]
