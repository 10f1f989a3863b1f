"""CLI-side glue: run the API with a rich progress bar and keep the output files current.

results.csv is rewritten atomically after every finished (method, domain), so an interrupted
run keeps every row it finished; run.json records the config, the environment and the status.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cema_cli import report
from cema_cli.config import RunConfig
from cema_cli.results import SCHEMA_VERSION


def new_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=False,
    )


class FileSink:
    """Collects rows and batch records and writes them under ``out``."""

    def __init__(self, out: Path, config: RunConfig, command: str) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "config": asdict(config), "command": command, "status": "running",
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        report.write_csv(report.results_frame(self.rows), self.out / "results.csv")
        report.write_csv(report.batches_frame(self.batches), self.out / "batches.csv")

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        report.write_json(self.meta, self.out / "run.json")


def run_with_files(configs: list[RunConfig], out: Path, console: Console, command: str) -> list[dict[str, Any]]:
    """Run each configuration (one per budget point of a sweep) into one set of files."""
    from cema_cli.api import Events, environment, resolve_device, run_benchmark

    config = configs[0]
    sink = FileSink(out, config, command)
    budgets = [(c.channel.uplink_budget_bytes, c.channel.downlink_budget_bytes) for c in configs]
    sink.write_meta(environment=environment(resolve_device(config.device)), budget_points=budgets)
    with new_progress(console) as progress:
        task = progress.add_task("starting", total=None)
        model_tasks: dict[str, Any] = {}

        def on_model_progress(name: str, done: int, total: int) -> None:
            if name not in model_tasks:
                model_tasks[name] = progress.add_task(f"training {name} (first use, cached after)", total=total)
            progress.update(model_tasks[name], completed=done)

        def on_domain_start(method: str, corruption: str, severity: int, batches: int) -> None:
            progress.reset(task, total=batches, description=f"{method} {corruption}-{severity}")

        events = Events(
            on_row=sink.add_row,
            on_batch=lambda record: (sink.batches.append(record), progress.advance(task)),
            on_domain_start=on_domain_start,
            on_model_progress=on_model_progress,
        )
        try:
            rows = [row for point in configs for row in run_benchmark(point, events)]
        except BaseException:
            sink.write_meta(status="interrupted", finished_rows=len(sink.rows))
            raise
    sink.write_meta(status="complete", finished_rows=len(rows), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return rows


def prepare_models(console: Console) -> list[Path]:
    """Find the shipped (or cached) embedded models, training a recipe that has neither."""
    from cema_cli.models import embedded

    with new_progress(console) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"training {name}", total=total)
            progress.update(tasks[name], completed=done)

        for name in embedded.RECIPES:
            embedded.load_or_train(name, on_progress)
    return [embedded.checkpoint_path(name) for name in embedded.RECIPES]
