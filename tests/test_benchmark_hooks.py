"""The benchmark scripts that wrap the stream loop (benchmarks/fingerprint.py, bench_floor.py)
patch ``api.stream_steps``; a refactor that moves the loop must not leave them silently
measuring nothing (fingerprint.py once printed no line at all after such a move)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cema_cli.run import api
from cema_cli.config import RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_floor  # noqa: E402
import fingerprint  # noqa: E402


def small_config(*methods: str) -> RunConfig:
    return RunConfig(methods=methods, corruptions=("gaussian_noise",), severities=(5,), samples=128, seed=0, device="cpu")


def test_fingerprint_traces_every_stream_and_repeats():
    first = fingerprint.fingerprints(small_config("bn", "tent"))
    assert [row["method"] for row, _, _ in first] == ["bn", "tent"]
    assert first[0][1] != first[1][1]  # tent adapts: its logits and final state differ from bn's
    again = fingerprint.fingerprints(small_config("bn", "tent"))
    assert [digest for _, digest, _ in again] == [digest for _, digest, _ in first]
    assert api.stream_steps is fingerprint.engine.stream_steps  # restored


def test_fingerprint_refuses_when_no_stream_is_traced(monkeypatch):
    monkeypatch.setattr(fingerprint, "traced_stream_steps", lambda *a, **k: (yield from fingerprint.engine.stream_steps(*a, **k)))
    with pytest.raises(SystemExit, match="0 streams traced for 1 rows"):
        fingerprint.fingerprints(small_config("bn"))


@pytest.mark.parametrize("method", ["tent", "cema"])
def test_bench_floor_records_the_passes_the_work_columns_count(method, monkeypatch):
    """The cost columns count FLOPs on a copy of each cloud model (meta device, or a CPU copy
    for CEMA's TBR layers, batch 2): bookkeeping the floor must not replay."""
    from cema_cli.link import cloud_meter

    monkeypatch.setattr(cloud_meter, "_PER_SAMPLE", {})  # counted afresh in this run
    passes, row = bench_floor.record(small_config(method))
    assert passes and any(p.backward for p in passes)  # the cloud's adaptation passes, each with a backward
    assert all(p.shape[0] > 2 for p in passes)
    assert bench_floor.work_agrees(passes, row)
