"""A run's folder kept current while it runs (``study.run_study`` calls these): a single run
(``run_with_files``) or a fleet (``run_fleet_with_files``).

results.csv is rewritten atomically after every finished (method, domain), so an interrupted
run keeps every row it finished; run.json records the config, the environment and the status
(run_folder.py: the folder policy, the lock and the statuses). Progress goes to the caller's
``Events``; nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from cema_cli.config import RunConfig
from cema_cli.errors import CemaError, Interrupted
from cema_cli.results import report
from cema_cli.results.run_folder import claim
from cema_cli.results.schema import SCHEMA_VERSION
from cema_cli.run.events import Events, also


class FileSink:
    """Collects rows and batch records and writes them under ``out``."""

    def __init__(self, out: Path, config: RunConfig, command: str) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "config": asdict(config), "command": command, "status": "running",
                                     "pid": os.getpid(), "host": socket.gethostname(), "started": now(), "finished_rows": 0}

    def add_row(self, row: dict[str, Any]) -> None:
        """Keep a finished row; it counts as kept once results.csv holds it."""
        rows = [*self.rows, row]
        report.write_csv(report.results_frame(rows), self.out / "results.csv")
        self.rows = rows
        report.write_csv(report.batches_frame(self.batches), self.out / "batches.csv")
        self.write_meta(finished_rows=len(self.rows), updated=now(), models=model_records(self.rows))

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        report.write_json(self.meta, self.out / "run.json")


def model_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """run.json's record of every model the rows used: name, resolved weights, the checkpoint's
    sha256 and the input size it was fed (the rows' own columns, once per distinct model)."""
    records = {}
    for row in rows:
        for role in ("edge", "cloud"):
            weights = row.get(f"{role}_weights")
            if row.get(f"{role}_model") and weights not in (None, "none", "unused"):
                record = {"role": role, "model": row[f"{role}_model"], "weights": weights,
                          "sha256": row.get(f"{role}_weights_sha256", ""), "input_size": row.get(f"{role}_input_size", "")}
                records[tuple(record.values())] = record
    return list(records.values())


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
        return {"status": "interrupted", "signal": signal_name(error)}
    kind = "failed" if isinstance(error, (CemaError, OSError)) else "crashed"  # OSError: a full disk, a permission
    return {"status": kind, "error": " ".join(f"{type(error).__name__}: {error}".split())}


def signal_name(error: BaseException) -> str:
    return "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"


def interrupted(error: BaseException, kept: int, out: Path, unit: str = "row") -> Interrupted:
    """The interrupt as the caller reports it: what was kept, and where."""
    return error if isinstance(error, Interrupted) else Interrupted(signal_name(error), kept, out, unit)


@contextlib.contextmanager
def held_folder(out: Path, force: bool, sink_for: Any, events: Events) -> Iterator[tuple[Any, "FileSink"]]:
    """Lock ``out`` (run_folder.py) and make its sink with ``sink_for()``; on a stop, a bad input
    found before the first row leaves no folder, any other keeps the rows and says why in
    run.json (if the disk lets it), and the lock always goes. The caller writes the finished
    status and releases the lock."""
    held = claim(out, force)
    if held.lock.note():
        getattr(events, "on_note", lambda text: None)(held.lock.note())
    sink = sink_for()
    try:
        yield held, sink
    except BaseException as error:
        if isinstance(error, CemaError) and not sink.rows:
            held.discard()
            raise
        try:
            sink.write_meta(**end_status(error), finished_rows=len(sink.rows), ended=now())
        except OSError:
            pass  # a full disk: the error being raised names the file that failed
        finally:
            held.release()
        if isinstance(error, KeyboardInterrupt):
            raise interrupted(error, len(sink.rows), out) from None
        raise


def with_sink(events: Events, sink: FileSink) -> Events:
    """The caller's events, after the sink has kept each row and batch record."""
    return Events(on_row=also(sink.add_row, events.on_row), on_batch=also(sink.batches.append, events.on_batch),
                  on_domain_start=events.on_domain_start, on_model_progress=events.on_model_progress)


def run_with_files(configs: list[RunConfig], out: Path, command: str, force: bool = False, threads: int | None = None,
                   events: Events | None = None, links: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run each configuration (one per budget point of a sweep) into one set of files under
    ``out``, held with a lock (run_folder.py), with ``threads`` torch threads (default: the
    thread policy of threads.py), over each of ``links`` in turn (None: the simulated channel;
    a LinkOptions: a real link). A bad input found before the first row leaves no folder
    behind; any other stop keeps the finished rows and says why in run.json."""
    from cema_cli.run.api import environment, resolve_device, run_benchmark
    from cema_cli.run.threads import apply_threads, threads_per_worker

    events = events or Events()
    env = environment(resolve_device(configs[0].device))
    threads = threads_per_worker(1, threads)
    apply_threads(threads)
    budgets = [(c.channel.uplink_budget_bytes, c.channel.downlink_budget_bytes) for c in configs]
    with held_folder(out, force, lambda: FileSink(out, configs[0], command), events) as (held, sink):
        links = links or [None]
        sink.write_meta(environment=env, budget_points=budgets, threads=threads, links=[link_meta(link) for link in links])
        with sigterm_as_interrupt():
            rows = [row for link in links for point in configs for row in run_benchmark(point, with_sink(events, sink), link=link)]
        sink.write_meta(status="finished", finished_rows=len(rows), finished=now())
    held.release()
    return rows


def link_meta(link: Any) -> dict[str, Any]:
    """run.json's record of a link: its options, never its token."""
    return {"mode": "simulated"} if link is None else {**asdict(link), "token": None}


def run_live_fleet_with_files(config: RunConfig, fleet: Any, link: Any, out: Path, command: str, force: bool = False,
                              events: Events | None = None) -> tuple[Any, dict[int, str]]:
    """A fleet of edge processes against one server (cema_cli/link/fleet.py): results.csv as
    edges finish, fleet.csv with the server's measurements, run.json with its statistics.
    Returns the fleet's result and the edges whose process failed (edge -> why)."""
    import pandas as pd

    from cema_cli.link.fleet import live_summary, run_live_fleet
    from cema_cli.run.fleet import FleetResult

    events = events or Events()
    with held_folder(out, force, lambda: FileSink(out, config, command), events) as (held, sink):
        sink.meta["fleet"] = fleet_meta(fleet)
        sink.write_meta(link={**link_meta(link), "edges": fleet.size})
        with sigterm_as_interrupt():
            result = run_live_fleet(config, fleet, link, out, sink.add_row)
        rows = sorted(result.rows, key=lambda r: (r["method"], r["edge"]))
        summary = [live_summary(m, fleet, [r for r in rows if r["method"] == m], result) for m in dict.fromkeys(r["method"] for r in rows)]
        report.write_csv(pd.DataFrame(summary), out / "fleet.csv")
        sink.meta["fleet"].update(summary=summary, server=result.server, failed_edges=result.failed)
        sink.write_meta(status="finished" if not result.failed else "failed", finished_rows=len(rows), finished=now())
    held.release()
    return FleetResult(rows, [], summary), result.failed


def run_fleet_with_files(config: RunConfig, fleet: Any, out: Path, command: str, force: bool = False,
                         threads: int | None = None, events: Events | None = None) -> Any:
    """``run_with_files`` for a fleet: rows written as they finish; independent.csv (each edge
    alone), fleet.csv (one summary line per method) and run.json's ``fleet`` section at the end."""
    import pandas as pd

    from cema_cli.run.api import environment, resolve_device
    from cema_cli.run.fleet import run_fleet
    from cema_cli.run.threads import apply_threads, threads_per_worker

    events = events or Events()
    env = environment(resolve_device(config.device))
    threads = threads_per_worker(1, threads)
    apply_threads(threads)
    with held_folder(out, force, lambda: FileSink(out, config, command), events) as (held, sink):
        sink.meta["fleet"] = fleet_meta(fleet)
        sink.write_meta(environment=env, threads=threads)
        with sigterm_as_interrupt():
            result = run_fleet(config, fleet, with_sink(events, sink))
        if result.independent:
            report.write_csv(report.results_frame(result.independent), out / "independent.csv")
        report.write_csv(pd.DataFrame(result.summary), out / "fleet.csv")
        sink.meta["fleet"]["summary"] = result.summary
        sink.write_meta(status="finished", finished_rows=len(result.rows), finished=now())
    held.release()
    return result


def fleet_meta(fleet: Any) -> dict[str, Any]:
    """run.json's record of the fleet: its options and each edge's own settings."""
    data = asdict(replace(fleet, edges=()))
    data["edges"] = [asdict(e) for e in fleet.edges]
    return data
