"""Who runs a sweep's cells: ``serial`` (in this process), ``process`` (a spawn-context pool)
or ``ray`` (Ray core tasks, an optional extra). Every executor calls ``sweep.run_cell`` with the
cell's configuration and a thread count, so the rows do not depend on which one ran them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from cema_cli.errors import CemaError, unknown_name
from cema_cli.run.sweep import Cell, CellResult, run_cell
from cema_cli.run.threads import cpu_workers, threads_per_worker

EXECUTORS = ("serial", "process", "ray")
RAY_EXTRA = "pip install 'cema-cli[ray]'"

OnStart = Callable[[int, Cell], None]
OnDone = Callable[[int, Cell, CellResult], None]


@dataclass(frozen=True)
class Plan:
    """How many workers run cells side by side, with how many torch threads each."""

    executor: str
    workers: int
    threads: int
    gpus: int = 0  # process executor on CUDA: one worker per visible GPU
    cpus_per_cell: float | None = None
    gpus_per_cell: float = 0.0
    ray_address: str | None = None


def visible_gpus(device: str) -> int:
    """CUDA devices a run on ``device`` would use (0 on CPU; torch imported only to count them)."""
    if device not in ("auto", "cuda"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_plan(executor: str | None, cells: int, device: str, threads: int | None = None, cpus_per_cell: float | None = None,
              gpus_per_cell: float | None = None, ray_address: str | None = None) -> Plan:
    """The default is ``process`` for more than one cell, else ``serial``. On CPU the cores are
    shared out (workers = cores // threads per cell); on CUDA each worker owns one GPU."""
    name = executor or ("process" if cells > 1 else "serial")
    if name not in EXECUTORS:
        raise unknown_name("executor", name, EXECUTORS)
    gpus = visible_gpus(device)
    if name == "serial":
        return Plan(name, 1, threads_per_worker(1, threads))
    if name == "ray":
        import_ray()
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            check_reachable(address)
        cell_threads = threads or max(1, int(cpus_per_cell or 1))
        return Plan(name, 1, cell_threads, cpus_per_cell=cpus_per_cell or cell_threads,
                    gpus_per_cell=gpus_per_cell if gpus_per_cell is not None else float(gpus > 0), ray_address=ray_address)
    if gpus:
        workers = min(gpus, cells)
        return Plan(name, workers, threads_per_worker(workers, threads), gpus=workers)
    cell_threads = threads or 1  # one thread per cell and one cell per core: best on a busy machine (threads.py)
    return Plan(name, cpu_workers(cell_threads, cells), cell_threads)


def run_cells(plan: Plan, cells: list[Cell], on_start: OnStart, on_done: OnDone) -> None:
    """Run the cells, those that read the same domains one after another (so each shared input
    is computed once and dropped early); the merged files keep the grid's order."""
    {"serial": run_serial, "process": run_process, "ray": run_ray}[plan.executor](plan, by_domain(cells), on_start, on_done)


def by_domain(cells: list[Cell]) -> list[Cell]:
    """The cells grouped by their domains, groups in order of first appearance (stable)."""
    first: dict[tuple, int] = {}
    for cell in cells:
        first.setdefault(tuple(cell.config.domains()), len(first))
    return sorted(cells, key=lambda cell: first[tuple(cell.config.domains())])


def run_serial(plan: Plan, cells: list[Cell], on_start: OnStart, on_done: OnDone) -> None:
    from cema_cli.run.shared_inputs import SharedInputs

    inputs = SharedInputs([cell.config for cell in cells])
    for cell in cells:
        on_start(0, cell)
        share = inputs.acquire(cell.config)
        result = run_cell(cell.config, plan.threads, share.layout, *share.parts)
        inputs.release(share)
        on_done(0, cell, result)


# --- process pool ----------------------------------------------------------------------------

def _pin_gpu(gpu_ids: Any) -> None:
    """Pool initializer: give this worker one GPU before torch initialises CUDA."""
    if gpu_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())


def run_process(plan: Plan, cells: list[Cell], on_start: OnStart, on_done: OnDone) -> None:
    """At most ``workers`` cells in flight, so each in-flight cell is on a worker slot."""
    import multiprocessing

    from cema_cli.run.shared_inputs import SharedInputs

    inputs = SharedInputs([cell.config for cell in cells])
    context = multiprocessing.get_context("spawn")
    gpu_ids = None
    if plan.gpus:
        gpu_ids = context.Queue()
        for index in range(plan.gpus):
            gpu_ids.put(index)
    pool = ProcessPoolExecutor(plan.workers, mp_context=context, initializer=_pin_gpu, initargs=(gpu_ids,))
    waiting, running, free = iter(cells), {}, list(range(plan.workers))
    try:
        while True:
            while free and (cell := next(waiting, None)) is not None:
                slot, share = free.pop(0), inputs.acquire(cell.config)
                running[pool.submit(run_cell, cell.config, plan.threads, share.layout, *share.parts)] = (slot, cell, share)
                on_start(slot, cell)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                slot, cell, share = running.pop(future)
                inputs.release(share)
                on_done(slot, cell, future.result())
                free.append(slot)
    finally:
        pool.shutdown(wait=not running, cancel_futures=True)


# --- ray ---------------------------------------------------------------------------------------

def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CemaError(f"--executor ray needs Ray, which is not installed; install the extra: {RAY_EXTRA}") from None
    return ray


def check_reachable(address: str) -> None:
    """A host:port that does not answer within 5 s is refused at once (ray.init would retry for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise CemaError(f"--ray-address {address}: no Ray cluster answers there; start one (`ray start --head`) "
                        "or drop --ray-address to start a local Ray.") from None


def start_ray(address: str | None) -> Any:
    """An existing cluster (--ray-address or RAY_ADDRESS), else a local Ray with no configuration."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        env = {"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}} if not address else None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env=env)
        except ConnectionError as error:
            raise CemaError(f"cannot connect to Ray at {address}: {error}; check --ray-address or RAY_ADDRESS.") from None
    return ray


def run_ray(plan: Plan, cells: list[Cell], on_start: OnStart, on_done: OnDone) -> None:
    """One Ray task per cell. A crashed worker's task is retried by Ray (max_retries); an error
    of the run comes back as a failed CellResult, so it is recorded and never retried. The shared
    inputs go into the object store once (``ray.put``); a task gets their references, which Ray
    resolves, as top-level arguments."""
    from cema_cli.run.shared_inputs import SharedInputs

    ray = start_ray(plan.ray_address)
    inputs = SharedInputs([cell.config for cell in cells], put=ray.put)
    task = ray.remote(num_cpus=plan.cpus_per_cell, num_gpus=plan.gpus_per_cell, max_retries=3)(run_cell)
    pending = {}
    for slot, cell in enumerate(cells):  # submitted as their inputs are ready: the first run while later ones are computed
        share = inputs.acquire(cell.config)
        pending[task.remote(cell.config, plan.threads, share.layout, *share.parts)] = (slot, cell, share)
        on_start(slot, cell)
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        slot, cell, share = pending.pop(finished[0])
        inputs.release(share)
        on_done(slot, cell, ray.get(finished[0]))
