"""The thread policy: never more threads than idle usable cores, shared among the workers."""

from __future__ import annotations

import os

import pytest

from cema_cli.run import threads
from cema_cli.errors import CemaError


@pytest.mark.parametrize(("cores", "load", "workers", "expected"), [
    (8, 0.0, 1, 8),   # idle machine: every core
    (8, 0.0, 4, 2),   # shared among 4 workers
    (2, 1.2, 1, 1),   # one busy neighbour on 2 cores: one thread (90-102 s against 18-19 s, issue 14)
    (2, 7.0, 1, 1),   # overloaded: still at least one
    (4, 0.0, 8, 1),   # more workers than cores: one each, never zero
])
def test_threads_per_worker_counts_idle_cores(monkeypatch, cores, load, workers, expected):
    monkeypatch.setattr(threads, "runnable_elsewhere", lambda: load)
    assert threads.threads_per_worker(workers, cores=cores) == expected


def test_override_wins_and_must_be_positive(monkeypatch):
    monkeypatch.setattr(threads, "runnable_elsewhere", lambda: 9.0)
    assert threads.threads_per_worker(2, override=3, cores=2) == 3
    with pytest.raises(CemaError, match="--threads 0"):
        threads.threads_per_worker(1, override=0)


def test_cpu_workers_divide_cores_by_threads_per_cell():
    assert threads.cpu_workers(1, cells=10, cores=2) == 2
    assert threads.cpu_workers(2, cells=10, cores=8) == 4
    assert threads.cpu_workers(4, cells=10, cores=2) == 1  # never zero
    assert threads.cpu_workers(1, cells=3, cores=16) == 3  # no idle workers


def test_usable_cores_follow_the_affinity_mask():
    if hasattr(os, "sched_getaffinity"):
        assert threads.usable_cores() == len(os.sched_getaffinity(0))


def test_a_busy_neighbour_is_seen_now_and_this_process_is_not_counted():
    import subprocess
    import sys
    import time

    assert threads.runnable_elsewhere() >= 0
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert max(threads.runnable_elsewhere() for _ in range(20)) >= 1  # the spinner is running
    finally:
        spinner.kill()
