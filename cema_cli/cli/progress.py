"""Progress on the terminal, drawn from a study's events (run/events.py): a bar per domain of a
run or fleet (and per model trained), or the cells of a grid with a line per worker; notes go
to stderr. No torch import."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cema_cli.cli.common import print_error
from cema_cli.run.events import StudyEvents

SHOWN_WORKERS = 8


def new_progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


class StudyDisplay:
    """``with StudyDisplay(console) as display: run_study(..., events=display.events())``."""

    def __init__(self, console: Console, fleet: bool = False) -> None:
        self.console, self.fleet = console, fleet
        self.progress = new_progress(console)
        self.domain: Any = None
        self.models: dict[str, Any] = {}
        self.overall: Any = None
        self.workers: list[Any] = []
        self.failed = 0

    def __enter__(self) -> "StudyDisplay":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def add_task(self, description: str, **fields: Any) -> Any:
        """A new line of the display, which starts with its first line (so nothing is drawn
        for a study that is refused or only counted)."""
        if not self.progress.live.is_started:
            self.progress.start()
        return self.progress.add_task(description, **fields)

    def events(self) -> StudyEvents:
        return StudyEvents(on_batch=self.on_batch, on_domain_start=self.on_domain_start, on_model_progress=self.on_model_progress,
                           on_cells=self.on_cells, on_cell_start=self.on_cell_start, on_cell_done=self.on_cell_done,
                           on_note=lambda text: print_error(text, "note"))

    # a run or a fleet: one bar for the domain being played (a fleet's edge 0)
    def on_domain_start(self, method: str, corruption: str, severity: int, batches: int) -> None:
        from cema_cli.results.report import domain_label

        description = escape(f"{method} {domain_label({'corruption': corruption, 'severity': severity})}" + (" (edge 0)" if self.fleet else ""))
        if self.domain is None:
            self.domain = self.add_task(description, total=batches)
        self.progress.reset(self.domain, total=batches, description=description)

    def on_batch(self, record: dict[str, Any]) -> None:
        if self.domain is not None and record.get("edge", 0) == 0:  # a fleet's bar follows edge 0
            self.progress.advance(self.domain)

    def on_model_progress(self, name: str, done: int, total: int) -> None:
        if name not in self.models:
            self.models[name] = self.add_task(f"training {name} (first use, cached after)", total=total)
        self.progress.update(self.models[name], completed=done)

    # a grid of cells: the count, and one line per worker slot
    def on_cells(self, total: int, done: int, todo: int, plan: Any) -> None:
        self.overall = self.add_task("cells", total=total, completed=done)
        slots = max(plan.workers, min(todo, SHOWN_WORKERS) if plan.executor == "ray" else 0)
        self.workers = [self.add_task(f"  worker {i}: idle", total=None, visible=i < SHOWN_WORKERS) for i in range(slots)]

    def on_cell_start(self, slot: int, cell: Any) -> None:
        if slot < len(self.workers):
            self.progress.update(self.workers[slot], description=f"  worker {slot}: {cell.label}")

    def on_cell_done(self, slot: int, cell: Any, result: Any) -> None:
        if result.status != "ok":
            self.failed += 1
            self.console.print(f"[red]cell failed[/] {escape(cell.label)}: {escape(result.reason)}", highlight=False)
        self.progress.update(self.overall, advance=1, description=f"cells ({self.failed} failed)" if self.failed else "cells")
        if slot < len(self.workers):
            self.progress.update(self.workers[slot], description=f"  worker {slot}: idle")


PREPARED_DATASETS = ("mnist", "watch", "sentiment")  # the datasets whose data and models ship in packages


def prepare_models(console: Console, datasets: tuple[str, ...] = PREPARED_DATASETS) -> list[Any]:
    """Ready the package-file datasets (watch: seglearn's file read once into the cache;
    sentiment: vaderSentiment's source archive fetched with pip, read into the cache), then find
    the shipped (or cached) models, training a recipe that has neither. Returns the files."""
    from cema_cli.data import sentiment, watch
    from cema_cli.errors import unknown_name
    from cema_cli.models import embedded

    for name in datasets:
        if name not in PREPARED_DATASETS:
            raise unknown_name("dataset to prepare", name, PREPARED_DATASETS)
    files = [watch.prepare()] if "watch" in datasets else []
    files += sentiment.prepare() if "sentiment" in datasets else []
    recipes = [name for name in embedded.all_recipes() if name.split("-")[0] in datasets]
    with new_progress(console) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"training {name}", total=total)
            progress.update(tasks[name], completed=done)

        for name in recipes:
            embedded.load_or_train(name, on_progress)
    return files + [embedded.checkpoint_path(name) for name in recipes]
