"""A study (issues 22 and 26): typed run options, the one entry point ``run_study``, TOML keys
and flag precedence, a study's fixed settings on resume, provenance, and the faults of a sweep
(a second writer, a stale lock, a full disk, a torn file, SIGTERM before any row)."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cema_cli.config import RunConfig
from cema_cli.errors import CemaError
from cema_cli.results.run_folder import LOCK_NAME
from cema_cli.run.sweep import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FAST = ("--samples", "64", "--threads", "1")


def toml(tmp: Path, text: str) -> Path:
    path = tmp / "run.toml"
    path.write_text(text)
    return path


def options(**typed):
    """Options as if exactly ``typed`` had been typed on the command line."""
    from cema_cli.cli.options import RunOptions

    return RunOptions(**typed, explicit=frozenset(typed))


def cema(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """``cema ARGS`` in a child process (this checkout's code, one torch thread)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "cema_cli", *args], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **popen)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "timed out"
        time.sleep(0.05)


def without_timing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in TIMING_COLUMNS if c in frame.columns]).reset_index(drop=True)


# --- issue 26: typed options, one entry point --------------------------------------------------------

def test_run_options_are_one_frozen_validated_object_with_the_typed_flags_marked():
    from cema_cli.cli.options import RunOptions, SweepOptions

    chosen = options(samples=64, uplink_budget="16kB")
    assert chosen.typed("samples") and not chosen.typed("seed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen.samples = 128  # type: ignore[misc]
    with pytest.raises(CemaError, match="--threads 0 must be at least 1"):
        RunOptions(threads=0)
    assert {"resume", "versus", "dry_run"} <= {f.name for f in dataclasses.fields(SweepOptions)} - {f.name for f in dataclasses.fields(RunOptions)}


def test_the_cli_hands_run_study_a_study_built_from_typed_options(cli, tmp_path, monkeypatch):
    """bench only parses and calls: the Study it passes holds the flags' settings, the file's where
    no flag was typed (no {**opts, "ctx": ctx} dict on the way)."""
    from cema_cli.run import study as study_module

    seen = {}

    def fake_run_study(study, out, **kwargs):
        seen.update(study=study, out=out, **kwargs)
        raise CemaError("stopped by the test")

    monkeypatch.setattr(study_module, "run_study", fake_run_study)
    path = toml(tmp_path, "samples = 128\nseed = 3\n[channel]\nuplink_budget_bytes = 6000\n")
    result = cli("bench", "-m", "bn", "--config", str(path), "--samples", "64", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "stopped by the test" in result.output
    (config,) = seen["study"].configs
    assert (config.samples, config.seed, config.channel.uplink_budget_bytes, config.methods) == (64, 3, 6000, ("bn",))
    assert seen["study"].kind == "run" and seen["out"] == tmp_path / "o"


def test_run_study_decides_the_kind_and_python_and_the_cli_get_the_same_rows(cli, tmp_path):
    from cema_cli.run.fleet_config import FleetConfig, rotated_edges
    from cema_cli.run.study import Study, run_study

    config = RunConfig(methods=("source", "bn"), corruptions=("gaussian_noise", "contrast"), samples=64)
    assert Study((config,)).kind == "run"
    assert Study.of(config, seeds=(0, 1)).kind == "cells"
    assert Study((config, dataclasses.replace(config, edge="timm:resnet10t"))).kind == "cells"  # two model pairs
    assert Study((config,), fleet=FleetConfig(edges=rotated_edges(2))).kind == "fleet"
    result = run_study(Study.of(config, seeds=(0, 1), executor="serial", threads=1), tmp_path / "python")
    assert (result.kind, result.cells, result.ran) == ("cells", 8, 8) and (tmp_path / "python" / "summary.csv").exists()
    assert cli("compare", "--methods", "source,bn", "-c", "gaussian_noise,contrast", *FAST, "--seeds", "0,1", "--executor", "serial",
               "--out", str(tmp_path / "cli")).exit_code == 0
    cli_rows = pd.read_csv(tmp_path / "cli" / "results.csv")
    pd.testing.assert_frame_equal(without_timing(pd.read_csv(tmp_path / "python" / "results.csv")), without_timing(cli_rows))


# --- issue 22 item 1: every TOML key honoured or refused, one precedence rule ----------------------

SWEEP_FILE = """samples = 64
[sweep]
methods = ["bn", "tent", "cema"]
uplink_budgets = ["0", "16kB", "unlimited"]
[methods.cema]
warmup_samples = 64
"""


def test_a_sweep_table_runs_every_listed_method_at_every_budget(cli, tmp_path):
    path = toml(tmp_path, SWEEP_FILE)
    dry = " ".join(cli("sweep", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run").output.split())
    assert "9 cells (2 reuse an edge-only run at another channel point), 0 already done, 7 to run" in dry  # bn runs once for 3 budgets
    result = cli("sweep", "--config", str(path), "--executor", "serial", "--threads", "1", "--versus", "tent", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "paired difference to tent" in result.output
    frame = pd.read_csv(tmp_path / "o" / "results.csv")
    assert sorted(frame["method"].unique()) == ["bn", "cema", "tent"]
    assert sorted(frame["uplink_budget_bytes"].fillna(-1).unique()) == [-1, 0, 16000]  # -1: unlimited
    cema = frame[frame["method"] == "cema"]
    assert {json.loads(c)["warmup_samples"] for c in cema["method_config"]} == {64}


def test_a_top_level_methods_list_is_run(cli, tmp_path):
    path = toml(tmp_path, 'methods = ["bn", "source"]\nsamples = 64\n')
    result = cli("compare", "--config", str(path), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "o" / "results.csv")["method"]) == ["bn", "source"]


def config_value(config: RunConfig, name: str):
    return getattr(config.channel, name.split(".", 1)[1]) if name.startswith("channel.") else getattr(config, name)


# (file text, field read, the file's value, typed flag and its text, the flag's value)
PRECEDENCE = [
    ("samples = 128\n", "samples", 128, {"samples": 64}, 64),
    ("batch_size = 32\n", "batch_size", 32, {"batch_size": 16}, 16),
    ("seed = 3\n", "seed", 3, {"seed": 5}, 5),
    ("corruptions = ['contrast']\n", "corruptions", ("contrast",), {"corruption": "fog"}, ("fog",)),
    ("severities = [3]\n", "severities", (3,), {"severity": "2"}, (2,)),
    ("protocol = 'continual'\n", "protocol", "continual", {"protocol": "reset-each-shift"}, "reset-each-shift"),
    ("edge = 'timm:resnet10t'\n", "edge", "timm:resnet10t", {"edge": "timm:resnet18"}, "timm:resnet18"),
    ("[sweep]\nedges = ['timm:resnet10t']\n", "edge", "timm:resnet10t", {"edge": "timm:resnet18"}, "timm:resnet18"),
    ("methods = ['bn', 'tent']\n", "methods", ("bn", "tent"), {"methods": "source"}, ("source",)),
    ("[methods.bn]\n[methods.source]\n", "methods", ("bn", "source"), {"methods": "tent"}, ("tent",)),
    ("[sweep]\nmethods = ['bn']\n", "methods", ("bn",), {"methods": "tent"}, ("tent",)),
    ("[channel]\nuplink_encoding = 'jpeg'\n", "channel.uplink_encoding", "jpeg", {"uplink_encoding": "float32"}, "float32"),
    ("[channel]\noverflow = 'queue'\n", "channel.overflow", "queue", {"overflow": "drop"}, "drop"),
    ("[channel]\nsync_period_batches = 4\n", "channel.sync_period_batches", 4, {"sync_period": 2}, 2),
    ("[channel]\nuplink_budget_bytes = 6000\n", "channel.uplink_budget_bytes", 6000, {"uplink_budget": "1kB"}, 1000),
    ("[channel]\ndownlink_budget_bytes = 6000\n", "channel.downlink_budget_bytes", 6000, {"downlink_budget": "2kB"}, 2000),
    ("[sweep]\nuplink_budgets = ['16kB']\n", "channel.uplink_budget_bytes", 16000, {"uplink_budget": "1kB"}, 1000),
    ("[sweep]\ndownlink_budgets = [500]\n", "channel.downlink_budget_bytes", 500, {"downlink_budget": "unlimited"}, None),
    ("[sweep]\nseeds = [7]\n", "seed", 7, {"seed": 5}, 5),
    ("[sweep]\nseeds = [7]\n", "seed", 7, {"seeds": "4,9"}, 4),
]


@pytest.mark.parametrize(("text", "name", "from_file", "typed", "from_flag"), PRECEDENCE, ids=[f"{p[1]}-{i}" for i, p in enumerate(PRECEDENCE)])
def test_a_typed_flag_wins_over_the_file_and_the_file_over_the_default(tmp_path, text, name, from_file, typed, from_flag):
    from cema_cli.cli.options import RunOptions, build_configs
    from cema_cli.toml_config import read_run_file

    file = read_run_file(toml(tmp_path, text))
    assert config_value(build_configs(RunOptions(), file)[0], name) == from_file
    assert config_value(build_configs(options(**typed), file)[0], name) == from_flag
    untyped = RunOptions(**typed)  # the same values, not typed: the file's still win
    assert config_value(build_configs(untyped, file)[0], name) == from_file


# --- issue 22 item 2: a study has fixed settings -------------------------------------------------------

@pytest.fixture(scope="module")
def study_template(tmp_path_factory):
    from typer.testing import CliRunner

    from cema_cli.cli import app

    out = tmp_path_factory.mktemp("study") / "study"
    result = CliRunner().invoke(app, ["sweep", "--methods", "bn", "-c", "gaussian_noise,contrast", "--samples", "128", "--seeds", "2",
                                      "--executor", "serial", "--threads", "1", "--versus", "bn", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def a_study(study_template, tmp_path):
    shutil.copytree(study_template, tmp_path / "study")
    return tmp_path / "study"


def test_a_resume_with_other_settings_is_refused_naming_them(cli, a_study):
    before = (a_study / "results.csv").read_bytes()
    result = cli("sweep", "--resume", str(a_study), "--samples", "512", "--batch-size", "32", "--dry-run")
    assert result.exit_code == 2 and "already done" not in result.output
    assert "samples 512 (the study: 128)" in result.output and "batch_size 32 (the study: 64)" in result.output
    again = cli("sweep", "--methods", "bn", "-c", "gaussian_noise,contrast", "--samples", "256", "--seeds", "2", "--out", str(a_study))
    assert again.exit_code == 2 and "samples 256 (the study: 128)" in again.output  # a re-run into its own folder
    assert (a_study / "results.csv").read_bytes() == before


def test_the_grid_grows_explicitly_at_the_study_settings_and_remembers_versus(cli, a_study):
    result = cli("sweep", "--resume", str(a_study), "--methods", "bn,source", "--executor", "serial", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "4 cells already done, 4 run" in " ".join(result.output.split())
    assert "paired difference to bn" in result.output  # --versus bn was given when the study started
    frame = pd.read_csv(a_study / "results.csv")
    assert sorted(frame["method"].unique()) == ["bn", "source"] and (frame["samples"] == 128).all()  # not the default: all
    record = json.loads((a_study / "grid.json").read_text())["study"]
    assert record["versus"] == "bn" and record["settings"]["samples"] == 128
    assert record["history"][-1]["added"] == {"methods": ["source"]} and record["axes"]["methods"] == ["bn", "source"]
    summary = pd.read_csv(a_study / "summary.csv")
    assert set(summary["n"]) == {2}  # two seeds each, never pooled across settings


def test_summaries_never_pool_rows_of_two_settings(cli, a_study, tmp_path):
    from cema_cli.results.tables import summary_frame

    rows = pd.read_csv(a_study / "results.csv")
    other = rows.assign(samples=256, correct=rows["correct"] * 2)  # the same seeds at another --samples
    with pytest.raises(CemaError, match=r"the rows come from different settings \(samples \['128', '256'\]\)"):
        summary_frame(pd.concat([rows, other]))  # what a sweep merging its cells writes to summary.csv
    with pytest.raises(CemaError, match="the rows come from different settings .seed 0 twice"):
        summary_frame(pd.concat([rows, rows]))  # a seed twice: never n = 4 for 2 seeds
    later = rows.assign(seed=rows["seed"] + 2, samples=256)  # other seeds at another --samples
    pd.concat([rows, later]).to_csv(tmp_path / "mixed.csv", index=False)
    mixed = cli("report", str(tmp_path / "mixed.csv"))
    assert mixed.exit_code == 2 and "samples ['128', '256']" in mixed.output


def test_a_torn_cell_or_run_json_is_named_and_the_resume_goes_on(cli, a_study):
    cell = sorted((a_study / "cells").iterdir())[0]
    (cell / "cell.json").write_text((cell / "cell.json").read_text()[:30])
    (a_study / "run.json").write_text("{")
    result = cli("sweep", "--resume", str(a_study), "--executor", "serial", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert f"{a_study / 'run.json'} is not valid JSON" in result.stderr and f"{cell / 'cell.json'} is not valid JSON" in result.stderr
    assert "3 cells already done, 1 run" in " ".join(result.output.split())
    assert json.loads((cell / "cell.json").read_text())["status"] == "ok" and len(pd.read_csv(a_study / "results.csv")) == 4


# --- issue 22 item 8: provenance ---------------------------------------------------------------------

def test_run_json_and_every_row_record_the_commit_and_the_library_versions(cli, tmp_path):
    import importlib.metadata

    result = cli("bench", "-m", "bn", "--samples", "64", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    environment = json.loads((tmp_path / "o" / "run.json").read_text())["environment"]
    row = pd.read_csv(tmp_path / "o" / "results.csv").iloc[0]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    expected = head.stdout.strip() if head.returncode == 0 and (ROOT / ".git").exists() else None
    assert environment["git_commit"] == expected and (pd.isna(row["git_commit"]) if expected is None else row["git_commit"] == expected)
    assert isinstance(environment["git_dirty"], bool) or expected is None
    for column, name in (("torchvision_version", "torchvision"), ("timm_version", "timm"), ("numpy_version", "numpy"),
                         ("pillow_version", "pillow")):
        assert environment[column] == row[column] == importlib.metadata.version(name)
    import cv2

    assert environment["opencv_version"] == row["opencv_version"] and row["opencv_version"].startswith(cv2.__version__.split("-")[0])
    assert row["schema_version"] == 1


# --- issue 22 item 9: the faults of a study ------------------------------------------------------------

def test_a_second_sweep_is_refused_naming_the_holder_and_a_dead_ones_lock_is_taken_over(cli, tmp_path):
    out = tmp_path / "study"
    grid = ["--methods", "source,bn", "-c", "gaussian_noise,contrast,fog", "--samples", "1024", "--executor", "serial", "--threads", "1"]
    first = cema("sweep", *grid, "--out", str(out))
    try:
        wait_for(out / LOCK_NAME, first)
        second = cli("sweep", *grid, "--out", str(out))
        assert second.exit_code == 2 and f"being written by another cema run (pid {first.pid}" in second.stderr
        assert second.stderr.count("\n") == 1
    finally:
        first.kill()
        first.wait()
    assert (out / LOCK_NAME).exists()  # SIGKILL: a stale lock
    resumed = cli("sweep", "--resume", str(out), "--executor", "serial", "--threads", "1", "--samples", "1024")
    assert resumed.exit_code == 0, resumed.output
    assert f"took over the lock of pid {first.pid}" in resumed.stderr and not (out / LOCK_NAME).exists()
    assert len(pd.read_csv(out / "results.csv")) == 6


def disk_of(limit: int):
    """A child whose files may not grow past ``limit`` bytes (a full disk, as the writes see it)."""
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limited


def test_a_full_disk_leaves_no_torn_tmp_no_lock_and_names_the_file(tmp_path):
    out = tmp_path / "run"
    process = cema("compare", "--methods", "source,bn", "-c", "gaussian_noise,contrast,fog", "--samples", "128", "--out", str(out),
                   preexec_fn=disk_of(4000))
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 2 and stderr.count("\n") == 1
    assert f"error: {out / 'results.csv'}: File too large; {out / 'results.csv'} keeps its previous contents" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["batches.csv", "results.csv", "run.json"]  # no .tmp, no lock
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and meta["finished_rows"] == len(pd.read_csv(out / "results.csv")) >= 1
    sweep = cema("sweep", "--methods", "source,bn", "--samples", "64", "--out", str(tmp_path / "study"), preexec_fn=disk_of(4000))
    _, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 2 and f"{tmp_path / 'study' / 'grid.json'}: File too large" in stderr
    assert not (tmp_path / "study").exists()  # nothing was written: no folder, no lock


def test_a_seed_beyond_32_bits_runs_and_repeats(cli, tmp_path):
    seed = str(2**32)
    args = ["bench", "-m", "bn", "--samples", "512", "--seed", seed, "--protocol", "correlated", "--dirichlet", "1"]
    for name in ("a", "b"):
        result = cli(*args, "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
    first, second = (pd.read_csv(tmp_path / name / "batches.csv")["correct"].tolist() for name in ("a", "b"))
    assert first == second and pd.read_csv(tmp_path / "a" / "results.csv")["seed"].tolist() == [2**32]


def test_sigterm_before_any_row_says_that_nothing_was_kept(tmp_path):
    out = tmp_path / "fleet"
    process = cema("compare", "--methods", "bn,tent", "--edges", "3", "-c", "gaussian_noise,contrast", "--samples", "4000",
                   "--out", str(out))
    wait_for(out / "run.json", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    kept = len(pd.read_csv(out / "results.csv")) if (out / "results.csv").exists() else 0
    if kept:  # the first rows finished before the signal: the line says how many
        assert f"the {kept} finished row(s) are kept in {out}" in stderr
    else:
        assert "before any row finished: no result was kept" in stderr and "rows finished so far are kept" not in stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
