"""Cost columns (issue 12, section 3): counted cloud GFLOPs and raw images exposed, measured
cloud seconds, modelled upload time, staleness in seconds, cost, and the parameter delay driven
by cloud throughput. Formulas are checked by hand; no timing is asserted beyond "positive"."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from cema_cli.run.api import run_benchmark
from cema_cli.link.channel import Channel, ComputeDelay
from cema_cli.cli import app
from cema_cli.config import ChannelConfig, CostModel, RunConfig, parse_bit_rate
from cema_cli.link.costs import modelled_columns
from cema_cli.models import load_model
from cema_cli.models.flops import pass_gflops_per_sample
from cema_cli.strategies.tent import tent_model

TINY = dict(samples=64, device="cpu", corruptions=("gaussian_noise",))
ASSUMED = CostModel(rtt_ms=50, uplink_rate_bps=1e7, downlink_rate_bps=5e7, cloud_price_per_hour=2.5)


@pytest.fixture(scope="module")
def rows():
    """bn (edge only), tent and cema (cloud) on the embedded default, with and without assumptions."""
    runs = {}
    for name, costs in (("assumed", ASSUMED), ("plain", CostModel())):
        runs[name] = {r["method"]: r for r in run_benchmark(RunConfig(methods=("bn", "tent", "cema"), costs=costs, **TINY))}
    return runs


# --- counted and measured ----------------------------------------------------------------------

def test_an_edge_placed_method_costs_the_cloud_nothing(rows):
    bn = rows["assumed"]["bn"]
    assert bn["cloud_gflops"] == bn["cloud_backward_gflops"] == bn["cloud_seconds"] == 0
    assert bn["cloud_exposed_images"] == 0 and bn["cloud_exposed_share"] == 0
    assert bn["cloud_cost"] == 0 and bn["param_delay_seconds"] == 0 and bn["upload_seconds"] == 0


def test_cloud_gflops_are_the_work_counts_times_the_counted_per_sample_passes(rows):
    """Tent's cloud runs a copy of the edge model with only BN affine parameters training."""
    tent = rows["assumed"]["tent"]
    cloud_copy, _ = tent_model(copy.deepcopy(load_model("mnist-edge")))
    passes = pass_gflops_per_sample(cloud_copy, (3, 32, 32), torch.uint8)
    assert tent["cloud_forward_samples"] == tent["cloud_backward_samples"] == 64
    assert tent["cloud_gflops"] == pytest.approx(64 * (passes.forward + passes.backward))
    assert tent["cloud_backward_gflops"] == pytest.approx(64 * passes.backward)
    assert tent["cloud_seconds"] > 0  # measured: only its sign is hardware-independent


def test_cema_counts_its_foundation_and_its_student(rows):
    cema = rows["assumed"]["cema"]
    assert cema["cloud_forward_samples"] > cema["cloud_backward_samples"] > 0  # the teacher pass has no backward
    assert 0 < cema["cloud_backward_gflops"] < cema["cloud_gflops"]
    # every forward is at least a student (edge-sized) pass, and at most a foundation pass
    low, high = cema["edge_gflops_per_sample"], cema["cloud_gflops_per_sample"]
    forward = cema["cloud_gflops"] - cema["cloud_backward_gflops"]
    assert cema["cloud_forward_samples"] * low < forward < cema["cloud_forward_samples"] * high


def test_raw_images_exposed_are_the_uploads_that_crossed(rows):
    for method in ("tent", "cema"):
        row = rows["assumed"][method]
        assert row["cloud_exposed_images"] == row["delivered_uploads"] > 0
        assert row["cloud_exposed_share"] == pytest.approx(row["delivered_uploads"] / row["samples"])


def test_the_backward_pass_is_counted_not_assumed():
    """All parameters training: about twice the forward (input and weight gradients; the first
    layer has no input gradient). Only norm parameters training: no weight gradients of the
    convolutions, so less than the forward."""
    model = load_model("mnist-edge").requires_grad_(True)
    full = pass_gflops_per_sample(model, (3, 32, 32), torch.uint8)
    assert 1.5 * full.forward < full.backward < 2 * full.forward
    norm_only, _ = tent_model(copy.deepcopy(model))
    assert 0 < pass_gflops_per_sample(norm_only, (3, 32, 32), torch.uint8).backward < full.forward
    assert pass_gflops_per_sample(model.requires_grad_(False), (3, 32, 32), torch.uint8).backward == 0


# --- the rows without the new flags --------------------------------------------------------------

def test_without_assumptions_the_modelled_columns_stay_empty_and_the_rest_is_unchanged(rows):
    for method in ("bn", "tent", "cema"):
        plain, assumed = rows["plain"][method], rows["assumed"][method]
        assert plain["upload_seconds"] is None and plain["param_delay_seconds"] is None and plain["cloud_cost"] is None
        assert json.loads(plain["cost_model"]) == {k: None for k in json.loads(assumed["cost_model"])}
        for column in ("accuracy", "uploads", "uplink_bytes", "downlink_bytes", "param_delay_batches", "cloud_gflops", "channel"):
            assert plain[column] == assumed[column], column


# --- modelled: formulas by hand ----------------------------------------------------------------

def traffic(**changes):
    base = {"uplink_bytes": 4 * 196_608, "downlink_bytes": 4 * 1_000, "sync_events": 4, "cloud_gflops": 20.0, "cloud_seconds": 0.4}
    return {**base, **changes}


def test_upload_time_is_half_the_rtt_plus_the_bytes_over_the_rate():
    columns = modelled_columns(CostModel(rtt_ms=50, uplink_rate_bps=1e7), traffic(), batches=4)
    assert columns["upload_seconds"] == pytest.approx(0.025 + 8 * 196_608 / 1e7)  # 0.1822864 s
    assert modelled_columns(CostModel(rtt_ms=50), traffic(), batches=4)["upload_seconds"] == pytest.approx(0.025)
    assert modelled_columns(CostModel(rtt_ms=50), traffic(uplink_bytes=0), batches=4)["upload_seconds"] == 0


def test_staleness_in_seconds_is_the_round_trip_of_an_update():
    columns = modelled_columns(ASSUMED, traffic(), batches=4)
    up = 0.025 + 8 * 196_608 / 1e7
    compute = 0.4 / 4  # measured cloud seconds per batch
    down = 0.025 + 8 * 1_000 / 5e7
    assert columns["param_delay_seconds"] == pytest.approx(up + compute + down)
    assert columns["cloud_time_basis"] == "measured"
    modelled = modelled_columns(CostModel(cloud_throughput_gflops=100, batch_interval_s=1), traffic(), batches=4)
    assert modelled["param_delay_seconds"] == pytest.approx(20.0 / 100 / 4)  # no network assumed: compute only
    assert modelled["cloud_time_basis"] == "throughput"


def test_cloud_cost_is_the_price_times_the_cloud_hours():
    assert modelled_columns(CostModel(cloud_price_per_hour=2.5), traffic(), 4)["cloud_cost"] == pytest.approx(2.5 * 0.4 / 3600)
    both = CostModel(cloud_price_per_hour=2.5, cloud_throughput_gflops=100, batch_interval_s=1)
    assert modelled_columns(both, traffic(), 4)["cloud_cost"] == pytest.approx(2.5 * (20.0 / 100) / 3600)


def test_link_rates_read_as_bits_per_second():
    assert parse_bit_rate("10Mbit", "--uplink-rate") == parse_bit_rate("10Mbit/s", "-") == parse_bit_rate("10mbps", "-") == 1e7
    assert parse_bit_rate("500kbit/s", "-") == 5e5 and parse_bit_rate("2e6", "-") == 2e6


# --- the parameter delay from cloud compute ------------------------------------------------------

class Counter:
    """Cloud GFLOPs counted so far, as the CloudMeter would report them."""

    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self) -> float:
        return self.total


def test_the_cloud_throughput_sets_each_updates_delay_in_batches():
    """T = 1 s, 10 GFLOP/s, one FIFO worker: 5 GFLOP at tick 0 is done at 0.5 s (delay 0);
    25 GFLOP at tick 1 at 3.5 s (latency 2.5 s: delay 2); 5 GFLOP at tick 2 waits for the
    worker until 3.5 s and is done at 4.0 s (latency 2.0 s: delay 1)."""
    counter = Counter()
    costs = CostModel(cloud_throughput_gflops=10, batch_interval_s=1)
    channel = Channel(ChannelConfig(), lambda uplink: ComputeDelay(costs, counter, uplink))
    arrivals = {}
    for tick, work in enumerate([5.0, 25.0, 5.0, 0.0, 0.0, 0.0]):
        counter.total += work
        if work:
            channel.downlink.send([tick], [0])
        for packet in channel.downlink.receive():
            arrivals[packet.payload] = tick
        channel.tick()
    assert arrivals == {0: 0, 1: 3, 2: 3}  # due ticks: sent tick + delay (0, 2, 1)


def test_the_network_adds_to_the_compute_delay():
    """rtt 400 ms and 1 s of compute: the round trip 1.4 s exceeds one interval of 1 s: delay 1."""
    counter = Counter()
    costs = CostModel(cloud_throughput_gflops=10, batch_interval_s=1, rtt_ms=400)
    channel = Channel(ChannelConfig(), lambda uplink: ComputeDelay(costs, counter, uplink))
    channel.uplink.send(["image"], [100])
    counter.total = 10.0
    channel.downlink.send(["params"], [100])
    assert channel.downlink.in_flight[0][0] == 1


def test_a_fast_cloud_changes_nothing_and_a_slow_one_makes_parameters_stale():
    base = dict(TINY, methods=("tent",), samples=256)
    plain = run_benchmark(RunConfig(**base))[0]
    fast = run_benchmark(RunConfig(**base, costs=CostModel(cloud_throughput_gflops=1e6, batch_interval_s=1)))[0]
    slow = run_benchmark(RunConfig(**base, costs=CostModel(cloud_throughput_gflops=1, batch_interval_s=1)))[0]
    assert (fast["accuracy"], fast["param_delay_batches"]) == (plain["accuracy"], plain["param_delay_batches"]) == (fast["accuracy"], 0)
    # 3.1 GFLOP per batch at 1 GFLOP/s and one batch a second: the queue grows, so do the delays
    assert slow["param_delay_batches"] >= 1 and slow["cloud_time_basis"] == "throughput"


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["--uplink-rate", "-1Mbit"], "--uplink-rate '-1Mbit' is not a link rate above 0"),
    (["--downlink-rate", "fast"], "--downlink-rate 'fast' is not a link rate"),
    (["--uplink-rate", "10MB"], "in bits per second"),
    (["--rtt", "-5"], "--rtt -5 must be a finite number 0 or more"),
    (["--cloud-price", "-1"], "--cloud-price -1 must be a finite number 0 or more"),
    (["--cloud-throughput", "-3", "--batch-interval", "1"], "--cloud-throughput -3 must be a finite number above 0"),
    (["--batch-interval", "0"], "--batch-interval 0 must be a finite number above 0"),
    (["--cloud-throughput", "100"], "add --batch-interval"),
    (["--cloud-throughput", "100", "--batch-interval", "1", "--downlink-delay", "2"], "drop --downlink-delay 2"),
])
def test_bad_cost_input_is_one_line_exit_2_and_leaves_no_folder(tmp_path, args, expected):
    result = CliRunner().invoke(app, ["bench", "--samples", "64", *args, "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_compare_prints_the_cost_table(tmp_path):
    result = CliRunner().invoke(app, ["compare", "--methods", "bn,tent", "--samples", "64", "--rtt", "50", "--uplink-rate", "10Mbit",
                                      "--cloud-price", "2.5", "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "cost per method" in result.output and "stale s" in result.output
    saved = json.loads((tmp_path / "out" / "run.json").read_text())
    assert saved["config"]["costs"]["uplink_rate_bps"] == 1e7 and saved["config"]["costs"]["rtt_ms"] == 50  # the assumptions are recorded


# --- the measured seconds' CUDA path, without a GPU ------------------------------------------------

class FakeEvent:
    """torch.cuda.Event's timing interface on the host clock (milliseconds, as CUDA reports)."""

    made: list["FakeEvent"] = []

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at, self.synced = None, False
        FakeEvent.made.append(self)

    def record(self, stream=None) -> None:
        import time

        self.at = time.perf_counter()

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, end: "FakeEvent") -> float:
        assert end.synced, "read only after the end event completed"
        return 1000.0 * (end.at - self.at)


def test_on_cuda_the_meter_times_with_events_read_once_and_leaves_counting_out(monkeypatch):
    from cema_cli.link.cloud_meter import _PER_SAMPLE, CloudMeter

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    FakeEvent.made.clear()
    _PER_SAMPLE.clear()  # the first call counts the model: a pause, two segments
    meter, model = CloudMeter("cuda"), load_model("mnist-edge")
    with meter, torch.no_grad():
        model(torch.zeros((4, 3, 32, 32), dtype=torch.uint8))
    assert len(FakeEvent.made) == 4 and len(meter._segments) == 2  # recorded, not yet read
    first, second = meter._segments
    expected = (first[1].at - first[0].at) + (second[1].at - second[0].at)
    assert meter.seconds == pytest.approx(expected) and not meter._segments
    assert second[0].at - first[1].at > 0  # the counting between the segments is not cloud time
    assert meter.forward_gflops == pytest.approx(4 * pass_gflops_per_sample(model, (3, 32, 32), torch.uint8).forward)
    assert meter.backward_gflops == 0  # no gradient, no backward


def test_cema_check_reruns_with_the_baselines_cost_assumptions(tmp_path):
    """--cloud-throughput changes the delay, so the accuracy: a re-run must use it again."""
    import pandas as pd

    from cema_cli.results.saved import config_from_results

    out = tmp_path / "run"
    args = ["bench", "-m", "tent", "--samples", "64", "--cloud-throughput", "5", "--batch-interval", "0.5", "--out", str(out)]
    assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    config = config_from_results(pd.read_csv(out / "results.csv"))
    assert config.costs == CostModel(cloud_throughput_gflops=5, batch_interval_s=0.5)
    result = CliRunner().invoke(app, ["check", "--baseline", str(out / "results.csv"), "--device", "cpu", "--out", str(tmp_path / "again")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_a_mixed_streams_rows_model_whole_batches():
    """Each domain's row holds its share of the bytes and of the batches: the time of a batch's
    uploads is that of a whole batch of 64 images of 3,072 bytes, on every row."""
    config = RunConfig(methods=("tent",), samples=128, protocol="mixed", corruptions=("gaussian_noise", "contrast"), device="cpu",
                       costs=CostModel(rtt_ms=50, uplink_rate_bps=1e7))
    rows = run_benchmark(config)
    assert len(rows) == 2 and sum(r["uplink_bytes"] for r in rows) == 128 * 3072
    for row in rows:
        assert row["upload_seconds"] == pytest.approx(0.025 + 8 * 64 * 3072 / 1e7)
