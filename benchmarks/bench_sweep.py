"""`cema sweep` figures for the closing note (not a test; prints, asserts nothing).

    python benchmarks/bench_sweep.py                      # the issue's sweep: 5 methods x 15 corruptions x 3 seeds
    python benchmarks/bench_sweep.py --samples 256        # the same grid on 256 samples per domain
    python benchmarks/bench_sweep.py --corruption gaussian_noise,snow,contrast --samples 128

In one sitting: (1) the sweep under `serial` and `process`, wall time side by side, and whether
the rows are identical; (2) a `process` sweep killed with SIGKILL when about half its cells are
done, then rerun: cells recomputed; (3) the `ray` executor on a local Ray: its start time and
identical rows; (4) the report table (mean ± 95% over seeds) and the paired comparison to Tent.
Each sweep is a `cema sweep` subprocess, as a user runs it; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cema_cli.sweep import TIMING_COLUMNS


def sweep_command(args: argparse.Namespace, out: Path, executor: str) -> list[str]:
    command = [sys.executable, "-m", "cema_cli", "sweep", "--methods", args.methods, "--corruption", args.corruption,
               "--severity", "5", "--seeds", str(args.seeds), "--out", str(out), "--executor", executor, "--threads", "1"]
    return command + (["--samples", str(args.samples)] if args.samples else [])


def timed_sweep(args: argparse.Namespace, out: Path, executor: str) -> float:
    start = time.perf_counter()
    subprocess.run(sweep_command(args, out, executor), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv").drop(columns=list(TIMING_COLUMNS))


def finished_cells(out: Path) -> int:
    cells = out / "cells"
    return len([p for p in cells.iterdir() if not p.name.startswith(".")]) if cells.exists() else 0


def kill_and_resume(args: argparse.Namespace, out: Path, total: int) -> tuple[int, int, float]:
    """SIGKILL the whole sweep (driver and workers) at about half its cells; rerun it."""
    process = subprocess.Popen(sweep_command(args, out, "process"), stdout=subprocess.DEVNULL, start_new_session=True)
    while finished_cells(out) < total // 2 and process.poll() is None:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept = finished_cells(out)
    return kept, total - kept, timed_sweep(args, out, "process")


def ray_start_seconds() -> float:
    import ray

    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    seconds = time.perf_counter() - start
    ray.shutdown()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="source,bn,tent,eata,cema")
    parser.add_argument("--corruption", default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=None, help="samples per domain (default: all 2,500)")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    print(f"grid: {' '.join(sweep_command(args, Path('OUT'), 'EXECUTOR')[2:])}; cores {len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    serial, process = (timed_sweep(args, root / name, name) for name in ("serial", "process"))
    total = finished_cells(root / "serial")
    print(f"{total} cells: serial {serial:.1f} s, process {process:.1f} s, ratio serial/process {serial / process:.2f}; "
          f"identical rows: {rows(root / 'serial').equals(rows(root / 'process'))}; load {os.getloadavg()[0]:.1f}", flush=True)
    kept, rerun, seconds = kill_and_resume(args, root / "killed", total)
    print(f"kill -9 at about half: {kept} cells kept, rerun computed {rerun} cells in {seconds:.1f} s; "
          f"final rows identical to the uninterrupted sweep: {rows(root / 'serial').equals(rows(root / 'killed'))}", flush=True)
    if not args.skip_ray:
        print(f"ray.init() of a local Ray: {ray_start_seconds():.1f} s", flush=True)
        seconds = timed_sweep(args, root / "ray", "ray")
        print(f"ray sweep {seconds:.1f} s (start included); identical rows: {rows(root / 'serial').equals(rows(root / 'ray'))}", flush=True)
    report = [sys.executable, "-m", "cema_cli", "sweep", "--resume", str(root / "serial"), "--versus", "tent", "--executor", "serial"]
    print(subprocess.run(report, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "150"}).stdout)
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
