"""A fleet of edge processes against one cloud server: ``cema bench|compare --edges N --link live``.

Each edge of the simulated fleet's configuration (run/fleet_config.py: edge i's corruption order
rotated by i, or the [[fleet.edges]] of a TOML file) runs as its own process, with its own
connection and sessions; the cloud is one ``cema serve`` with the fleet's ``--cloud-capacity``
(worker threads), ``--scheduler`` and ``--foundation``. The processes fork from a server that
imported torch once (multiprocessing's forkserver), so N edges do not hold N copies of it.

Every edge appends each finished row to its own JSON-lines file as it finishes, so a crashed
edge or launcher loses no finished row. While the fleet runs the launcher samples the server's
statistics (sessions held, memory); the summary adds the server's measured utilisation, queue
waits, request latency and per-edge bytes.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cema_cli.config import RunConfig
from cema_cli.errors import CemaError
from cema_cli.link.options import LinkOptions
from cema_cli.run.fleet_config import FleetConfig, edge_configs

SAMPLE_EVERY_S = 1.0


@dataclass
class LiveFleetResult:
    rows: list[dict[str, Any]]
    server: dict[str, Any]  # the server's last statistics
    peak_sessions: int = 0
    peak_rss_bytes: int = 0
    peak_edges_pss_bytes: int = 0  # the edge processes together (proportional set size: shared pages split)
    failed: dict[int, str] = field(default_factory=dict)  # edge -> why its process failed


def check_fleet(fleet: FleetConfig) -> None:
    """The fleet options a server of processes honours; the others are refused."""
    if fleet.cloud_batching != "per-edge" or fleet.student != "per-edge":
        raise CemaError("a live fleet keeps one student per edge and learns each edge's uploads apart; "
                        "drop --cloud-batching pooled / --student shared, or use the simulated fleet (--link simulated).")
    if fleet.cloud_gflops_per_tick is not None:
        raise CemaError("--cloud-gflops-per-tick budgets the simulated fleet's ticks; a live fleet's cloud is measured: "
                        "limit it with --cloud-capacity (worker threads) instead.")


def server_args(fleet: FleetConfig, edges: int) -> list[str]:
    """The local server's fleet options; two connections more than the edges: the launcher's probe, and one spare."""
    return ["--cloud-capacity", str(fleet.cloud_capacity or 1), "--scheduler", fleet.scheduler,
            "--foundation", fleet.foundation, "--max-edges", str(edges + 2)]


def edge_main(index: int, config: dict[str, Any], link: dict[str, Any], rows_path: str) -> None:
    """One edge process: its run over the link, each finished row appended to ``rows_path``."""
    import torch

    from cema_cli.run.api import Events, run_benchmark
    from cema_cli.run.sweep import config_from_dict

    torch.set_num_threads(1)

    def keep(row: dict[str, Any]) -> None:
        with open(rows_path, "a") as out:
            out.write(json.dumps({**row, "edge": index}) + "\n")

    try:
        run_benchmark(config_from_dict(config), Events(on_row=keep), link=LinkOptions(**link))
    except BaseException as error:  # noqa: BLE001 - the launcher reports it; the rows written stay
        Path(rows_path).with_suffix(".error").write_text(f"{type(error).__name__}: {error}")
        raise SystemExit(1) from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete lines of an edge's rows file (a torn last line is not a finished row)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def run_live_fleet(base: RunConfig, fleet: FleetConfig, link: LinkOptions, folder: Path,
                   on_row: Callable[[dict[str, Any]], None] = lambda row: None) -> LiveFleetResult:
    """Every edge of the fleet as a process against one server (a local one unless ``cloud_url``)."""
    from cema_cli.link.client import StatusProbe
    from cema_cli.link.local import local_server

    check_fleet(fleet)
    configs = edge_configs(base, fleet)
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if link.cloud_url is None:
            local = stack.enter_context(local_server(replace(link, server_dir=str(folder / "cloud")), 1, base.device,
                                                     server_args(fleet, len(configs))))
            link = local.options()
        paths = [folder / f"edge-{i}.rows.jsonl" for i in range(len(configs))]
        probe = StatusProbe(link)
        stack.callback(probe.close)
        processes = start_edges(configs, link, paths)
        stack.callback(stop_edges, processes)
        return watch(processes, paths, probe.status, on_row)


def start_edges(configs: list[RunConfig], link: LinkOptions, paths: list[Path]) -> list[Any]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["cema_cli.run.api", "cema_cli.link.client"])
    processes = []
    for index, (config, path) in enumerate(zip(configs, paths)):
        path.unlink(missing_ok=True)
        path.with_suffix(".error").unlink(missing_ok=True)
        options = asdict(replace(link, edge_id=f"{link.edge_id or 'edge'}-{index}"))
        process = context.Process(target=edge_main, args=(index, asdict(config), options, str(path)), name=f"cema-edge-{index}")
        process.start()
        processes.append(process)
    return processes


def watch(processes: list[Any], paths: list[Path], status: Callable[[], dict[str, Any]],
          on_row: Callable[[dict[str, Any]], None]) -> LiveFleetResult:
    """Wait for every edge, passing on rows as their edges finish; sample the server meanwhile."""
    result = LiveFleetResult([], {})
    pending = dict(enumerate(processes))
    while pending:
        with contextlib.suppress(Exception):  # a busy server answers late: the next sample will do
            sample(result, status())
        result.peak_edges_pss_bytes = max(result.peak_edges_pss_bytes, sum(pss(p.pid) for p in pending.values()))
        for index, process in list(pending.items()):
            if not process.is_alive():
                process.join()
                rows = read_rows(paths[index])
                result.rows.extend(rows)
                for row in rows:
                    on_row(row)
                if process.exitcode != 0:
                    error = paths[index].with_suffix(".error")
                    result.failed[index] = error.read_text() if error.exists() else f"exit code {process.exitcode}"
                del pending[index]
        time.sleep(SAMPLE_EVERY_S)
    with contextlib.suppress(Exception):
        sample(result, status())
    return result


def sample(result: LiveFleetResult, stats: dict[str, Any]) -> None:
    result.server = stats
    result.peak_sessions = max(result.peak_sessions, stats.get("sessions_held", 0))
    result.peak_rss_bytes = max(result.peak_rss_bytes, stats.get("peak_rss_bytes", 0))


def pss(pid: int | None) -> int:
    """A process's proportional set size in bytes (Linux; 0 elsewhere or once it has ended)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def stop_edges(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(30)
        if process.is_alive():
            process.kill()
            process.join()


def live_summary(method: str, fleet: FleetConfig, rows: list[dict[str, Any]], result: LiveFleetResult) -> dict[str, Any]:
    """One line of fleet.csv for a live fleet: accuracy per edge, bytes, and what the server measured."""
    from cema_cli.run.fleet import edge_accuracy

    accuracy = edge_accuracy(rows)
    stats = result.server
    wait, latency = stats.get("queue_wait_s", {}), stats.get("request_latency_s", {})
    return {
        "method": method, "edges": fleet.size, "link": "live", "cloud_capacity": fleet.cloud_capacity or 1, "scheduler": fleet.scheduler,
        "foundation": fleet.foundation, "samples": sum(r["samples"] for r in rows),
        "mean_accuracy": sum(accuracy.values()) / len(accuracy) if accuracy else None,
        "worst_edge_accuracy": min(accuracy.values(), default=None),
        **{k: sum(r[k] for r in rows) for k in ("uploads", "uplink_bytes", "downlink_bytes", "wire_uplink_bytes", "wire_downlink_bytes",
                                                "uploads_lost")},
        "links_not_ok": sum(r["link_status"] != "ok" for r in rows),
        "cloud_utilisation": stats.get("utilisation"), "mean_queue_wait_s": wait.get("mean"), "p99_queue_wait_s": wait.get("p99"),
        "p50_request_s": latency.get("p50"), "p99_request_s": latency.get("p99"), "requests": latency.get("count"),
        "peak_sessions": result.peak_sessions, "server_peak_rss_bytes": result.peak_rss_bytes,
        "edges_peak_pss_bytes": result.peak_edges_pss_bytes,
        "mean_staleness_batches": sum(r["param_delay_batches"] * r["samples"] for r in rows) / max(1, sum(r["samples"] for r in rows)),
    }
