"""The channel's invariants (hypothesis) and its byte counts, checked by hand."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cema_cli.link.channel import WIRE_FORM, Channel, Link, encode_uplink, state_nbytes
from cema_cli.config import ChannelConfig, parse_bytes
from cema_cli.errors import CemaError
from cema_cli.models.nets import SmallResNet
from cema_cli.models.norm import count_norm_values, norm_state

ticks = st.lists(st.lists(st.integers(1, 500), max_size=8), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    traffic=ticks,
    budget=st.one_of(st.none(), st.integers(0, 1500)),
    delay=st.integers(0, 3),
    overflow=st.sampled_from(["drop", "queue"]),
    capacity=st.integers(0, 6),
)
def test_link_invariants(traffic, budget, delay, overflow, capacity):
    link = Link(budget, delay, overflow, capacity)
    received = []
    for tick, sizes in enumerate(traffic):
        link.send([(tick, i) for i in range(len(sizes))], sizes, [float(s) for s in sizes])
        for packet in link.receive():
            assert link.now >= packet.sent_tick + delay  # nothing arrives before its delay
            received.append(packet)
        in_flight = len(link.in_flight)
        # every packet sent is exactly one of: delivered, in flight, queued, dropped
        assert link.stats.sent == link.stats.delivered + in_flight + len(link.queue) + link.stats.dropped
        assert len(link.queue) <= capacity
        link.tick()
    if budget is not None:
        assert max(link.transmitted_bytes_per_tick) <= budget  # never more per tick than the budget
    assert link.stats.delivered == len(received)


@settings(max_examples=100, deadline=None)
@given(traffic=ticks)
def test_unlimited_link_without_delay_delivers_everything_at_once(traffic):
    link = Link(None, 0, "drop", 0)
    for sizes in traffic:
        link.send(list(range(len(sizes))), sizes)
        assert [p.payload for p in link.receive()] == list(range(len(sizes)))
        link.tick()
    assert link.stats.dropped == 0


def test_priority_decides_who_goes_first_under_a_budget():
    link = Link(budget_bytes=250, delay_ticks=0, overflow="queue", queue_capacity=10)
    link.send(["c", "a", "b"], [100, 100, 100], [3.0, 1.0, 2.0])
    assert [p.payload for p in link.receive()] == ["a", "b"]
    link.tick()
    assert [p.payload for p in link.receive()] == ["c"]  # queued, delivered next tick


def test_drop_policy_counts_the_lost_samples():
    link = Link(budget_bytes=150, delay_ticks=0, overflow="drop", queue_capacity=10)
    link.send(["a", "b", "c"], [100, 100, 100])
    assert [p.payload for p in link.receive()] == ["a"] and link.stats.dropped == 2


def test_delay_in_ticks():
    link = Link(None, 2, "drop", 0)
    link.send(["x"], [1])
    arrivals = []
    for _ in range(4):
        arrivals.append([p.payload for p in link.receive()])
        link.tick()
    assert arrivals == [[], [], ["x"], []]


def test_uplink_bytes_per_encoding_by_hand():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert encode_uplink(images, "uint8", 85)[1] == [192, 192]  # 3 * 8 * 8
    assert encode_uplink(images, "float32", 85)[1] == [768, 768]  # 4 bytes per value
    samples, sizes = encode_uplink(images, "jpeg", 85)
    decoded = torch.stack(list(samples))
    assert decoded.shape == images.shape and decoded.dtype == torch.uint8
    assert [len(getattr(sample, WIRE_FORM)) for sample in samples] == sizes  # a real link carries the JPEG files
    assert all(getattr(sample, WIRE_FORM) == "float32" for sample in encode_uplink(images, "float32", 85)[0])
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=85)
    assert sizes == [buffer.tell()] * 2


def test_downlink_bytes_of_a_known_model():
    model = SmallResNet((16, 32, 64), 1, 10)  # 336 BN channels: 672 affine + 672 moments
    assert count_norm_values(model) == (672, 672)
    state = norm_state(model)
    assert state_nbytes(state, "float32") == 4 * 1344
    assert state_nbytes(state, "float16") == 2 * 1344


def test_sync_and_parameter_delay_bookkeeping():
    channel = Channel(ChannelConfig(sync_period_batches=3))
    due = []
    for _ in range(6):
        due.append(channel.sync_due())
        channel.tick()
    assert due == [False, False, True, False, False, True]


@pytest.mark.parametrize(("text", "value"), [("512", 512), ("16kB", 16000), ("1MiB", 2**20), ("unlimited", None), ("1.5MB", 1_500_000)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_parse_bytes_rejects_garbage():
    with pytest.raises(CemaError, match="byte count"):
        parse_bytes("-3kB")


def test_link_rate_becomes_bytes_per_batch():
    from cema_cli.config import parse_rate

    # 8 Mbit/s = 1 MB/s; 64 images per batch at 32 images/s = 2 s per batch = 2 MB.
    assert parse_rate("8Mbit/s", frame_rate=32, batch_size=64) == 2_000_000
    assert parse_rate("16kB", frame_rate=None, batch_size=64) == 16_000
    with pytest.raises(CemaError, match="--frame-rate"):
        parse_rate("8Mbit/s", frame_rate=None, batch_size=64)
