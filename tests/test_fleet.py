"""The fleet (issue 12, section 2): N edges sharing one cloud, one global tick.

Invariants: a fleet of one reproduces today's single-edge rows; identical edges with per-edge
cloud copies predict identically; the edges' bytes sum to the cloud's; the cloud never runs more
steps per tick than its capacity; pooled batching differs from per-edge batching on a mixed
fleet. Then the CLI, the TOML [fleet] table and bad input. Embedded default, few samples."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cema_cli.run.api import run_benchmark
from cema_cli.cli import app
from cema_cli.config import RunConfig
from cema_cli.run.fleet import CloudQueue, ComputeCredit, run_fleet
from cema_cli.run.fleet_config import EdgeSpec, FleetConfig, rotated_edges
from cema_cli.run.sweep import TIMING_COLUMNS
from cema_cli.results.schema import read_results

TIMING = set(TIMING_COLUMNS)  # measured, so not reproducible (cema_cli/run/sweep.py)
FISHER = {"eata": {"fisher_samples": 64}}


def config(methods=("tent",), corruptions=("gaussian_noise", "contrast"), samples=96, protocol="continual", **extra) -> RunConfig:
    return RunConfig(methods=methods, corruptions=corruptions, samples=samples, batch_size=32, device="cpu", protocol=protocol,
                     method_options={m: v for m, v in FISHER.items() if m in methods}, **extra)


def by_key(rows):
    return sorted(rows, key=lambda r: (r["method"], r.get("edge", 0), r["segment"], r["corruption"], r["severity"]))


def without_timing(row):
    return {k: v for k, v in row.items() if k not in TIMING and k != "edge"}


def per_edge_accuracy(rows, method):
    return [r["accuracy"] for r in by_key(rows) if r["method"] == method]


# --- invariants --------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["reset-each-shift", "continual"])
def test_a_fleet_of_one_reproduces_the_single_edge_rows(protocol):
    run = config(("cema", "tent", "eata", "bn"), protocol=protocol)
    single = by_key(run_benchmark(run))
    fleet = run_fleet(run, FleetConfig(independent=False))
    assert [r["edge"] for r in fleet.rows] == [0] * len(single)
    assert [without_timing(r) for r in by_key(fleet.rows)] == [without_timing(r) for r in single]


def test_a_fleet_prepares_its_methods_as_a_single_run_does():
    """SAR's official lr follows the batch size (methods-more.md 7.3) in a fleet too."""
    run = RunConfig(methods=("sar",), corruptions=("gaussian_noise",), samples=64, batch_size=16, device="cpu", preset="imagenet")
    single = run_benchmark(run)
    fleet = run_fleet(run, FleetConfig(independent=False))
    assert json.loads(fleet.rows[0]["method_config"])["lr"] == json.loads(single[0]["method_config"])["lr"] == pytest.approx(1.25e-4)
    assert without_timing(fleet.rows[0]) == without_timing(single[0])


@pytest.mark.parametrize(("method", "foundation"), [("tent", "shared"), ("eta", "shared"), ("cema", "per-edge")])
def test_identical_edges_with_their_own_cloud_copies_predict_identically(method, foundation):
    run = config((method,))
    fleet = run_fleet(run, FleetConfig(edges=(EdgeSpec(),) * 3, foundation=foundation, independent=False))
    rows = [r for r in fleet.rows]
    for edge in (1, 2):
        mine = [without_timing(r) for r in by_key(rows) if r["edge"] == edge]
        assert mine == [without_timing(r) for r in by_key(rows) if r["edge"] == 0]
    alone = by_key(run_benchmark(run))
    assert [r["accuracy"] for r in by_key(rows) if r["edge"] == 0] == [r["accuracy"] for r in alone]


def test_a_shared_foundation_makes_identical_cema_edges_differ():
    # The foundation adapts between the edges' cloud batches, so the edges do not stay identical.
    run = config(("cema",), samples=192)
    shared = run_fleet(run, FleetConfig(edges=(EdgeSpec(),) * 2, independent=False))
    first, second = ([r["accuracy"] for r in by_key(shared.rows) if r["edge"] == e] for e in (0, 1))
    assert first == [r["accuracy"] for r in by_key(run_benchmark(run))]  # edge 0 learns first: as alone
    assert shared.summary[0]["cloud_steps"] > 0


@pytest.mark.parametrize("batching", ["per-edge", "pooled"])
def test_the_edges_bytes_sum_to_the_clouds(batching):
    run = config(("cema", "tent"))
    fleet = run_fleet(run, FleetConfig(edges=rotated_edges(3), cloud_batching=batching, student="shared", independent=False))
    for summary in fleet.summary:
        rows = [r for r in fleet.rows if r["method"] == summary["method"]]
        assert summary["cloud_uplink_bytes_received"] == sum(r["uplink_bytes"] for r in rows) > 0
        assert summary["cloud_downlink_bytes_sent"] == sum(r["downlink_bytes"] for r in rows) > 0


def test_a_shared_student_is_sent_to_every_edge_and_counted_per_recipient():
    run = config(("tent",))
    shared = run_fleet(run, FleetConfig(edges=rotated_edges(3), student="shared", independent=False)).rows
    one = run_fleet(run, FleetConfig(edges=rotated_edges(1), independent=False)).rows
    per_edge = {e: sum(r["downlink_bytes"] for r in shared if r["edge"] == e) for e in range(3)}
    assert len(set(per_edge.values())) == 1 and per_edge[0] == sum(r["downlink_bytes"] for r in one)


@pytest.mark.parametrize("scheduler", ["round-robin", "fifo", "lowest-entropy-first"])
def test_the_cloud_never_runs_more_steps_per_tick_than_its_capacity(scheduler):
    run = config(("cema", "tent"), samples=128)
    limited = run_fleet(run, FleetConfig(edges=rotated_edges(4), cloud_capacity=1, scheduler=scheduler, independent=False))
    free = run_fleet(run, FleetConfig(edges=rotated_edges(4), independent=False))
    for slow, fast in zip(limited.summary, free.summary):
        assert slow["peak_cloud_steps_per_tick"] == 1 < fast["peak_cloud_steps_per_tick"]
        assert slow["cloud_utilisation"] <= 1 and slow["longest_queue"] > 0 == fast["longest_queue"]
        assert slow["mean_queue_wait_ticks"] > 0 == fast["mean_queue_wait_ticks"]  # staleness follows from the load


def test_the_compute_credit_carries_debt_but_banks_no_savings():
    credit, steps = ComputeCredit(10.0), []
    for _ in range(3):  # every step costs 4 GFLOPs
        credit.new_tick()
        count = 0
        while credit.allows_a_step():
            credit.spend(4.0)
            count += 1
        steps.append(count)
    assert steps == [3, 2, 3]  # 10 -> -2; -2 + 10 = 8 -> 0; 0 + 10 -> -2
    idle = ComputeCredit(10.0)
    idle.new_tick()
    idle.new_tick()
    assert idle.credit == 10.0  # an idle tick's credit is not banked


def test_a_gflops_budget_bounds_the_cloud_compute():
    run = config(("cema",), samples=128)
    free = run_fleet(run, FleetConfig(edges=rotated_edges(2), independent=False)).summary[0]
    budget = free["fleet_cloud_gflops"] / free["ticks"] / 4  # a quarter of what the cloud wants on average
    slow = run_fleet(run, FleetConfig(edges=rotated_edges(2), cloud_gflops_per_tick=budget, independent=False)).summary[0]
    assert slow["fleet_cloud_gflops"] <= budget * slow["ticks"] + slow["largest_cloud_step_gflops"]
    assert slow["fleet_cloud_gflops"] < free["fleet_cloud_gflops"] and slow["longest_queue"] > 0 == free["longest_queue"]
    assert slow["cloud_gflops_per_tick_budget"] == budget


def test_the_schedulers_pick_jobs_in_their_order():
    picks = {}
    for scheduler in ("round-robin", "fifo", "lowest-entropy-first"):
        queue = CloudQueue(2, scheduler)
        for edge, tick, entropy in ((0, 0, 0.9), (0, 1, 0.8), (1, 1, 0.5), (2, 1, 0.1)):
            queue.add(edge, torch.zeros(1), tick, entropy)
        picks[scheduler] = [(j.edge, j.tick) for j in queue.pick()]
        assert len(queue.jobs) == 2
    assert picks == {"round-robin": [(0, 0), (1, 1)], "fifo": [(0, 0), (0, 1)], "lowest-entropy-first": [(2, 1), (1, 1)]}


def test_pooled_batching_differs_from_per_edge_batching_on_a_mixed_fleet():
    run = config(("tent",), corruptions=("gaussian_noise", "contrast", "fog"))
    pooled = run_fleet(run, FleetConfig(edges=rotated_edges(3), cloud_batching="pooled", student="shared", independent=False))
    per_edge = run_fleet(run, FleetConfig(edges=rotated_edges(3), student="shared", independent=False))
    assert per_edge_accuracy(pooled.rows, "tent") != per_edge_accuracy(per_edge.rows, "tent")


def test_a_fleet_is_deterministic_and_reports_the_collaboration_gain():
    run = config(("cema", "bn"))
    fleet = FleetConfig(edges=rotated_edges(2))
    first, second = run_fleet(run, fleet), run_fleet(run, fleet)
    assert [without_timing(r) for r in first.rows] == [without_timing(r) for r in second.rows]
    cema, bn = first.summary
    assert cema["collaboration_gain"] == pytest.approx(cema["mean_accuracy"] - cema["independent_mean_accuracy"])
    assert bn["collaboration_gain"] == 0.0  # edge-placed: every edge runs alone anyway
    alone = [r for r in first.independent if r["method"] == "cema"]
    assert sorted({r["edge"] for r in alone}) == [0, 1] and len(alone) == 4


def test_cloud_methods_with_their_own_packets_run_as_independent_edges():
    run = config(("rotta",), samples=64)
    fleet = run_fleet(run, FleetConfig(edges=rotated_edges(2)))
    alone = by_key(run_benchmark(replace(run, corruptions=("contrast", "gaussian_noise"))))
    assert [without_timing(r) for r in by_key(fleet.rows) if r["edge"] == 1] == [without_timing(r) for r in alone]
    assert fleet.summary[0]["collaboration_gain"] == 0.0 and fleet.summary[0]["cloud_steps"] == 0


def test_rotated_edges_start_at_successive_corruptions():
    rows = run_fleet(config(("bn",), corruptions=("gaussian_noise", "contrast", "fog")), FleetConfig(edges=rotated_edges(3))).rows
    first = {r["edge"]: r["corruption"] for r in rows if r["segment"] == 0}
    assert first == {0: "gaussian_noise", 1: "contrast", 2: "fog"}


# --- the CLI and the TOML table ------------------------------------------------------------------

def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_compare_with_edges_writes_the_fleet_files(tmp_path):
    out = tmp_path / "run"
    result = invoke("compare", "--methods", "cema,bn", "--edges", "2", "--corruption", "gaussian_noise,contrast", "--samples", "64",
                    "--device", "cpu", "--threads", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert sorted(rows["edge"].unique()) == [0, 1] and set(rows["protocol"]) == {"continual"}
    summary = pd.read_csv(out / "fleet.csv")
    assert list(summary["method"]) == ["cema", "bn"] and "collaboration_gain" in summary.columns
    assert sorted(pd.read_csv(out / "independent.csv")["edge"].unique()) == [0, 1]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and len(meta["fleet"]["edges"]) == 2 and meta["fleet"]["summary"][0]["method"] == "cema"
    assert "fleet accuracy %" in result.output and "fleet cost" in result.output


def write_toml(tmp: Path, text: str) -> str:
    path = tmp / "fleet.toml"
    path.write_text(text)
    return str(path)


def test_a_toml_fleet_gives_each_edge_its_stream_and_link(tmp_path):
    toml = write_toml(tmp_path, """
samples = 64
[fleet]
cloud_capacity = 2
independent = false
[[fleet.edges]]
corruptions = ["gaussian_noise"]
[[fleet.edges]]
corruptions = ["contrast", "fog"]
protocol = "correlated"
severities = [3]
channel = { uplink_budget_bytes = "8kB", downlink_delay_batches = 1 }
""")
    out = tmp_path / "run"
    result = invoke("bench", "-m", "tent", "--config", toml, "--device", "cpu", "--threads", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    edge0, edge1 = rows[rows["edge"] == 0], rows[rows["edge"] == 1]
    assert list(edge0["corruption"]) == ["gaussian_noise"] and list(edge1["corruption"]) == ["contrast", "fog"]
    assert set(edge1["uplink_budget_bytes"]) == {8000} and set(edge1["protocol"]) == {"correlated"} and set(edge1["severity"]) == {3}
    assert edge1["uplink_bytes"].max() <= 8000 * 2 and edge0["uplink_bytes"].sum() > edge1["uplink_bytes"].sum()
    assert not (out / "independent.csv").exists()
    assert pd.read_csv(out / "fleet.csv")["cloud_capacity"].tolist() == [2]


# --- bad input: exit 2, one line, no folder ------------------------------------------------------

def five_class_checkpoint(tmp: Path) -> str:
    from cema_cli.models import ModelOptions, load_model

    state = load_model("mnist-edge", None, ModelOptions(num_classes=10)).state_dict()
    state["net.fc.weight"], state["net.fc.bias"] = state["net.fc.weight"][:5].clone(), state["net.fc.bias"][:5].clone()
    torch.save(state, tmp / "five.pt")
    return str(tmp / "five.pt")


FLEET = ("--samples", "64", "--device", "cpu", "--out", "{out}")
CASES = [
    ("fleet-unknown-key", lambda t: ["bench", "--config", write_toml(t, "[fleet]\nedges = 2\nspeed = 3\n"), *FLEET],
     "unknown [fleet] key(s) speed"),
    ("edge-unknown-key", lambda t: ["bench", "--config", write_toml(t, "[[fleet.edges]]\ncolour = 'red'\n"), *FLEET],
     "unknown [[fleet.edges]] #1 key(s) colour"),
    ("edge-unknown-link-key", lambda t: ["bench", "--config", write_toml(t, "[[fleet.edges]]\nchannel = { speed = 1 }\n"), *FLEET],
     "unknown [[fleet.edges]] #1 channel key(s) speed"),
    ("capacity-0", lambda t: ["bench", "--edges", "2", "--cloud-capacity", "0", *FLEET], "--cloud-capacity 0 must be a whole number"),
    ("capacity-negative", lambda t: ["bench", "--edges", "2", "--cloud-capacity", "-3", *FLEET], "--cloud-capacity -3 must be"),
    ("gflops-budget-0", lambda t: ["bench", "--edges", "2", "--cloud-gflops-per-tick", "0", *FLEET],
     "--cloud-gflops-per-tick 0.0 must be a positive, finite number"),
    ("capacity-0-in-toml", lambda t: ["bench", "--config", write_toml(t, "[fleet]\nedges = 2\ncloud_capacity = 0\n"), *FLEET],
     "--cloud-capacity 0 must be"),
    ("edge-model-classes", lambda t: ["bench", "--config", write_toml(
        t, f"[[fleet.edges]]\n[[fleet.edges]]\nedge_checkpoint = '{five_class_checkpoint(t)}'\n"), *FLEET], "edge 1: checkpoint"),
    ("scheduler-typo", lambda t: ["bench", "--edges", "2", "--scheduler", "lifo", *FLEET], "unknown scheduler 'lifo'"),
    ("batching-typo", lambda t: ["bench", "--edges", "2", "--cloud-batching", "mixed", *FLEET], "unknown cloud batching 'mixed'"),
    ("pooled-per-edge-student", lambda t: ["bench", "--edges", "2", "--cloud-batching", "pooled", "--student", "per-edge", *FLEET],
     "use --student shared"),
    ("dirichlet-0", lambda t: ["bench", "--config", write_toml(
        t, "[[fleet.edges]]\n[[fleet.edges]]\nprotocol = 'correlated'\ndirichlet = 0.0\n"), *FLEET], "edge 1: --dirichlet 0.0"),
    ("edges-0", lambda t: ["bench", "--edges", "0", *FLEET], "--edges 0 must be 1 or more"),
    ("fleet-flag-without-fleet", lambda t: ["bench", "--scheduler", "fifo", *FLEET], "configure a fleet; add --edges N"),
    ("fleet-with-seeds", lambda t: ["bench", "--edges", "2", "--seeds", "2", *FLEET], "--seeds and --executor run single-edge cells"),
    ("fleet-in-a-sweep", lambda t: ["sweep", "--methods", "bn", "--edges", "2", *FLEET], "cema sweep runs single-edge cells"),
    ("student-shared-for-cotta", lambda t: ["bench", "-m", "cotta", "--edges", "2", "--student", "shared", *FLEET],
     "apply to cema, tent, eta and eata"),
]


@pytest.mark.parametrize(("make", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_fleet_input_is_one_line_exit_2_and_leaves_no_folder(tmp_path, make, expected):
    args = [arg.replace("{out}", str(tmp_path / "out")) for arg in make(tmp_path)]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
