"""Running a study with its files and progress: one run (``execute``) or a fleet
(``cema bench|compare --edges N`` or a TOML ``[fleet]`` table). A fleet: run it (cema_cli/run/fleet.py),
write its files and print its tables. Files under --out: results.csv (one row per edge and
domain, with an ``edge`` column), batches.csv, independent.csv (each edge run alone), fleet.csv
(one summary line per method) and run.json (with a ``fleet`` section), each written atomically."""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cema_cli.cli.common import build_configs, console, default_out_dir, explicit_flags, link_options
from cema_cli.errors import CemaError
from cema_cli.run.fleet_config import FleetConfig, edge_configs, fleet_from_table, fleet_table, rotated_edges

# Fleet flags and their defaults (None: the flag was not given).
FLEET_FLAGS = {"cloud_batching": "per-edge", "student": None, "foundation": "shared", "cloud_capacity": None,
               "cloud_gflops_per_tick": None, "scheduler": "round-robin", "independent": True}


def fleet_requested(opts: dict[str, Any]) -> bool:
    """``--edges`` given, or a --config file with a [fleet] table; fleet flags alone are refused."""
    wanted = opts.get("edges") is not None or bool(fleet_table(opts.get("config")))
    stray = sorted(f for f in FLEET_FLAGS if f in explicit_flags(opts["ctx"]))
    if stray and not wanted:
        flags = ", ".join("--" + f.replace("_", "-") for f in stray)
        raise CemaError(f"{flags} configure a fleet; add --edges N (or a [fleet] table in --config), or drop them.")
    return wanted


def build_fleet(opts: dict[str, Any]) -> FleetConfig:
    """The fleet of the flags and the [fleet] table; flags typed on the command line win."""
    explicit = explicit_flags(opts["ctx"])
    values: dict[str, Any] = fleet_from_table(opts["config"], fleet_table(opts["config"])) if opts.get("config") else {}
    if opts.get("edges") is not None:
        values["edges"] = rotated_edges(opts["edges"])
    for flag, default in FLEET_FLAGS.items():
        if flag in explicit or flag not in values:
            values[flag] = opts.get(flag, default)
    if values["student"] is None:  # pooled batching trains one cloud model: the shared student
        values["student"] = "shared" if values["cloud_batching"] == "pooled" else "per-edge"
    return FleetConfig(**values).validate()


def execute_fleet(methods: list[str], opts: dict[str, Any], console: Console) -> Any:
    """Validate, run the fleet with its files kept current, print the tables; return the result."""
    from cema_cli.run.api import check_method_options
    from cema_cli.results.run_folder import check_out_dir

    if opts.get("seeds") is not None or opts.get("executor") is not None:
        raise CemaError("--seeds and --executor run single-edge cells; run a fleet without them (one seed per command).")
    fleet = build_fleet(opts)
    if "protocol" not in explicit_flags(opts["ctx"]):
        opts = {**opts, "protocol": "continual"}  # fleets stream continually by default (a --config protocol still wins)
    configs = build_configs(methods, opts)
    if len(configs) > 1:
        raise CemaError("a fleet runs one uplink and one downlink budget; give one value each (or per edge in [[fleet.edges]]).")
    config = configs[0]
    check_method_options(config)
    edge_configs(config, fleet)  # each edge's own settings, before the run folder exists
    out = opts["out"] or default_out_dir(methods)
    live = live_fleet_link(opts, fleet, config)
    check_out_dir(out, opts["force"])
    if live is not None:
        return execute_live_fleet(config, fleet, live, out, console, opts)
    result = run_fleet_with_files(config, fleet, out, console, " ".join(["cema", *sys.argv[1:]]), opts["force"], opts["threads"])
    files = ["results.csv", "fleet.csv", *(["independent.csv"] if result.independent else []), "batches.csv", "run.json"]
    console.print(f"results written to [bold]{escape(str(out))}[/] ({', '.join(files)})")
    console.print(edge_table(result.rows))
    for table in fleet_summary_table(result.summary):
        console.print(table)
    return result


def run_fleet_with_files(config: Any, fleet: FleetConfig, out: Path, console: Console, command: str, force: bool,
                         threads: int | None) -> Any:
    """runner.run_with_files for a fleet: a locked folder, rows written as they finish, the
    summary and run.json at the end; a bad input before the first row leaves no folder."""
    from cema_cli.results import report
    from cema_cli.run.api import Events, environment, resolve_device
    from cema_cli.run.fleet import run_fleet
    from cema_cli.run.runner import FileSink, held_folder, new_progress, now, sigterm_as_interrupt
    from cema_cli.run.threads import apply_threads, threads_per_worker

    env = environment(resolve_device(config.device))
    threads = threads_per_worker(1, threads)
    apply_threads(threads)
    with held_folder(out, force, lambda: FileSink(out, config, command)) as (held, sink):
        sink.meta["fleet"] = fleet_meta(fleet)
        sink.write_meta(environment=env, threads=threads)
        with sigterm_as_interrupt(), new_progress(console) as progress:
            task = progress.add_task("fleet", total=None)
            def on_batch(record: dict[str, Any]) -> None:
                sink.batches.append(record)
                if record.get("edge", 0) == 0:  # the bar follows edge 0, whose domain sizes it shows
                    progress.advance(task)

            events = Events(on_row=sink.add_row, on_batch=on_batch,
                            on_domain_start=lambda method, c, s, batches: progress.reset(task, total=batches, description=escape(f"{method} {c}-{s} (edge 0)")))
            result = run_fleet(config, fleet, events)
    if result.independent:
        report.write_csv(report.results_frame(result.independent), out / "independent.csv")
    import pandas as pd

    report.write_csv(pd.DataFrame(result.summary), out / "fleet.csv")
    sink.meta["fleet"]["summary"] = result.summary
    sink.write_meta(status="finished", finished_rows=len(result.rows), finished=now())
    held.release()
    return result


def live_fleet_link(opts: dict[str, Any], fleet: FleetConfig, config: Any) -> Any:
    """The live link of a fleet of edge processes, or None for the simulated fleet."""
    links = link_options(opts)
    live = next((link for link in links if link is not None), None)
    if live is None:
        return None
    if len(links) > 1:
        raise CemaError("--link simulated,live compares one edge's run; a fleet runs over one link: give --link live or simulated.")
    from cema_cli.link.fleet import check_fleet

    check_fleet(fleet)
    live.check_run(config)
    return live


def execute_live_fleet(config: Any, fleet: FleetConfig, link: Any, out: Path, console: Console, opts: dict[str, Any]) -> Any:
    """A fleet of edge processes against one server (cema_cli/link/fleet.py): results.csv as
    edges finish, fleet.csv with the server's measurements, run.json with its statistics."""
    import pandas as pd

    from cema_cli.link.fleet import live_summary, run_live_fleet
    from cema_cli.results import report
    from cema_cli.run.runner import FileSink, held_folder, now, sigterm_as_interrupt

    with held_folder(out, opts["force"], lambda: FileSink(out, config, " ".join(["cema", *sys.argv[1:]]))) as (held, sink):
        sink.meta["fleet"] = fleet_meta(fleet)
        sink.write_meta(link={**{k: v for k, v in vars(link).items() if k != "token"}, "edges": fleet.size})
        console.print(f"{fleet.size} edge processes against one cloud server; rows are written as edges finish")
        with sigterm_as_interrupt():
            result = run_live_fleet(config, fleet, link, out, sink.add_row)
        rows = sorted(result.rows, key=lambda r: (r["method"], r["edge"]))
        summary = [live_summary(m, fleet, [r for r in rows if r["method"] == m], result) for m in dict.fromkeys(r["method"] for r in rows)]
        report.write_csv(pd.DataFrame(summary), out / "fleet.csv")
        sink.meta["fleet"].update(summary=summary, server=result.server, failed_edges=result.failed)
        sink.write_meta(status="finished" if not result.failed else "failed", finished_rows=len(rows), finished=now())
    held.release()
    console.print(f"results written to [bold]{escape(str(out))}[/] (results.csv, fleet.csv, run.json, cloud/server.json)")
    console.print(edge_table(rows))
    console.print(live_fleet_table(summary))
    console.print(server_line(summary), highlight=False)
    if result.failed:
        raise CemaError(f"{len(result.failed)} edge process(es) failed ({', '.join(f'edge {e}: {why}' for e, why in result.failed.items())}); "
                        f"their finished rows are kept in {out / 'results.csv'}.")
    from cema_cli.run.fleet import FleetResult

    return FleetResult(rows, [], summary)


def live_fleet_table(summary: list[dict[str, Any]]) -> Table:
    """Per method: the edges' accuracy and what the link lost; the server's figures are the run's."""
    table = Table(title=f"live fleet of {summary[0]['edges'] if summary else 0} edge processes", box=box.SIMPLE_HEAD,
                  caption="acc: mean/worst edge; lost: uploads that found no cloud; not ok: rows whose link had an outage or loss")
    for name in ("method", "acc %", "uploads", "wire MB", "lost", "not ok"):
        table.add_column(name, justify="left" if name == "method" else "right", no_wrap=True)
    for s in summary:
        table.add_row(s["method"], f"{100 * (s['mean_accuracy'] or 0):.2f}/{100 * (s['worst_edge_accuracy'] or 0):.2f}", str(s["uploads"]),
                      f"{(s['wire_uplink_bytes'] + s['wire_downlink_bytes']) / 1e6:.2f}", str(s["uploads_lost"]), str(s["links_not_ok"]))
    return table


def server_line(summary: list[dict[str, Any]]) -> str:
    """What the server measured over the whole run (every method's sessions)."""
    s = summary[0] if summary else {}
    return (f"server: utilisation {100 * (s.get('cloud_utilisation') or 0):.0f}% of {s.get('cloud_capacity')} worker(s), "
            f"queue wait mean {s.get('mean_queue_wait_s') or 0:.3f} s p99 {s.get('p99_queue_wait_s') or 0:.3f} s, "
            f"request latency p50 {s.get('p50_request_s') or 0:.3f} s p99 {s.get('p99_request_s') or 0:.3f} s "
            f"({s.get('requests') or 0} requests), sessions held at most {s.get('peak_sessions')}, "
            f"peak memory {(s.get('server_peak_rss_bytes') or 0) / 1e6:.0f} MB")


def fleet_meta(fleet: FleetConfig) -> dict[str, Any]:
    """run.json's record of the fleet: its options and each edge's own settings."""
    data = asdict(replace(fleet, edges=()))
    data["edges"] = [asdict(e) for e in fleet.edges]
    return data


def edge_table(rows: list[dict[str, Any]]) -> Table:
    """Accuracy % per method and edge, over that edge's domains."""
    from cema_cli.run.fleet import edge_accuracy

    methods = list(dict.fromkeys(r["method"] for r in rows))
    per = {m: edge_accuracy([r for r in rows if r["method"] == m]) for m in methods}
    edges = sorted({e for acc in per.values() for e in acc})
    table = Table(title="fleet: accuracy % per edge", box=box.SIMPLE_HEAD)
    table.add_column("method", no_wrap=True)
    for edge in edges:
        table.add_column(f"edge {edge}", justify="right")
    for method in methods:
        table.add_row(method, *(f"{100 * per[method].get(e, 0.0):.2f}" for e in edges))
    return table


def fleet_summary_table(summary: list[dict[str, Any]]) -> list[Table]:
    """fleet.csv as two tables: accuracy with the collaboration gain, and what it cost."""
    accuracy = Table(title="fleet accuracy %", box=box.SIMPLE_HEAD, caption="gain: fleet mean minus the mean of the edges run alone (points)")
    for name in ("method", "edges", "batching", "student", "mean", "worst edge", "alone", "gain"):
        accuracy.add_column(name, justify="left" if name in ("method", "batching", "student") else "right", no_wrap=True)
    cost = Table(title="fleet cost", box=box.SIMPLE_HEAD,
                 caption="wait: ticks an upload waits for the cloud; param age: batches since the edge's parameters were sent")
    for name in ("method", "up MB", "down MB", "cloud steps/tick", "util", "max queue", "wait", "param age"):
        cost.add_column(name, justify="left" if name == "method" else "right", no_wrap=True)
    for s in summary:
        alone, gain, util = s["independent_mean_accuracy"], s["collaboration_gain"], s["cloud_utilisation"]
        accuracy.add_row(s["method"], str(s["edges"]), s["cloud_batching"], s["student"], f"{100 * s['mean_accuracy']:.2f}",
                         f"{100 * s['worst_edge_accuracy']:.2f}", "-" if alone is None else f"{100 * alone:.2f}",
                         "-" if gain is None else f"{100 * gain:+.2f}")
        cost.add_row(s["method"], f"{s['uplink_bytes'] / 1e6:.2f}", f"{s['downlink_bytes'] / 1e6:.3f}", f"{s['cloud_steps_per_tick']:.2f}",
                     "-" if util is None else f"{100 * util:.0f}%", str(s["longest_queue"]), f"{s['mean_queue_wait_ticks']:.2f}",
                     f"{s['mean_staleness_batches']:.2f}")
    return [accuracy, cost]


def print_sweep(frame: Any) -> None:
    """With several uplink budgets, the accuracy-versus-upload table as well."""
    from cema_cli.results import report

    if report.budget_points(frame) > 1:
        console.print(report.sweep_table(frame))


def execute(methods: list[str], opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate, run with a progress bar, and keep results.csv/batches.csv/run.json up to date."""
    from cema_cli.run.api import check_method_options
    from cema_cli.results.run_folder import check_out_dir
    from cema_cli.run.runner import run_with_files

    configs = build_configs(methods, opts)
    out = opts["out"] or default_out_dir(methods)
    links = link_options(opts, out / "cloud")  # a live link's local server writes its log and statistics there
    for link in links:
        if link is not None:
            link.check_run(configs[0])
    check_method_options(configs[0])  # before the run folder exists
    check_out_dir(out, opts["force"])  # before anything is created: a bad input leaves no folder
    rows = run_with_files(configs, out, console, command=" ".join(["cema", *sys.argv[1:]]), force=opts["force"], threads=opts["threads"],
                          links=links)
    console.print(f"results written to [bold]{escape(str(out))}[/] (results.csv, batches.csv, run.json)")
    return rows

