"""cema sweep: cells, resume, failures, executors (serial, process, a real local Ray), bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from cema_cli.config import RunConfig
from cema_cli.run.sweep import TIMING_COLUMNS, Cell, cells_of, run_cell

GRID = ["--methods", "source,bn,tent", "--corruption", "gaussian_noise,contrast", "--samples", "128", "--threads", "1"]


def sweep(cli, out: Path, *extra: str):
    return cli("sweep", *GRID, "--out", str(out), *extra)


def rows_of(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "results.csv").drop(columns=list(TIMING_COLUMNS))


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    from typer.testing import CliRunner

    from cema_cli.cli import app

    out = tmp_path_factory.mktemp("sweep") / "serial"
    result = CliRunner().invoke(app, ["sweep", *GRID, "--out", str(out), "--executor", "serial"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_a_cell_alone_gives_the_row_it_has_inside_a_compare():
    from cema_cli.run.api import run_benchmark

    config = RunConfig(methods=("source", "bn", "tent", "eata"), corruptions=("gaussian_noise", "contrast"), samples=128, seed=1)
    # "segment" is the domain's position in its own run: 0 for every reset-each-shift cell
    position = [*TIMING_COLUMNS, "segment"]
    together = pd.DataFrame(run_benchmark(config)).drop(columns=position)
    alone = pd.DataFrame([row for cell in cells_of([config]) for row in run_cell(cell.config, 1).rows]).drop(columns=position)
    pd.testing.assert_frame_equal(together, alone)


def test_shared_inputs_are_computed_once_and_change_no_row():
    """The driver computes the dataset, each domain and each seed's clean set once; cells that get
    them (and a worker's kept Fisher) give exactly the rows of cells that compute their own."""
    from cema_cli.run.executors import by_domain
    from cema_cli.run.shared_inputs import SharedInputs

    options = {"eata": {"fisher_samples": 128}}
    configs = [RunConfig(methods=("bn", "eata"), corruptions=("snow", "contrast"), samples=64, seed=s, method_options=options)
               for s in (0, 1)]
    cells = cells_of(configs)
    made: list[str] = []
    inputs = SharedInputs([c.config for c in cells], put=lambda value: made.append(type(value).__name__) or value)
    shared = {}
    for cell in by_domain(cells):
        share = inputs.acquire(cell.config)
        shared[cell.id] = run_cell(cell.config, 1, share.layout, *share.parts).rows
        inputs.release(share)
    assert sorted(made) == ["EmbeddedDigits", *["Tensor"] * 4]  # the dataset; snow, contrast; a clean set per seed
    assert not inputs.store  # dropped once the last cell reading them finished
    alone = [row for cell in cells for row in run_cell(cell.config, 1).rows]
    timing = [*TIMING_COLUMNS]
    pd.testing.assert_frame_equal(pd.DataFrame(alone).drop(columns=timing),
                                  pd.DataFrame([row for cell in cells for row in shared[cell.id]]).drop(columns=timing))


def test_cell_ids_come_from_the_configuration_only():
    config = RunConfig(methods=("bn",), samples=64)
    assert Cell(config).id == Cell(replace(config, device="cpu", workers=3)).id  # where it runs is not what it computes
    assert Cell(config).id != Cell(replace(config, seed=1)).id
    assert len({c.id for c in cells_of([RunConfig(methods=("bn", "tent"), corruptions=("snow", "fog"))])}) == 4
    assert len(cells_of([RunConfig(methods=("bn", "tent"), corruptions=("snow", "fog"), protocol="continual")])) == 2


def test_the_sweep_writes_one_folder_per_cell_and_merges_them(serial_run):
    cells = sorted(p for p in (serial_run / "cells").iterdir())
    assert len(cells) == 6
    meta = json.loads((cells[0] / "cell.json").read_text())
    assert meta["status"] == "ok" and meta["threads"] == 1
    merged = pd.read_csv(serial_run / "results.csv")
    assert len(merged) == 6 and set(merged["method"]) == {"source", "bn", "tent"}
    assert list(merged["method"][:3]) == ["source", "bn", "tent"]  # compare's order: domain-major
    assert {"accuracy_low", "accuracy_high", "threads"} <= set(merged.columns)
    summary = pd.read_csv(serial_run / "summary.csv")
    assert set(summary["n"]) == {1} and (summary["ci_low"] <= summary["mean"]).all()


def test_process_executor_gives_identical_rows(cli, serial_run, tmp_path):
    result = sweep(cli, tmp_path / "process", "--executor", "process")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "process" / "run.json").read_text())["workers"] == 2 or os.cpu_count() == 1
    pd.testing.assert_frame_equal(rows_of(serial_run), rows_of(tmp_path / "process"))


def test_rerun_runs_only_missing_cells_and_the_grid_may_grow(cli, serial_run, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(serial_run, out)
    victim = next((out / "cells").iterdir())
    shutil.rmtree(victim)
    result = sweep(cli, out, "--executor", "serial")
    assert "5 cells already done, 1 run" in result.output
    pd.testing.assert_frame_equal(rows_of(serial_run), rows_of(out))
    grown = cli("sweep", *GRID, "--seeds", "0,1", "--resume", str(out), "--executor", "serial")
    assert "6 cells already done, 6 run" in grown.output
    assert len(pd.read_csv(out / "results.csv")) == 12
    assert "12 cells, 12 already done, 0 to run" in cli("sweep", "--resume", str(out), "--dry-run").output


def test_dry_run_counts_cells_and_runs_nothing(cli, tmp_path):
    result = sweep(cli, tmp_path / "dry", "--seeds", "3", "--dry-run")
    assert "18 cells, 0 already done, 18 to run" in result.output and "unknown until a cell has finished" in result.output
    assert not (tmp_path / "dry").exists()


def test_a_failing_cell_is_recorded_and_the_others_finish(cli, tmp_path):
    out = tmp_path / "failing"
    result = cli("sweep", "--methods", "bn,eata", "--samples", "64", "-o", "eata.fisher_beta=abc", "--out", str(out), "--executor", "serial")
    assert result.exit_code == 3
    assert "1 cell(s) failed" in result.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed cells" and "fisher_beta" in next(iter(meta["failed"].values()))
    assert list(pd.read_csv(out / "results.csv")["method"]) == ["bn"]


def test_kill_9_loses_only_the_cell_in_flight(serial_run, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "cema_cli", "sweep", *GRID, "--out", str(out), "--executor", "serial"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = out / "cells"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len([p for p in cells.glob("*") if not p.name.startswith(".")]) < 2:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len([p for p in cells.glob("*") if not p.name.startswith(".")])
    assert 2 <= finished < 6
    rerun = subprocess.run(command, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{finished} cells already done, {6 - finished} run" in " ".join(rerun.stdout.split())
    pd.testing.assert_frame_equal(rows_of(serial_run), rows_of(out))


def test_ray_executor_on_a_real_local_ray_gives_identical_rows(cli, serial_run, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        result = sweep(cli, tmp_path / "ray", "--executor", "ray", "--cpus-per-cell", "1")
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(rows_of(serial_run), rows_of(tmp_path / "ray"))


def test_report_and_plot_read_a_sweep_folder(cli, serial_run, tmp_path):
    result = cli("report", str(serial_run))  # one seed, one point: compare's tables
    assert result.exit_code == 0 and "cema compare" in result.output
    assert cli("plot", str(serial_run), "--output", str(tmp_path / "p.png")).exit_code == 0
    assert (tmp_path / "p.png").stat().st_size > 0


# --- bad input: one line, exit 2, nothing lost -----------------------------------------------------

@pytest.mark.parametrize(("toml", "expected"), [
    ("[sweep]\nmethods = ['bn']\nfoo = [1]\n", "unknown [sweep] key(s) foo"),
    ("[sweep]\ncorruptions = []\n", "the grid is empty"),
])
def test_bad_toml_grids_exit_2(cli, tmp_path, toml, expected):
    path = tmp_path / "grid.toml"
    path.write_text(toml)
    result = cli("sweep", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert result.exit_code == 2 and expected in result.output


def test_a_toml_sweep_table_sets_the_axes(cli, tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("samples = 64\n[sweep]\nmethods = ['bn', 'tent']\ncorruptions = ['snow', 'fog']\nseeds = 2\n")
    assert "8 cells, 0 already done" in cli("sweep", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run").output


@pytest.mark.parametrize(("args", "expected"), [
    (["--seeds", "0"], "--seeds 0 is not a positive count"),
    (["--seeds", "-2"], "not a positive count"),
    (["--seeds", "0,-1"], "seeds of 0 or more"),
    (["--methods", ","], "no method given"),
    (["--executor", "threads"], "unknown executor 'threads'"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "no Ray cluster answers there"),
])
def test_bad_flags_exit_2(cli, tmp_path, args, expected):
    result = cli("sweep", "--samples", "64", "--out", str(tmp_path / "o"), *args)
    assert result.exit_code == 2 and expected in " ".join(result.output.split())


def test_ray_missing_names_the_extra(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = cli("sweep", "--methods", "bn", "--samples", "64", "--out", str(tmp_path / "o"), "--executor", "ray")
    assert result.exit_code == 2 and "pip install 'cema-cli[ray]'" in " ".join(result.output.split())


def test_a_folder_of_another_schema_is_refused_and_kept(cli, serial_run, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(serial_run, out)
    meta = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**meta, "schema_version": 0}))
    before = (out / "results.csv").read_bytes()
    result = cli("sweep", "--resume", str(out))
    assert result.exit_code == 2 and "schema version 0" in result.output
    assert (out / "results.csv").read_bytes() == before and len(list((out / "cells").iterdir())) == 6


def test_compare_takes_seeds_and_an_executor(cli, tmp_path):
    result = cli("compare", "--methods", "source,bn", "--samples", "64", "--seeds", "2", "--executor", "serial",
                 "--out", str(tmp_path / "c"), "--threads", "1")
    assert result.exit_code == 0 and "accuracy over seeds" in result.output
    frame = pd.read_csv(tmp_path / "c" / "results.csv")
    assert sorted(frame["seed"]) == [0, 0, 1, 1]
    report = cli("report", str(tmp_path / "c"))
    assert report.exit_code == 0 and "accuracy over seeds" in report.output and "±" in report.output
    assert cli("plot", str(tmp_path / "c"), "--output", str(tmp_path / "p.png")).exit_code == 0


def test_multi_seed_check_neither_flaps_nor_misses(cli, tmp_path):
    """Same code, other seeds: passes. The same results 2 points worse: fails."""
    grid = ["--methods", "bn", "--corruption", "gaussian_noise,contrast", "--executor", "serial", "--threads", "1"]
    assert cli("compare", *grid, "--seeds", "0,1,2", "--out", str(tmp_path / "base")).exit_code == 0
    assert cli("compare", *grid, "--seeds", "3,4,5", "--out", str(tmp_path / "new")).exit_code == 0
    passed = cli("check", "--baseline", str(tmp_path / "base" / "results.csv"), "--results", str(tmp_path / "new" / "results.csv"))
    assert passed.exit_code == 0, passed.output
    worse = pd.read_csv(tmp_path / "new" / "results.csv")
    worse.loc[worse["corruption"] == "contrast", "accuracy"] -= 0.02
    worse.to_csv(tmp_path / "worse.csv", index=False)
    failed = cli("check", "--baseline", str(tmp_path / "base" / "results.csv"), "--results", str(tmp_path / "worse.csv"))
    assert failed.exit_code == 1 and "bn contrast-5" in failed.output and "gaussian_noise" not in failed.output.split("regressed")[-1]
