"""Wall time of the full compare, alone and beside one busy neighbour, before and after (issue 14).

    python benchmarks/bench_compare_wall.py --code-before /work/wt/before            # all four runs
    python benchmarks/bench_compare_wall.py --only after:solo,after:neighbour       # some of them
    python benchmarks/bench_compare_wall.py --table                                 # print what is recorded

Each run is `cema compare --methods source,bn,tent,eata,cema --corruption all` as a subprocess,
as a user types it (the "before" one from the cema at --code-before, with that code's defaults).
The neighbour is a second `cema bench` of this checkout, restarted in a loop for the whole run.
While a run lasts, /proc/loadavg is sampled every 5 s: the 1-minute load and the processes
runnable at that instant. Each finished run is appended to --record (JSON lines), so the runs
can be taken in separate sittings and printed together. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

NEIGHBOUR = "while true; do {python} -m cema_cli bench -m cema --corruption gaussian_noise --threads 1 --out {out} --force >/dev/null 2>&1; done"


def compare_command(args: argparse.Namespace, out: Path) -> list[str]:
    command = [sys.executable, "-m", "cema_cli", "compare", "--methods", args.methods, "--corruption", "all", "--out", str(out)]
    return command + (["--samples", str(args.samples)] if args.samples else [])


class LoadSampler(threading.Thread):
    """Samples /proc/loadavg until stopped: (1-minute load, processes runnable now)."""

    def __init__(self, period: float = 5.0):
        super().__init__(daemon=True)
        self.period, self.samples, self.halt = period, [], threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.period):
            fields = Path("/proc/loadavg").read_text().split()
            self.samples.append((float(fields[0]), int(fields[3].split("/")[0])))

    def summary(self) -> dict:
        loads = [one for one, _ in self.samples] or [0.0]
        runnable = [now for _, now in self.samples] or [0]
        return {"load_mean": round(statistics.fmean(loads), 2), "load_max": max(loads),
                "runnable_mean": round(statistics.fmean(runnable), 2)}


def start_neighbour(scratch: Path) -> subprocess.Popen:
    loop = NEIGHBOUR.format(python=sys.executable, out=scratch / "neighbour")
    return subprocess.Popen(["bash", "-c", loop], start_new_session=True, cwd=Path(__file__).resolve().parents[1])


def stop_neighbour(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def mean_accuracy(out: Path) -> dict[str, float]:
    rows = pd.read_csv(out / "results.csv")
    return {method: round(float(group["accuracy"].mean()) * 100, 2) for method, group in rows.groupby("method", sort=False)}


def run_threads(out: Path) -> str:
    """The torch threads the rows record (code before the thread policy records none: torch's default)."""
    rows = pd.read_csv(out / "results.csv")
    return ",".join(str(t) for t in sorted(rows["threads"].unique())) if "threads" in rows else "default"


def timed_compare(args: argparse.Namespace, code: str, scenario: str, scratch: Path) -> dict:
    out = scratch / f"{code}-{scenario}"
    directory = args.code_before if code == "before" else str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": directory}
    env.pop("OMP_NUM_THREADS", None)  # each code chooses its threads as a user's run would
    neighbour = start_neighbour(scratch) if scenario == "neighbour" else None
    sampler = LoadSampler()
    try:
        time.sleep(5 if neighbour else 0)  # the neighbour is running before the compare starts
        sampler.start()
        start = time.perf_counter()
        subprocess.run(compare_command(args, out), check=True, stdout=subprocess.DEVNULL, env=env, cwd=directory)
        seconds = time.perf_counter() - start
    finally:
        sampler.halt.set()
        if neighbour:
            stop_neighbour(neighbour)
    return {"code": code, "scenario": scenario, "wall_s": round(seconds, 1), "threads": run_threads(out),
            "commit": commit_of(directory), "accuracy": mean_accuracy(out), **sampler.summary(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def commit_of(directory: str) -> str:
    result = subprocess.run(["git", "-C", directory, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "?"


def print_table(record: Path) -> None:
    rows = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    print("| code | commit | neighbour | wall s | threads | load mean (max) | runnable mean | mean accuracy per method |")
    print("|---|---|---|---:|---|---|---:|---|")
    for row in rows:
        accuracy = ", ".join(f"{method} {value:.2f}" for method, value in row["accuracy"].items())
        print(f"| {row['code']} | {row['commit']} | {row['scenario']} | {row['wall_s']:.1f} | {row['threads']} | "
              f"{row['load_mean']:.2f} ({row['load_max']:.2f}) | {row['runnable_mean']:.2f} | {accuracy} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code-before", help="a checkout of the code before (e.g. a git worktree of ba4c14d)")
    parser.add_argument("--only", default="after:solo,before:solo,after:neighbour,before:neighbour",
                        help="comma list of code:scenario, in the order to run")
    parser.add_argument("--methods", default="source,bn,tent,eata,cema")
    parser.add_argument("--samples", type=int, help="samples per domain (default: all, the full compare)")
    parser.add_argument("--record", type=Path, default=Path("docs/compare_wall_issue14.jsonl"))
    parser.add_argument("--table", action="store_true", help="only print the recorded runs")
    args = parser.parse_args()
    if not args.table:
        with tempfile.TemporaryDirectory(prefix="cema-wall-") as scratch:
            for item in args.only.split(","):
                code, scenario = item.split(":")
                if code == "before" and not args.code_before:
                    sys.exit("before runs need --code-before DIR")
                row = timed_compare(args, code, scenario, Path(scratch))
                with args.record.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print_table(args.record)


if __name__ == "__main__":
    main()
