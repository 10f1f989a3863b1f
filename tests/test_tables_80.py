"""Readable wherever the output goes (issue 22, item 6): at 80 columns (every redirect, every CI
log) no cell is cut short; the headline numbers and the status stay whole; wide tables fold into
parts that repeat the row names; output to a pipe is plain text. Golden files at 80 columns
(regenerate with CEMA_UPDATE_GOLDEN=1 and review the diff)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console

from cema_cli.cli.results import merged_results, report_tables

GOLDEN = Path(__file__).parent / "golden"
ALL_METHODS = GOLDEN / "inputs" / "all-methods-run"  # compare --methods all --corruption all --samples 64
COLLAPSED = GOLDEN / "inputs" / "collapsed-run"  # bench -m tent -o tent.lr=1e6 --samples 256 (README's example)


def render(tables: list, width: int = 80) -> str:
    console = Console(width=width, force_terminal=False, color_system=None, record=True, file=io.StringIO())
    for table in tables:
        console.print(table)
    return console.export_text()


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CEMA_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, rerun with CEMA_UPDATE_GOLDEN=1"


def test_every_method_on_every_domain_reads_at_80_columns():
    """The per-domain table of `compare --methods all --corruption all` was all "…" at 80 columns:
    13 method columns fold into parts, each repeating the domain column."""
    frame = pd.read_csv(ALL_METHODS / "results.csv")
    text = render(report_tables(merged_results([ALL_METHODS])))
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    per_domain = text[text.index("accuracy % per domain"):]
    for method, group in frame.groupby("method"):
        assert f" {method} " in per_domain  # every method has its column in some part
    for domain in frame["corruption"].unique():
        rows = [line for line in per_domain.splitlines() if line.split()[:1] == [f"{domain}-5"]]
        assert len(rows) >= 2  # one line per part, the domain repeated
    gaussian = frame[frame["corruption"] == "gaussian_noise"].set_index("method")["accuracy"]
    cells = [cell for line in per_domain.splitlines() if line.split()[:1] == ["gaussian_noise-5"] for cell in line.split()[1:]]
    assert cells == [f"{100 * gaussian[m]:.1f}" for m in dict.fromkeys(frame["method"])]  # every figure whole, in order
    assert_golden("report_all_methods_80.txt", text)


def test_a_status_column_never_cuts_the_headline():
    """`tent gaussian_noise-5 31.… upl… 100.… collapsed`: now every figure and the status whole."""
    row = pd.read_csv(COLLAPSED / "results.csv").iloc[0]
    text = render(report_tables(merged_results([COLLAPSED])))
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    line = next(line for line in text.splitlines() if line.split()[:2] == ["tent", "gaussian_noise-5"])
    assert f"{100 * row['accuracy']:.2f}" in line.split() and "collapsed" in line.split()
    numbers = [line.split() for line in text.splitlines() if line.split()[:2] == ["tent", "gaussian_noise-5"]]
    cells = [cell for cells in numbers for cell in cells]
    for figure in (f"{row['uploads']:,.0f}", f"{100 * row['upload_ratio']:.1f}%", f"{row['uplink_bytes'] / 1e6:.2f}"):
        assert figure in cells
    assert_golden("report_collapsed_80.txt", text)


def test_output_to_a_pipe_is_plain_text_without_ellipses():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TERM")}
    out = subprocess.run([sys.executable, "-m", "cema_cli", "report", str(ALL_METHODS), str(COLLAPSED)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout and "…" not in out.stdout
    assert all(len(line) <= 80 for line in out.stdout.splitlines())
