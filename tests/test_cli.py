"""The command line: fast help, bad input gets one clear line and exit 2, files are written."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

REQUIRED_COLUMNS = {
    "method", "dataset", "corruption", "severity", "samples", "accuracy", "uploads", "upload_ratio",
    "uplink_bytes", "downlink_bytes", "seed", "edge_model", "cloud_model", "protocol", "seconds",
    "cema_version", "torch_version", "schema_version", "corruption_source", "constants",
}


def test_cli_module_does_not_import_torch():
    code = "import sys, cema_cli.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "cema_cli", "list", "methods"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "source" in out.stdout and "bn" in out.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--corruption", "gausian_noise"], "Did you mean 'gaussian_noise'"),
        (["--method", "tnet_x"], "unknown method 'tnet_x'"),
        (["--dataset", "mnits"], "Did you mean 'mnist'"),
        (["--severity", "6"], "severity 6 is outside 1-5"),
        (["--severity", "0"], "severity 0 is outside 1-5"),
        (["--severity", "high"], "is not a number or list"),
        (["--samples", "-5"], "must be a positive count"),
        (["--uplink-budget", "lots"], "cannot read 'lots' as a byte count"),
        (["--data-root", "/nonexistent"], "takes no --data-root"),
        (["--protocol", "episodic"], "unknown protocol 'episodic'"),
        (["--method", "bn", "--option", "bn.nonsense=1"], "has no option nonsense"),
        (["--option", "tent.lr=0.1"], "'tent' is not run"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(cli, tmp_path, args, expected):
    result = cli("bench", "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_verbose_shows_the_traceback(cli, tmp_path):
    result = cli("bench", "--corruption", "nope", "--verbose", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "Traceback" in result.output


def test_unknown_list_kind(cli):
    result = cli("list", "method")
    assert result.exit_code == 2
    assert "Did you mean 'methods'" in result.output


def test_list_corruptions_gives_all_19(cli):
    result = cli("list", "corruptions")
    assert result.exit_code == 0
    assert result.output.count("common") == 15 and result.output.count("extra") == 4


def test_bench_writes_tidy_results_and_run_json(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("bench", "--method", "source", "--samples", "128", "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    assert REQUIRED_COLUMNS <= set(frame.columns)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert 0.0 <= row["accuracy"] <= 1.0
    assert row["samples"] == 128 and row["uploads"] == 0 and row["corruption_source"] == "generated"
    batches = pd.read_csv(out / "batches.csv")
    assert list(batches["seen"]) == [64, 128]
    assert batches["correct"].iloc[-1] == row["correct"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["config"]["samples"] == 128
    assert meta["environment"]["torch_version"] == row["torch_version"]


def test_bn_shows_the_shift_over_source(cli, tmp_path):
    result = cli("compare", "--methods", "source,bn", "--samples", "512", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "results.csv").set_index("method")
    assert frame.loc["bn", "accuracy"] > frame.loc["source", "accuracy"] + 0.5


def test_same_seed_same_numbers_other_seed_other_order(cli, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cli("bench", "--method", "bn", "--samples", "256", "--seed", str(seed), "--out", str(tmp_path / name))
        runs[name] = pd.read_csv(tmp_path / name / "batches.csv")["correct"].tolist()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_toml_config_sets_the_run_and_flags_win(cli, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        'corruptions = ["gaussian_noise", "contrast"]\nsamples = 128\nseed = 3\n'
        '[channel]\nuplink_encoding = "jpeg"\n[methods.bn]\nprior = 16.0\n[methods.source]\n'
    )
    result = cli("compare", "--config", str(config), "--samples", "64", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(frame["method"].unique()) == ["bn", "source"]
    assert set(frame["corruption"]) == {"gaussian_noise", "contrast"}
    assert (frame["samples"] == 64).all() and (frame["seed"] == 3).all()  # the flag won over the file's 128
    assert json.loads(frame["method_config"].iloc[0]) == {"prior": 16.0}
    assert json.loads(frame["channel"].iloc[0])["uplink_encoding"] == "jpeg"


def test_toml_config_with_an_unknown_key_is_one_clear_line(cli, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("sample = 5\n")
    result = cli("bench", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "unknown key(s) sample" in result.output


def test_toml_budget_and_options_for_file_methods_are_kept(cli, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('samples = 64\n[channel]\nuplink_budget_bytes = 6000\n[methods.tent]\n[methods.bn]\n')
    result = cli("compare", "--config", str(config), "-o", "bn.prior=8", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "run" / "results.csv").set_index("method")
    assert frame.loc["tent", "uplink_budget_bytes"] == 6000 and frame.loc["tent", "uplink_bytes"] <= 6000
    assert json.loads(frame.loc["bn", "method_config"]) == {"prior": 8.0}


def every_help_text() -> list[tuple[str, str]]:
    """(command path, text) for every command's and option's help, as typer renders them."""
    import typer

    from cema_cli.cli import app

    texts, stack = [], [("cema", typer.main.get_command(app))]
    while stack:
        path, command = stack.pop()
        texts += [(path, command.help or "")] + [(f"{path} {p.name}", p.help) for p in command.params if getattr(p, "help", None)]
        stack += [(f"{path} {name}", sub) for name, sub in getattr(command, "commands", {}).items()]  # typer vendors click
    return texts


def test_help_texts_keep_their_brackets_through_rich_markup():
    """typer reads help as rich markup: '[[expected]]' unescaped used to print as '[]'."""
    from rich.text import Text

    texts = every_help_text()
    assert any("[[expected]]" in Text.from_markup(text).plain for _, text in texts)  # report --expected
    eaten = [(where, text) for where, text in texts if Text.from_markup(text).plain != text.replace("\\[", "[")]
    assert eaten == []
