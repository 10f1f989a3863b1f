"""No orphans, no silent hang, no wasted cells (issue 22, item 5): `kill -9` of a process-executor
sweep driver leaves no process of the sweep alive, the resume computes exactly the missing cells
and `cema report` says what happened; an impossible Ray request fails at once; edge-only methods
run once for every budget point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cema_cli.results.run_folder import run_status


def flat(text: str) -> str:
    return " ".join(text.split())


def session_processes(session: int) -> list[int]:
    """Live processes (zombies excluded) whose session id is ``session`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def finished_cells(out: Path) -> list[str]:
    cells = out / "cells"
    return sorted(p.name for p in cells.iterdir() if not p.name.startswith(".")) if cells.is_dir() else []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the sweep's processes")
def test_kill_9_of_the_driver_leaves_no_process_and_the_resume_runs_exactly_the_missing_cells(cli, tmp_path):
    out = tmp_path / "study"
    command = [sys.executable, "-m", "cema_cli", "sweep", "--methods", "source,bn,tent", "--corruption", "gaussian_noise,snow,contrast",
               "--samples", "192", "--executor", "process", "--threads", "1", "--out", str(out)]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 600
        while not finished_cells(out) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [p for p in session_processes(driver.pid) if p != driver.pid]
        assert driver.poll() is None and workers, "the sweep ended (or never started) before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        time.sleep(5)
        assert session_processes(driver.pid) == []  # the workers (about 800 MB each) died with their driver
    finally:
        for pid in session_processes(driver.pid):
            os.kill(pid, signal.SIGKILL)
    done = finished_cells(out)
    assert 0 < len(done) < 9
    assert run_status(out)[0] == "crashed"
    note = flat(cli("report", str(out)).output)
    assert f"note: run {out}: crashed" in note

    result = cli("sweep", "--resume", str(out), "--executor", "serial", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert f"{len(done)} cells already done, {9 - len(done)} run" in flat(result.output)
    assert set(done) < set(finished_cells(out)) and len(finished_cells(out)) == 9
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 9 and not rows.duplicated(["method", "corruption", "severity", "seed"]).any()
    sessions = json.loads((out / "run.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["crashed", "complete"]
    assert (sessions[1]["missing"], sessions[1]["ran"]) == (9 - len(done), 9 - len(done))
    report = flat(cli("report", str(out)).output)
    assert f"2 sessions: session 1 crashed (pid {driver.pid}" in report and f"session 2 complete (pid {os.getpid()}" in report
    assert f"{9 - len(done)} of {9 - len(done)} missing cells run" in report


def test_a_gpu_request_on_a_machine_without_one_fails_at_once(cli, tmp_path):
    pytest.importorskip("ray")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    start = time.monotonic()
    result = cli("sweep", "--methods", "bn,source", "--samples", "64", "--executor", "ray", "--gpus-per-cell", "0.25",
                 "--out", str(tmp_path / "s"))
    assert result.exit_code == 2 and time.monotonic() - start < 60
    assert flat(result.output) == ("error: --gpus-per-cell 0.25: this machine has 0 GPU(s), so no cell could ever start; "
                                   "lower --gpus-per-cell (0 runs on the CPU) or add nodes.")
    assert not (tmp_path / "s").exists()


def test_edge_only_methods_run_once_for_every_budget_point(cli, tmp_path):
    """Issue 22: bn, source, lame and t3a ran again at every budget point (54 cells where 36 would
    do). Their rows cannot depend on the channel: they run once, and the other budget points
    reuse the rows, which say so (``reused_from``) and equal what a run at that budget gives."""
    out = tmp_path / "study"
    args = ["--methods", "bn,source,tent", "--corruption", "gaussian_noise,contrast", "--samples", "64", "--threads", "1",
            "--uplink-budget", "0,6kB,unlimited", "--executor", "serial"]
    dry = flat(cli("sweep", *args, "--out", str(out), "--dry-run").output)
    assert "18 cells (8 reuse an edge-only run at another channel point), 0 already done, 10 to run" in dry
    result = cli("sweep", *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 18 and rows.groupby("method").size().to_dict() == {"bn": 6, "source": 6, "tent": 6}
    metas = [json.loads(p.read_text()) for p in (out / "cells").glob("*/cell.json")]
    assert sum(1 for m in metas if m["reused_from"]) == 8 and sum(1 for m in metas if not m["reused_from"]) == 10
    reused = rows[rows["reused_from"].notna()]
    assert set(reused["method"]) == {"bn", "source"} and rows[rows["method"] == "tent"]["reused_from"].isna().all()
    direct = cli("compare", "--methods", "bn", "--corruption", "contrast", "--samples", "64", "--uplink-budget", "6kB",
                 "--out", str(tmp_path / "direct"))
    assert direct.exit_code == 0, direct.output
    fresh = pd.read_csv(tmp_path / "direct" / "results.csv").iloc[0]
    mine = rows[(rows["method"] == "bn") & (rows["corruption"] == "contrast") & (rows["uplink_budget_bytes"] == 6000)].iloc[0]
    same = ["accuracy", "correct", "uploads", "uplink_bytes", "downlink_bytes", "uplink_budget_bytes", "channel", "status"]
    assert mine[same].tolist() == fresh[same].tolist()
    batches = pd.read_csv(out / "batches.csv")
    assert len(batches.drop_duplicates(["method", "corruption", "uplink_budget_bytes", "batch"])) == len(batches) == 18 * 1
