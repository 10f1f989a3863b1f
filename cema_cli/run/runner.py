"""CLI-side glue: run the API with a rich progress bar and keep the output files current.

results.csv is rewritten atomically after every finished (method, domain), so an interrupted
run keeps every row it finished; run.json records the config, the environment and the status
(run_folder.py: the folder policy, the lock and the statuses).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cema_cli.results import report
from cema_cli.config import RunConfig
from cema_cli.errors import CemaError
from cema_cli.results.schema import SCHEMA_VERSION
from cema_cli.results.run_folder import claim


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
                                     "pid": os.getpid(), "host": socket.gethostname(), "started": now(), "finished_rows": 0}

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        report.write_csv(report.results_frame(self.rows), self.out / "results.csv")
        report.write_csv(report.batches_frame(self.batches), self.out / "batches.csv")
        self.write_meta(finished_rows=len(self.rows), updated=now())

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        report.write_json(self.meta, self.out / "run.json")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the finished rows are kept and the run is "interrupted"."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def on_sigterm(signum: int, frame: Any) -> None:
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_status(error: BaseException) -> dict[str, Any]:
    """run.json fields for a run that stopped early."""
    if isinstance(error, KeyboardInterrupt):
        return {"status": "interrupted", "signal": "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"}
    kind = "failed" if isinstance(error, CemaError) else "crashed"
    return {"status": kind, "error": " ".join(f"{type(error).__name__}: {error}".split())}


@contextlib.contextmanager
def held_folder(out: Path, force: bool, sink_for: Any) -> Iterator[tuple[Any, "FileSink"]]:
    """Lock ``out`` (run_folder.py) and make its sink with ``sink_for()``; on a stop, a bad input
    found before the first row leaves no folder, any other keeps the rows and says why in
    run.json. The caller writes the finished status and releases the lock."""
    held = claim(out, force)
    sink = sink_for()
    try:
        yield held, sink
    except BaseException as error:
        if isinstance(error, CemaError) and not sink.rows:
            held.discard()
        else:
            sink.write_meta(**end_status(error), finished_rows=len(sink.rows), ended=now())
            held.release()
        raise


def run_with_files(configs: list[RunConfig], out: Path, console: Console, command: str, force: bool = False,
                   threads: int | None = None, links: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run each configuration (one per budget point of a sweep) into one set of files under
    ``out``, held with a lock (run_folder.py), with ``threads`` torch threads (default: the
    thread policy of threads.py), over each of ``links`` in turn (None: the simulated channel;
    a LinkOptions: a real link). A bad input found before the first row leaves no folder
    behind; any other stop keeps the finished rows and says why in run.json."""
    from cema_cli.run.api import environment, resolve_device
    from cema_cli.run.threads import apply_threads, threads_per_worker

    env = environment(resolve_device(configs[0].device))
    threads = threads_per_worker(1, threads)
    apply_threads(threads)
    budgets = [(c.channel.uplink_budget_bytes, c.channel.downlink_budget_bytes) for c in configs]
    with held_folder(out, force, lambda: FileSink(out, configs[0], command)) as (held, sink):
        sink.write_meta(environment=env, budget_points=budgets, threads=threads, links=[link_meta(link) for link in links or [None]])
        with sigterm_as_interrupt():
            rows = run_with_progress(configs, sink, console, links or [None])
    sink.write_meta(status="finished", finished_rows=len(rows), finished=now())
    held.release()
    return rows


def link_meta(link: Any) -> dict[str, Any]:
    """run.json's record of a link: its options, never its token."""
    return {"mode": "simulated"} if link is None else {**asdict(link), "token": None}


def run_with_progress(configs: list[RunConfig], sink: FileSink, console: Console, links: list[Any]) -> list[dict[str, Any]]:
    """Run every configuration over every link with a progress bar per domain (and per model trained)."""
    from cema_cli.run.api import Events, run_benchmark

    with new_progress(console) as progress:
        task = progress.add_task("starting", total=None)
        model_tasks: dict[str, Any] = {}

        def on_model_progress(name: str, done: int, total: int) -> None:
            if name not in model_tasks:
                model_tasks[name] = progress.add_task(f"training {name} (first use, cached after)", total=total)
            progress.update(model_tasks[name], completed=done)

        def on_domain_start(method: str, corruption: str, severity: int, batches: int) -> None:
            progress.reset(task, total=batches, description=escape(f"{method} {corruption}-{severity}"))

        events = Events(
            on_row=sink.add_row,
            on_batch=lambda record: (sink.batches.append(record), progress.advance(task)),
            on_domain_start=on_domain_start,
            on_model_progress=on_model_progress,
        )
        return [row for link in links for point in configs for row in run_benchmark(point, events, link=link)]


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
