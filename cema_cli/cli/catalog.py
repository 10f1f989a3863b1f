"""``cema list`` and ``cema prepare``: what can be run, and the embedded default's models."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from cema_cli.cli.common import console, user_errors
from cema_cli.cli.options import split_list
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
        from cema_cli.data import NATURAL_DOMAINS, SHIFT_DOMAINS

        modal = [(n, f"{dataset}: natural shift") for dataset, names in NATURAL_DOMAINS.items() for n in names]
        modal += [(n, f"{dataset}: generated shift, severity 1-5") for dataset, names in SHIFT_DOMAINS.items() for n in names]
        return [(n, "common (in 'all')") for n in COMMON] + [(n, "extra (held out for validation)") for n in EXTRA] + modal
    from cema_cli.data import DATASETS
    from cema_cli.models import MODELS
    from cema_cli.strategies import STRATEGIES

    if kind == "methods":
        return [(e.name, f"({method_traits(e.name)}) {e.summary}") for e in STRATEGIES.entries()]
    registry = {"datasets": DATASETS, "models": MODELS}[kind]
    return [(e.name, e.summary) for e in registry.entries()] + (robustbench_models() if kind == "models" else [])


def robustbench_models() -> list[tuple[str, str]]:
    """The RobustBench zoo names cema defines (besides any timm:<name>[.tag] and torchvision:<name>[@WEIGHTS])."""
    from cema_cli.models.robustbench import ZOO

    return [(f"robustbench:{name}", f"{entry.about}, {entry.num_classes} classes") for name, entry in ZOO.items()]


def method_traits(name: str) -> str:
    """Where a method runs (default first) and whether it needs backward passes. Reading the
    strategies' declared ``placements`` imports them (and torch): only `cema list methods` does."""
    from cema_cli.strategies import STRATEGIES
    from cema_cli.strategies.base import backward_free_of, placements_of

    target = STRATEGIES.get(name)
    placements = placements_of(target)
    where = f"{placements[0]} only" if len(placements) == 1 else f"{'/'.join(placements)}, default {placements[0]}"
    return f"{where}; {'backward-free' if backward_free_of(target) else 'backward passes'}"


def prepare(
    dataset: Annotated[str, typer.Option("--dataset", help="mnist, watch, sentiment, a comma list, or all.")] = "all",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    with user_errors(verbose):
        from cema_cli.cli.progress import PREPARED_DATASETS, prepare_models

        start = time.perf_counter()
        paths = prepare_models(console, PREPARED_DATASETS if dataset.strip() == "all" else tuple(split_list(dataset)))
        for path in paths:
            console.print(f"ready {path}")
        console.print(f"data and models ready in {time.perf_counter() - start:.1f} s")

