"""`cema sweep` figures for the closing note (not a test; prints, asserts nothing).

    python benchmarks/bench_sweep.py                      # the issue's sweep: 5 methods x 15 corruptions x 3 seeds
    python benchmarks/bench_sweep.py --samples 256        # the same grid on 256 samples per domain
    python benchmarks/bench_sweep.py --corruption gaussian_noise,snow,contrast --samples 256   # a reduced grid
    python benchmarks/bench_sweep.py --corruption snow --seeds 2 --samples 256 --only serial \
        --code-before /tmp/cema-before     # per-cell time with the cema at that folder, side by side

In one sitting: (1) the sweep under `serial` and `process`, wall time side by side, and whether
the rows are identical; (2) a `process` sweep killed with SIGKILL when about half its cells are
done, then rerun: cells recomputed; (3) the `ray` executor on a local Ray: its start time and
identical rows; (4) the report table (mean ± 95% over seeds) and the paired comparison to Tent.
With --code-before DIR, first the serial sweep with the cema at DIR (e.g. `git archive COMMIT |
tar -x -C DIR`) and with this one, side by side: wall time, mean seconds per cell, identical rows.
Each sweep is a `cema sweep` subprocess, as a user runs it; /proc/loadavg is printed around each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cema_cli.run.sweep import TIMING_COLUMNS


def sweep_command(args: argparse.Namespace, out: Path, executor: str) -> list[str]:
    command = [sys.executable, "-m", "cema_cli", "sweep", "--methods", args.methods, "--corruption", args.corruption,
               "--severity", args.severity, "--seeds", str(args.seeds), "--out", str(out), "--executor", executor,
               "--threads", str(args.threads)]
    return command + (["--samples", str(args.samples)] if args.samples else [])


def timed_sweep(args: argparse.Namespace, out: Path, executor: str, code: str | None = None) -> float:
    """Wall seconds of one `cema sweep` subprocess (with the cema at ``code`` when given: run from
    there, since `python -m` puts the working directory ahead of PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": code} if code else None
    start = time.perf_counter()
    subprocess.run(sweep_command(args, out, executor), check=True, stdout=subprocess.DEVNULL, env=env, cwd=code)
    return time.perf_counter() - start


def load() -> str:
    return "loadavg " + Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else f"load {os.getloadavg()}"


def cell_seconds(out: Path) -> float:
    """Mean seconds per cell as the cells measured them (in the worker, around run_benchmark)."""
    seconds = [json.loads(path.read_text())["seconds"] for path in (out / "cells").glob("*/cell.json")]
    return sum(seconds) / len(seconds)


def before_and_after(args: argparse.Namespace, root: Path) -> None:
    """The serial sweep with the cema at --code-before, then with this one, side by side."""
    print(f"[{load()}]", flush=True)
    before = timed_sweep(args, root / "before", "serial", args.code_before)
    after = timed_sweep(args, root / "after", "serial")
    print(f"serial, cema at {args.code_before}: {before:.1f} s ({cell_seconds(root / 'before'):.2f} s per cell); this cema: "
          f"{after:.1f} s ({cell_seconds(root / 'after'):.2f} s per cell); ratio {before / after:.2f}; identical rows: "
          f"{rows(root / 'before').equals(rows(root / 'after'))} [{load()}]", flush=True)


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
    parser.add_argument("--severity", default="5")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=None, help="samples per domain (default: all 2,500)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--only", default="serial,process,kill,ray,report", help="which figures, a comma list of those")
    parser.add_argument("--code-before", default=None, type=lambda p: str(Path(p).resolve()),
                        help="a folder holding an older cema_cli: time its serial sweep first")
    args = parser.parse_args()
    only = set(args.only.split(","))
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-")).resolve()
    print(f"grid: {' '.join(sweep_command(args, Path('OUT'), 'EXECUTOR')[2:])}; cores {len(os.sched_getaffinity(0))}", flush=True)
    if args.code_before:
        before_and_after(args, root)
    if {"serial", "process"} <= only:
        print(f"[{load()}]", flush=True)
        serial, process = (timed_sweep(args, root / name, name) for name in ("serial", "process"))
        total = finished_cells(root / "serial")
        print(f"{total} cells: serial {serial:.1f} s, process {process:.1f} s, ratio serial/process {serial / process:.2f}; "
              f"identical rows: {rows(root / 'serial').equals(rows(root / 'process'))} [{load()}]", flush=True)
        if "kill" in only:
            kept, rerun, seconds = kill_and_resume(args, root / "killed", total)
            print(f"kill -9 at about half: {kept} cells kept, rerun computed {rerun} cells in {seconds:.1f} s; final rows "
                  f"identical to the uninterrupted sweep: {rows(root / 'serial').equals(rows(root / 'killed'))} [{load()}]", flush=True)
        if "ray" in only:
            print(f"ray.init() of a local Ray: {ray_start_seconds():.1f} s", flush=True)
            seconds = timed_sweep(args, root / "ray", "ray")
            print(f"ray sweep {seconds:.1f} s (start included); identical rows: {rows(root / 'serial').equals(rows(root / 'ray'))} "
                  f"[{load()}]", flush=True)
        if "report" in only:
            report = [sys.executable, "-m", "cema_cli", "sweep", "--resume", str(root / "serial"), "--versus", "tent", "--executor", "serial"]
            print(subprocess.run(report, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "150"}).stdout)
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
