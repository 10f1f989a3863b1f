"""Test streams (shared/spec/streams.md): the spec's test vectors (section 10), its properties,
and how the protocols reach every method's rows."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cema_cli.run.api import TrafficShares, run_benchmark
from cema_cli.link.channel import Channel
from cema_cli.config import ChannelConfig, RunConfig
from cema_cli.data.base import tensor_batches
from cema_cli.data.streams import (
    MixedStream, class_sorted, domain_order, gradual_schedule, mixed_order, plan_stream, rotta_order, sort_by_dirichlet,
)
from cema_cli.run.engine import SlidingWindow, Tally, run_stream
from cema_cli.errors import CemaError
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import Strategy

STANDARD = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow",
            "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
TEN_K = [i % 10 for i in range(10_000)]  # section 10: N = 10,000 items labelled i mod 10


def runs(labels):
    return [(k, len(list(group))) for k, group in itertools.groupby(labels)]


def distinct_per_batch(labels, batch=64):
    return np.mean([len(set(labels[i : i + batch])) for i in range(0, len(labels), batch)])


def md_dirichlet(delta, seed=1):
    """Section 10's setup: Python shuffle with random.seed(seed), then NumPy seeded alike."""
    order = domain_order(10_000, seed, "md")
    return sort_by_dirichlet(order, [TEN_K[i] for i in order], delta, np.random.RandomState(seed))


# --- section 10: test vectors -----------------------------------------------------------------

def test_md_order_is_pythons_seeded_shuffle():
    assert domain_order(10, 1, "md") == [6, 8, 9, 7, 5, 3, 0, 4, 1, 2]


def test_md_dirichlet_reproduces_the_published_vector():
    stream = md_dirichlet(0.1)
    assert stream[:8] == [164, 3624, 3274, 8624, 2084, 7754, 5424, 4644]
    found = runs([TEN_K[i] for i in stream])
    assert found[:5] == [(4, 958), (2, 149), (1, 68), (8, 790), (5, 25)]
    assert len(found) == 47


def test_rotta_sampler_reproduces_the_published_vector():
    stream = rotta_order(TEN_K, 0.1, np.random.RandomState(1))
    assert stream[:12] == list(range(0, 120, 10))
    found = runs([TEN_K[i] for i in stream])
    assert found[:5] == [(0, 272), (8, 168), (2, 886), (1, 83), (4, 130)]
    assert len(found) == 56


# --- section 10: properties -------------------------------------------------------------------

@pytest.mark.parametrize(("delta", "low", "high"), [(1, 1.55, 1.58), (0.1, 1.26, 1.29), (0.01, 1.10, 1.13)])
def test_distinct_classes_per_batch_match_the_spec_table(delta, low, high):
    stream = md_dirichlet(delta)
    assert sorted(stream) == list(range(10_000))
    assert low - 0.005 <= distinct_per_batch([TEN_K[i] for i in stream]) <= high + 0.005


def test_no_delta_is_the_stable_class_sort():
    order = domain_order(100, 2, "md")
    labels = [TEN_K[i] for i in order]
    stream = class_sorted(order, labels)
    assert [TEN_K[i] for i in stream] == sorted(labels)
    assert [i for i in stream if TEN_K[i] == 3] == [i for i in order if TEN_K[i] == 3]  # stable


def test_mixed_stream_interleaves_every_domain_in_every_window_of_1000():
    pairs = mixed_order([5000] * 15, 0, "md")
    assert sorted(pairs) == [(d, i) for d in range(15) for i in range(5000)]
    tags = np.array([d for d, _ in pairs])
    assert all(len(set(tags[s : s + 1000])) == 15 for s in range(0, len(tags) - 999, 250))


def test_samples_cap_the_mixed_total_not_each_domain():
    pairs = mixed_order([100, 100, 100], 4, "cema", samples=90)
    assert len(pairs) == 90 and len(set(pairs)) == 90
    assert len({d for d, _ in pairs}) == 3


def test_gradual_has_131_segments_for_cotta_and_135_for_md():
    cotta, md = gradual_schedule(STANDARD, "cotta"), gradual_schedule(STANDARD, "md")
    assert (len(cotta), len(md)) == (131, 135)
    assert [s for _, s in cotta[:6]] == [5, 4, 3, 2, 1, 1]
    assert [s for _, s in md[:9]] == [1, 2, 3, 4, 5, 4, 3, 2, 1]


# --- plans over a dataset ---------------------------------------------------------------------

class ToyDomains:
    """Three-class labels, the same in every domain (as every corruption of one test set)."""

    def __init__(self, n=60):
        self.labels = torch.arange(n) % 3

    def domain_size(self, corruption, severity):
        return len(self.labels)

    def domain_labels(self, corruption, severity):
        return self.labels

    def stream(self, corruption, severity, seed, samples, batch_size, order=None):
        images = torch.full((len(self.labels), 3, 2, 2), STANDARD.index(corruption), dtype=torch.uint8)
        images[:, 1] = torch.arange(len(self.labels)).view(-1, 1, 1).to(torch.uint8)  # the item's position
        return tensor_batches(images, self.labels, torch.as_tensor(order, dtype=torch.long), batch_size)


def toy_config(**changes):
    return replace(RunConfig(corruptions=STANDARD[:3], seed=5), **changes)


@pytest.mark.parametrize("protocol", ["reset-each-shift", "continual", "correlated", "gradual", "mixed", "mixed-correlated"])
def test_every_protocol_plays_a_permutation_of_its_items_and_only_resets_where_it_should(protocol):
    legs = plan_stream(toy_config(protocol=protocol), ToyDomains())
    for leg in legs:
        expected = [(d, i) for d in range(len(leg.domains)) for i in range(60)] if leg.mixed else list(range(60))
        assert sorted(leg.order) == expected
    resets = len(legs) if protocol == "reset-each-shift" else 1
    assert [leg.reset for leg in legs] == [True] * resets + [False] * (len(legs) - resets)
    assert plan_stream(toy_config(protocol=protocol), ToyDomains()) == legs  # fixed by the seed


def test_md_order_repeats_the_class_sequence_in_every_domain():
    legs = plan_stream(toy_config(protocol="continual", order="md"), ToyDomains())
    assert legs[0].order == legs[1].order == legs[2].order


def test_correlated_streams_are_class_sorted_or_dirichlet_per_domain():
    dataset = ToyDomains()
    sorted_legs = plan_stream(toy_config(protocol="correlated"), dataset)
    assert all(runs(dataset.labels[leg.order].tolist()) == [(0, 20), (1, 20), (2, 20)] for leg in sorted_legs)
    rotta = plan_stream(toy_config(protocol="correlated", label_sampler="rotta", dirichlet=0.1), dataset)
    assert rotta[0].order != rotta[1].order  # one NumPy state runs through the domains (section 3.3)


def test_cotta_gradual_plays_file_order():
    legs = plan_stream(toy_config(protocol="gradual", gradual="cotta", samples=10), ToyDomains())
    assert len(legs) == 5 + 2 * 9 and all(leg.order == list(range(10)) for leg in legs)


def test_a_mixed_stream_of_one_domain_is_still_tagged():
    leg = plan_stream(replace(toy_config(protocol="mixed"), corruptions=STANDARD[:1]), ToyDomains())[0]
    assert leg.mixed and sorted(leg.order) == [(0, i) for i in range(60)]
    assert torch.cat([b[2] for b in MixedStream(ToyDomains(), leg, 5, 16)]).tolist() == [0] * 60


def test_mixed_stream_batches_carry_each_samples_domain_and_item():
    leg = plan_stream(toy_config(protocol="mixed"), ToyDomains())[0]
    batches = list(MixedStream(ToyDomains(), leg, 5, 16))
    images = torch.cat([b[0] for b in batches])
    tags = torch.cat([b[2] for b in batches])
    assert [(int(img[0, 0, 0]), int(img[1, 0, 0])) for img in images] == leg.order
    assert tags.tolist() == [d for d, _ in leg.order]


# --- batch size 1 -----------------------------------------------------------------------------

class Calls(Strategy):
    """Logits = the sample's own value (one-hot), so the scored row is visible; logs each call."""

    def __init__(self):
        self.calls = []

    def predict(self, images):
        self.calls.append(("predict", images[:, 0, 0, 0].tolist()))
        return torch.nn.functional.one_hot(images[:, 0, 0, 0].long(), 10).float()

    def step(self, images):
        logits = self.predict(images)
        self.calls[-1] = ("step", self.calls[-1][1])
        return logits


def test_sliding_window_adapts_once_every_l_samples_on_the_whole_ring():
    images = torch.arange(7, dtype=torch.uint8).view(7, 1, 1, 1).expand(7, 3, 1, 1).contiguous()
    strategy = Calls()
    tally = run_stream(strategy, tensor_batches(images, torch.arange(7), torch.arange(7), 1), Channel(ChannelConfig()),
                       torch.device("cpu"), window=SlidingWindow(3))
    assert strategy.calls == [("predict", [0]), ("predict", [0, 1]), ("step", [0, 1, 2]), ("predict", [3, 1, 2]),
                              ("predict", [3, 4, 2]), ("step", [3, 4, 5]), ("predict", [6, 4, 5])]
    assert tally.correct == 7  # each arrival scored on its own row


def test_batch_size_1_with_a_bn_model_needs_the_window():
    config = RunConfig(methods=("bn",), corruptions=("none",), batch_size=1, samples=4, device="cpu")
    with pytest.raises(CemaError, match="--window"):
        run_benchmark(config)
    rows = run_benchmark(replace(config, methods=("source",)))
    assert rows[0]["samples"] == 4 and rows[0]["batch_size"] == 1
    windowed = run_benchmark(replace(config, window=2, samples=6))
    assert windowed[0]["samples"] == 6 and windowed[0]["window"] == 2


# --- the run: rows, and the same stream for every method --------------------------------------

class Seen(Strategy):
    """Source predictions; records a fingerprint of every batch it is given."""

    log: dict[str, list] = {}

    def __init__(self, context, config):
        super().__init__(context, config)
        self.model = context.edge_model.eval()
        self.mine = Seen.log.setdefault(type(self).__name__, [])

    @torch.inference_mode()
    def predict(self, images):
        self.mine.append(images.float().sum(dim=(1, 2, 3)).tolist())
        return self.model(images)


class SeenA(Seen):
    pass


class SeenB(Seen):
    pass


@pytest.mark.parametrize("protocol", ["mixed", "correlated", "gradual"])
def test_every_method_sees_the_same_stream_and_rows_record_it(protocol, monkeypatch):
    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))  # registered for this test only
    STRATEGIES.register("seen-a", SeenA)
    STRATEGIES.register("seen-b", SeenB)
    Seen.log.clear()
    corruptions = ("none",) if protocol == "gradual" else ("brightness", "contrast")  # "none": 5 severities, no corrupting
    config = RunConfig(methods=("seen-a", "seen-b"), corruptions=corruptions,
                       samples=96, batch_size=32, device="cpu", protocol=protocol, order="md")
    rows = pd.DataFrame(run_benchmark(config))
    assert Seen.log["SeenA"] == Seen.log["SeenB"] and Seen.log["SeenA"]
    assert set(rows["protocol"]) == {protocol} and set(rows["order"]) == {"md"}
    legs = {"mixed": 1, "correlated": 2, "gradual": 9}[protocol]
    assert rows.groupby("method")["samples"].sum().tolist() == [96 * legs] * 2
    if protocol == "mixed":  # one row per source domain, their counts summing to the capped total
        assert sorted(rows["corruption"].unique()) == ["brightness", "contrast"]
    if protocol == "gradual":
        assert rows[rows.method == "seen-a"]["segment"].tolist() == list(range(9))
        assert rows[rows.method == "seen-a"]["severity"].tolist() == [1, 2, 3, 4, 5, 4, 3, 2, 1]


def test_mixed_traffic_is_shared_out_by_samples_and_sums_to_the_legs():
    shares = TrafficShares(dict.fromkeys(("uploads", "uplink_bytes"), 0))
    tally = Tally(parts={0: Tally(seen=3), 1: Tally(seen=1)})
    shares.add(tally, {"uploads": 4, "uplink_bytes": 400})
    tally.parts[1].seen += 4
    shares.add(tally, {"uploads": 6, "uplink_bytes": 600})
    assert shares.parts[0] == {"uploads": 3.0, "uplink_bytes": 300.0}
    assert shares.parts[1] == {"uploads": 3.0, "uplink_bytes": 300.0}


@pytest.mark.parametrize(("args", "expected"), [
    (["--protocol", "correlated", "--dirichlet", "0"], "must be above 0"),
    (["--protocol", "correlated", "--dirichlet", "-1"], "must be above 0"),
    (["--dirichlet", "0.1"], "add --protocol correlated"),
    (["--protocol", "correlated", "--label-sampler", "rotta"], "--dirichlet GAMMA"),
    (["--protocol", "mixed", "--order", "random"], "unknown --order family 'random'"),
    (["--gradual", "cotta"], "--protocol gradual only"),
    (["--window", "4"], "--batch-size 1"),
    (["--batch-size", "0"], "at least 1"),
    (["--protocol", "gradual", "--severity", "3"], "drop --severity"),
])
def test_bad_stream_parameters_are_one_line_and_exit_2(cli, tmp_path, args, expected):
    result = cli("bench", "--method", "source", "--samples", "8", "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("protocol", "corruptions"), [("mixed", ("none", "brightness")), ("gradual", ("none",))])
def test_a_streams_rows_rebuild_the_same_run_for_cema_check(protocol, corruptions):
    from cema_cli.results.saved import compare_accuracy, config_from_results

    config = RunConfig(methods=("bn",), corruptions=corruptions, samples=40, batch_size=8, device="cpu", protocol=protocol, order="md")
    first = pd.DataFrame(run_benchmark(config))
    rebuilt = config_from_results(first, device="cpu").validate()
    assert (rebuilt.protocol, rebuilt.order, rebuilt.samples) == (protocol, "md", 40)
    again = pd.DataFrame(run_benchmark(rebuilt))
    assert set(compare_accuracy(first, again, 0)["status"]) == {"ok"}
    assert again["correct"].tolist() == first["correct"].tolist()
