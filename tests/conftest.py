"""Shared fixtures: a CLI runner and a small, fast benchmark configuration."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cema_cli.cli import app


@pytest.fixture
def cli():
    """Invoke ``cema ARGS...``; returns typer's Result (exit_code, output)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke
