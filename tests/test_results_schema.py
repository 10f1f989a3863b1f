"""The versioned result schema: every file a run writes carries schema_version, and reading an
older or foreign results.csv says exactly what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cema_cli.errors import CemaError
from cema_cli.results.schema import REQUIRED_COLUMNS, SCHEMA_VERSION, read_results

RUN = Path(__file__).parent / "golden" / "inputs" / "compare-run"


def write_variant(tmp_path: Path, change) -> Path:
    frame = change(pd.read_csv(RUN / "results.csv"))
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    return path


def test_reads_a_run_folder_or_its_results_csv():
    by_folder, by_file = read_results(RUN), read_results(RUN / "results.csv")
    assert list(by_folder.columns[:4]) == list(REQUIRED_COLUMNS[:4])
    assert by_folder.equals(by_file) and len(by_file) == 4


def test_missing_columns_are_named(tmp_path):
    path = write_variant(tmp_path, lambda f: f.drop(columns=["accuracy", "seed"]))
    with pytest.raises(CemaError, match=r"lacks the column\(s\) accuracy, seed of results schema version 1"):
        read_results(path)


def test_other_schema_version_says_expected_and_found(tmp_path):
    path = write_variant(tmp_path, lambda f: f.assign(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(CemaError, match=f"has schema version {SCHEMA_VERSION + 1}; this cema reads version {SCHEMA_VERSION}"):
        read_results(path)


def test_a_file_without_schema_version_is_foreign(tmp_path):
    path = write_variant(tmp_path, lambda f: f.drop(columns=["schema_version"]))
    with pytest.raises(CemaError, match="no schema_version column: it is not a cema results.csv"):
        read_results(path)


def test_extra_columns_are_kept(tmp_path):
    frame = read_results(write_variant(tmp_path, lambda f: f.assign(note="x")))
    assert list(frame["note"]) == ["x"] * 4


@pytest.mark.parametrize(("content", "expected"), [(None, "no such file"), ("", "not a readable CSV"),
                                                   ("schema_version\n", "has no result rows")])
def test_unreadable_files(tmp_path, content, expected):
    path = tmp_path / "results.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CemaError, match=expected):
        read_results(path)


def test_every_file_of_a_run_carries_the_schema_version(cli, tmp_path):
    result = cli("bench", "--method", "source", "--samples", "128", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "results.csv")["schema_version"]) == {SCHEMA_VERSION}
    batches = pd.read_csv(tmp_path / "batches.csv")
    assert batches.columns[0] == "schema_version" and set(batches["schema_version"]) == {SCHEMA_VERSION}
    assert json.loads((tmp_path / "run.json").read_text())["schema_version"] == SCHEMA_VERSION
