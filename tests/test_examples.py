"""Every file in examples/ is exercised here, so none of them rots."""

from __future__ import annotations

import runpy
import shlex
import shutil
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cema_cli.cli import app
from cema_cli.config import ChannelConfig, RunConfig
from cema_cli.cli.options import RunOptions, build_configs
from cema_cli.toml_config import read_run_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The run configurations (*.toml) run end to end in tests/test_example_configs.py.
TESTED = {"quickstart.py", "custom_strategy.py", "study.py", "ci-workflow.yml", *(p.name for p in EXAMPLES.glob("*.toml"))}


@pytest.fixture
def run_example(monkeypatch, capsys):
    """Run examples/NAME as `python examples/NAME ARGS...` would, in this process (torch is warm);
    the strategies it registers are dropped afterwards."""
    from cema_cli.strategies import STRATEGIES

    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))

    def run(name: str, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
        return capsys.readouterr().out

    return run


def line_count(name: str) -> int:
    return len((EXAMPLES / name).read_text().splitlines())


def test_every_example_has_a_test():
    assert {p.name for p in EXAMPLES.iterdir() if not p.name.startswith(".")} == TESTED


def test_quickstart_gets_a_dataframe_in_under_40_lines(run_example):
    out = run_example("quickstart.py", "--samples", "128")
    assert "tent" in out and "impulse_noise" in out
    assert line_count("quickstart.py") < 40


def test_study_runs_seed_cells_and_resumes_from_python(run_example, tmp_path):
    out = run_example("study.py", "--samples", "64", "--out", str(tmp_path / "study"))
    assert "cells: 0 cells already done, 18 run" in out and "tent" in out
    frame = pd.read_csv(tmp_path / "study" / "results.csv")
    assert sorted(frame["seed"].unique()) == [0, 1, 2] and set(frame["method"]) == {"source", "bn", "tent"}
    assert (tmp_path / "study" / "summary.csv").exists()
    again = run_example("study.py", "--samples", "64", "--out", str(tmp_path / "study"))
    assert "cells: 18 cells already done, 0 run" in again
    assert line_count("study.py") < 40


def test_custom_strategy_registers_and_runs_in_under_60_lines(run_example):
    out = run_example("custom_strategy.py", "--samples", "128")
    assert "bn-ema gaussian_noise" in out and '{"momentum": 0.8}' in out
    assert line_count("custom_strategy.py") < 60


def test_paper_toml_names_run_config_fields_and_real_method_options():
    from cema_cli.corruptions import COMMON
    from cema_cli.strategies import STRATEGIES
    from cema_cli.strategies.base import make_config

    data = tomllib.loads((EXAMPLES / "imagenet_c_paper.toml").read_text())
    top = {k: v for k, v in data.items() if k not in ("channel", "methods", "expected")}
    assert set(top) <= {f.name for f in fields(RunConfig)}
    assert set(data["channel"]) <= {f.name for f in fields(ChannelConfig)}
    assert list(data["methods"]) == ["cema", "tent", "eata", "source"]
    for method, options in data["methods"].items():
        make_config(STRATEGIES.get(method), options, method)  # raises on an option the method lacks
    assert tuple(data["corruptions"]) == COMMON and data["severities"] == [5] and data["batch_size"] == 64
    (config,) = build_configs(RunOptions(), read_run_file(EXAMPLES / "imagenet_c_paper.toml"))
    assert config.methods == ("cema", "tent", "eata", "source") and config.method_options["eata"]["fisher_beta"] == 2000.0
    assert (config.dataset, config.edge, config.cloud) == ("imagenet-c", "torchvision:resnet18@IMAGENET1K_V1", "torchvision:resnet101@IMAGENET1K_V1")


def test_every_run_configuration_is_a_valid_config_with_published_numbers():
    for path in EXAMPLES.glob("*.toml"):
        config = build_configs(RunOptions(), read_run_file(path))[0]
        data = tomllib.loads(path.read_text())
        assert data["expected"] and all(table["source"] for table in data["expected"]), path.name
        assert config.methods == tuple(data["methods"]), path.name
        assert config.edge.endswith("@IMAGENET1K_V1") or config.edge.startswith("robustbench:"), path.name  # the published weights


def workflow_commands() -> list[list[str]]:
    """The `cema ...` commands of the workflow's run steps, in order, shell redirections removed."""
    yaml = pytest.importorskip("yaml")
    steps = yaml.safe_load((EXAMPLES / "ci-workflow.yml").read_text())["jobs"]["accuracy"]["steps"]
    commands = []
    for line in (line for step in steps for line in step.get("run", "").splitlines()):
        words = shlex.split(line)
        if words[:1] == ["cema"]:
            commands.append(words[1: words.index(">>")] if ">>" in words else words[1:])
    return commands


def test_ci_workflow_commands_run_and_pass(tmp_path, monkeypatch):
    """Runs the workflow's cema steps (with fewer samples), after making the baseline as its header says."""
    commands = workflow_commands()
    assert [c[0] for c in commands] == ["prepare", "compare", "check", "report"]
    monkeypatch.chdir(tmp_path)
    for words in commands:
        words = [("128" if w == "512" else w) for w in words]
        if words[0] == "check":
            (tmp_path / "ci").mkdir()
            shutil.copy(tmp_path / "cema-run" / "results.csv", tmp_path / "ci" / "cema-baseline.csv")
        result = CliRunner().invoke(app, words, catch_exceptions=False)
        assert result.exit_code == 0, f"cema {' '.join(words)}\n{result.output}"
