"""Contracts every strategy keeps: score before update, traffic through the channel, syncs."""

from __future__ import annotations

import pytest
import torch

from cema_cli.config import ChannelConfig
from cema_cli.errors import CemaError
from cema_cli.models.norm import norm_state
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import make_config
from strategy_helpers import context, noisy_batches, strategy

ADAPTIVE = ["tent", "eta", "eata", "cema", "cema-official", "tent@edge", "eta@edge", "eata@edge"]


def build(spec: str, channel_config: ChannelConfig | None = None):
    method, _, placement = spec.partition("@")
    return strategy(method, channel_config, **({"placement": placement} if placement else {}))


@pytest.mark.parametrize("spec", ["source", "bn", *ADAPTIVE])
def test_scored_logits_come_from_the_parameters_before_the_update(spec):
    s = build(spec)
    (batch,) = noisy_batches(1, size=256)
    before = s.predict(batch)
    scored = s.step(batch)
    after = s.predict(batch)
    assert torch.equal(scored, before)
    if spec in ("source", "bn"):
        assert torch.equal(after, before)
    else:  # the step changed the edge's parameters, so scoring after it would differ
        assert not torch.allclose(after, before, atol=1e-7)


def test_tent_in_the_cloud_predicts_exactly_as_tent_on_the_edge():
    cloud, edge = build("tent"), build("tent@edge")
    for batch in noisy_batches(6):
        assert torch.equal(cloud.step(batch), edge.step(batch))
        cloud.channel.tick()
    assert cloud.channel.uplink.stats.sent == 6 * 64


def test_edge_only_placements_upload_nothing_and_cloud_ones_count_bytes():
    for spec, uploads in (("tent@edge", 0), ("bn", 0), ("tent", 128)):
        s = build(spec)
        for batch in noisy_batches(2):
            s.step(batch)
            s.context.channel.tick()
        stats = s.context.channel.uplink.stats
        assert stats.sent == uploads
        assert stats.transmitted_bytes == uploads * 3 * 32 * 32  # uint8 pixels


def test_cema_edge_receives_the_students_norm_state_after_each_cloud_step():
    s = build("cema")
    for batch in noisy_batches(3, size=128):
        s.step(batch)
        s.channel.tick()
    edge_state, student_state = norm_state(s.edge), norm_state(s.cloud.student)
    assert edge_state.keys() == student_state.keys()
    assert all(torch.equal(edge_state[k], student_state[k]) for k in edge_state)
    assert s.channel.downlink.stats.delivered >= 1


def test_sync_period_and_delay_make_the_edge_use_older_parameters():
    # cloud Tent learns on every batch (it uploads everything), so the schedule alone decides
    slow = build("tent", ChannelConfig(sync_period_batches=2))
    late = build("tent", ChannelConfig(downlink_delay_batches=1))
    for batch in noisy_batches(4, size=128):
        slow.step(batch), late.step(batch)
        slow.channel.tick(), late.channel.tick()
    assert slow.channel.downlink.stats.sent <= 2  # sends only at ticks 1 and 3
    assert late.channel.mean_param_delay_batches() == pytest.approx(1.0)
    assert build("tent").channel.mean_param_delay_batches() == 0.0


def test_eata_without_clean_data_refuses_and_suggests_eta():
    factory = STRATEGIES.get("eata")
    with pytest.raises(CemaError, match="use 'eta'"):
        factory(context(clean=False), make_config(factory, {}, "eata"))


def test_bad_placement_and_option_types_are_clear():
    with pytest.raises(CemaError, match="cannot take placement 'fog'"):
        build("tent@fog")
    with pytest.raises(CemaError, match="is not a float"):
        make_config(STRATEGIES.get("cema"), {"distill_lr": "fast"}, "cema")


def test_cema_uploads_a_fraction_and_logs_e_max():
    s = build("cema")
    for batch in noisy_batches(6):
        s.step(batch)
        s.channel.tick()
    sent = s.channel.uplink.stats.sent
    assert 0 < sent < 6 * 64
    assert s.batch_log()["e_max"] > 0


def run_logits(spec: str, channel_config: ChannelConfig | None, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    s = build(spec, channel_config)
    out = []
    for batch in batches:
        out.append(s.step(batch))
        s.context.channel.tick()
    return out


@pytest.mark.parametrize("spec", ["tent", "cema"])
def test_a_budget_that_never_binds_changes_nothing(spec):
    batches = noisy_batches(5)
    free = run_logits(spec, None, batches)
    ample = run_logits(spec, ChannelConfig(uplink_budget_bytes=10**9, downlink_budget_bytes=10**9), batches)
    assert all(torch.equal(a, b) for a, b in zip(free, ample))


def test_cema_is_deterministic_for_a_seed():
    batches = noisy_batches(5)
    first, second = run_logits("cema", None, batches), run_logits("cema", None, batches)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
