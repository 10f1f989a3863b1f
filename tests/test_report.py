"""`cema report`: saved results.csv files re-rendered and merged, without torch.

Golden files under tests/golden/ hold the expected text at a console width of 100; after an
intended change of the tables, regenerate them with CEMA_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cema_cli.cli import app
from cema_cli.cli.results import merged_results, report_tables
from cema_cli.results.schema import read_results

GOLDEN = Path(__file__).parent / "golden"
COMPARE_RUN = GOLDEN / "inputs" / "compare-run"  # source,bn on gaussian_noise-5 and contrast-5, seed 0
BENCH_RUN = GOLDEN / "inputs" / "bench-run" / "results.csv"  # bn on gaussian_noise-5, seed 1
ALL_RUN = GOLDEN / "inputs" / "all-run"  # source,bn,tent on --corruption all, 64 samples
WIDTH = 100


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CEMA_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, rerun with CEMA_UPDATE_GOLDEN=1"


def render(tables: list, width: int = WIDTH) -> str:
    console = Console(width=width, force_terminal=False, color_system=None, record=True, file=io.StringIO())
    for table in tables:
        console.print(table)
    return console.export_text()


def report(*args: str):
    return CliRunner().invoke(app, ["report", *args], env={"COLUMNS": str(WIDTH)}, catch_exceptions=False)


def test_one_run_renders_as_bench_does():
    assert_golden("report_bench_run.txt", render(report_tables(merged_results([BENCH_RUN]))))


def test_merged_runs_render_as_compare_does_with_runs_named():
    text = render(report_tables(merged_results([COMPARE_RUN, BENCH_RUN])))
    assert "bn (compare-run)" in text and "bn (bench-run)" in text  # the same method twice, told apart
    assert_golden("report_merged.txt", text)


@pytest.mark.parametrize("width", [80, 120])
def test_fifteen_domains_read_at_80_and_120_columns(width):
    text = render(report_tables(merged_results([ALL_RUN])), width)
    assert "…" not in text  # no cell cut short
    assert all(len(line) <= width for line in text.splitlines())
    domain_rows = [line.split() for line in text.splitlines() if line.split() and line.split()[0].endswith("-5")]
    assert [row[0] for row in domain_rows][:2] == ["gaussian_noise-5", "shot_noise-5"] and len(domain_rows) == 15
    assert all(len(row) == 4 for row in domain_rows)  # the domain and one figure per method, on one line
    assert_golden(f"report_all_{width}.txt", text)


def test_the_command_prints_the_same_tables():
    result = report(str(COMPARE_RUN), str(BENCH_RUN))
    assert result.exit_code == 0, result.output
    assert result.output == (GOLDEN / "report_merged.txt").read_text()


def test_markdown_for_a_pull_request():
    result = report(str(COMPARE_RUN), str(BENCH_RUN), "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert_golden("report_merged.md", result.output)


def test_csv_is_the_merged_tidy_rows_and_reads_back(tmp_path):
    result = report(str(COMPARE_RUN), str(BENCH_RUN), "--format", "csv")
    assert result.exit_code == 0, result.output
    (tmp_path / "merged.csv").write_text(result.output)
    merged = read_results(tmp_path / "merged.csv")  # a valid results.csv again
    assert list(merged["method"]) == ["source (compare-run)", "bn (compare-run)"] * 2 + ["bn (bench-run)"]
    inputs = pd.concat([pd.read_csv(COMPARE_RUN / "results.csv"), pd.read_csv(BENCH_RUN)], ignore_index=True)
    assert merged["accuracy"].tolist() == inputs["accuracy"].tolist()
    assert merged.drop(columns="method").equals(inputs.drop(columns="method"))


def test_runs_without_overlap_keep_their_method_names():
    result = report(str(COMPARE_RUN), "--format", "csv")
    assert set(pd.read_csv(io.StringIO(result.output))["method"]) == {"source", "bn"}


def test_json_carries_the_schema_version():
    result = report(str(BENCH_RUN), "--format", "json")
    data = json.loads(result.output)
    assert data["schema_version"] == 1 and len(data["rows"]) == 1
    assert data["rows"][0]["method"] == "bn" and data["rows"][0]["seed"] == 1


def test_bad_input_exits_2(tmp_path):
    assert "unknown format 'xlsx'" in report(str(BENCH_RUN), "--format", "xlsx").output
    (tmp_path / "other.csv").write_text("model,top1\nresnet,0.7\n")
    result = report(str(tmp_path / "other.csv"))
    assert result.exit_code == 2 and "no schema_version column" in " ".join(result.output.split())


def test_report_never_imports_torch():
    code = (
        "import sys\n"
        "from cema_cli.cli import app\n"
        f"for fmt in ('table', 'csv', 'markdown', 'json'):\n"
        f"    app(['report', {str(COMPARE_RUN)!r}, {str(BENCH_RUN)!r}, '--format', fmt], standalone_mode=False)\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("TORCH False")
