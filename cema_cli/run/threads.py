"""How many torch intra-op threads a process uses: never more than the cores it may use,
shared among the worker processes that run side by side. Torch-free until ``apply_threads``.

Measured on a 2-core machine with one busy neighbour (issue 14): torch's default two threads
took 90-102 s for a `cema bench` that took 18-19 s with one thread, and two single-thread
processes side by side beat the same two runs one after the other. A thread that waits for a
core held by another process stalls every other thread at the next barrier, so the default
counts only the cores that are idle now: cores minus the other processes running or waiting for
a core at this instant (Linux's /proc/loadavg), at least one. The 1-minute load average would
also count this user's own previous run: right after a `cema bench` on an idle 2-core machine it
chose one thread, and the default bench took 27 s instead of 16 s.
"""

from __future__ import annotations

import os
from pathlib import Path

from cema_cli.errors import CemaError


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; cgroup quotas are not read)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def runnable_elsewhere() -> float:
    """Processes running or waiting for a core now, other than this one: /proc/loadavg's
    instantaneous count on Linux, else (macOS) the 1-minute load average."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return max(0, running - 1)  # this process is one of them


def idle_cores(cores: int) -> int:
    """Cores not busy with other work now: ``cores`` minus the other runnable processes, at least 1."""
    try:
        busy = runnable_elsewhere()
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, cores - round(busy)))


def threads_per_worker(workers: int = 1, override: int | None = None, cores: int | None = None) -> int:
    """``--threads`` if given, else the idle usable cores divided among ``workers``, at least 1."""
    if override is not None:
        if override < 1:
            raise CemaError(f"--threads {override} must be at least 1.")
        return override
    free = idle_cores(cores if cores is not None else usable_cores())
    return max(1, free // max(1, workers))


def cpu_workers(threads: int, cells: int, cores: int | None = None) -> int:
    """Worker processes for CPU cells: the usable cores // threads per cell, no more than the cells."""
    return max(1, min(cells, (cores if cores is not None else usable_cores()) // max(1, threads)))


def apply_threads(threads: int) -> None:
    """Set torch's intra-op threads (and OpenMP's for libraries started after this)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
