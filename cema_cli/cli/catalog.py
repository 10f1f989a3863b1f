"""``cema list`` and ``cema prepare``: what can be run, and the embedded default's models."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from cema_cli.cli.common import console, user_errors
from cema_cli.errors import unknown_name

LIST_KINDS = ("methods", "datasets", "corruptions", "models")


def list_command(kind: Annotated[str, typer.Argument(help="methods, datasets, corruptions or models")]) -> None:
    with user_errors(False):
        if kind not in LIST_KINDS:
            raise unknown_name("list kind", kind, LIST_KINDS)
        for name, summary in catalog(kind):
            console.print(f"[bold]{name}[/]  {summary}", highlight=False)


def catalog(kind: str) -> list[tuple[str, str]]:
    if kind == "corruptions":
        from cema_cli.corruptions import COMMON, EXTRA

        return [(n, "common (in 'all')") for n in COMMON] + [(n, "extra (held out for validation)") for n in EXTRA]
    from cema_cli.data import DATASETS
    from cema_cli.models import MODELS
    from cema_cli.strategies import STRATEGIES

    if kind == "methods":
        return [(e.name, f"({method_traits(e.name)}) {e.summary}") for e in STRATEGIES.entries()]
    registry = {"datasets": DATASETS, "models": MODELS}[kind]
    return [(e.name, e.summary) for e in registry.entries()]


def method_traits(name: str) -> str:
    """Where a method runs (default first) and whether it needs backward passes. Reading the
    strategies' declared ``placements`` imports them (and torch): only `cema list methods` does."""
    from cema_cli.strategies import STRATEGIES
    from cema_cli.strategies.base import backward_free_of, placements_of

    target = STRATEGIES.get(name)
    placements = placements_of(target)
    where = f"{placements[0]} only" if len(placements) == 1 else f"{'/'.join(placements)}, default {placements[0]}"
    return f"{where}; {'backward-free' if backward_free_of(target) else 'backward passes'}"


def prepare(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    with user_errors(verbose):
        from cema_cli.run.runner import prepare_models

        start = time.perf_counter()
        paths = prepare_models(console)
        for path in paths:
            console.print(f"weights {path}")
        console.print(f"models ready in {time.perf_counter() - start:.1f} s")

