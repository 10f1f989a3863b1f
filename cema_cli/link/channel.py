"""The only bridge between edge and cloud: every byte in either direction crosses a Link.

A Link is pure accounting and scheduling, ticking once per edge batch:

- ``send`` hands packets to the link at the current tick; they are transmitted in priority
  order (lowest value first; ``by_priority=False``: in the order sent) while the tick's byte
  budget lasts. What does not fit is dropped or, with the ``queue`` policy, kept (bounded) and
  transmitted first at later ticks. Priority only decides *which* packets cross.
- A packet transmitted at tick t arrives at tick t + delay; ``receive`` returns the arrived ones
  in the order they were sent (the stream's order), whatever order they were transmitted in.
- Control packets (``send(..., control=True)``, e.g. the edge's moments sent up once) cross like
  any other and count in the bytes; ``control_stats`` counts them apart so that a row's uploads
  are samples only.
- Invariants (tested with hypothesis): bytes transmitted per tick <= budget; every sent packet
  is exactly one of delivered, in flight, queued or dropped; nothing arrives before its delay.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Sequence

from cema_cli.config import ChannelConfig, CostModel


@dataclass
class Packet:
    payload: Any
    nbytes: int
    priority: float
    sent_tick: int
    sequence: int = 0  # position in the order of sending; arrivals keep this order
    control: bool = False


@dataclass
class LinkStats:
    """Cumulative counters of one direction; ``delivered`` counts packets that arrived."""

    sent: int = 0
    sent_bytes: int = 0
    transmitted: int = 0
    transmitted_bytes: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    dropped: int = 0

    def minus(self, other: "LinkStats") -> "LinkStats":
        return LinkStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


class Link:
    """One direction of the channel: a per-tick byte budget, a delay in ticks, an overflow policy."""

    def __init__(self, budget_bytes: int | None, delay_ticks: int, overflow: str, queue_capacity: int,
                 by_priority: bool = True) -> None:
        self.budget_bytes = budget_bytes
        self.by_priority = by_priority
        self.delay_ticks = delay_ticks
        self.overflow = overflow
        self.queue_capacity = queue_capacity
        self.now = 0
        self.stats = LinkStats()
        self.control_stats = LinkStats()
        self._sequence = 0
        self.queue: list[Packet] = []
        self.in_flight: list[tuple[int, Packet]] = []
        self._left = budget_bytes
        self.transmitted_bytes_per_tick: list[int] = [0]
        self.delay_of: Callable[[Packet], int] | None = None  # a packet's own delay (ComputeDelay), else delay_ticks

    def send(self, payloads: Sequence[Any], nbytes: Sequence[int], priorities: Sequence[float] | None = None,
             control: bool | Sequence[bool] = False, sent_tick: int | None = None) -> None:
        """Hand packets to the link now; lower priority values are transmitted first. ``sent_tick``
        dates packets made before this tick (a real link's parameters: the tick they were learnt at)."""
        priorities = priorities if priorities is not None else [0.0] * len(payloads)
        controls = [control] * len(payloads) if isinstance(control, bool) else list(control)  # or one flag per packet
        made = self.now if sent_tick is None else sent_tick
        packets = [Packet(p, int(n), float(r), made, self._sequence + i, c)
                   for i, (p, n, r, c) in enumerate(zip(payloads, nbytes, priorities, controls))]
        self._sequence += len(packets)
        self._count(packets, "sent", "sent_bytes")
        self._transmit(sorted(packets, key=lambda p: p.priority) if self.by_priority else packets)

    def receive(self) -> list[Packet]:
        """Packets whose arrival tick has come, in the order they were sent."""
        arrived = sorted((p for due, p in self.in_flight if due <= self.now), key=lambda p: p.sequence)
        self.in_flight = [(due, p) for due, p in self.in_flight if due > self.now]
        self._count(arrived, "delivered", "delivered_bytes")
        return arrived

    def _count(self, packets: list[Packet], count: str, nbytes: str | None = None) -> None:
        """Add packets to a counter of ``stats``, and of ``control_stats`` for control packets."""
        for stats, chosen in ((self.stats, packets), (self.control_stats, [p for p in packets if p.control])):
            setattr(stats, count, getattr(stats, count) + len(chosen))
            if nbytes is not None:
                setattr(stats, nbytes, getattr(stats, nbytes) + sum(p.nbytes for p in chosen))

    def tick(self) -> None:
        """Advance one edge batch: a fresh budget, and queued packets go first."""
        self.now += 1
        self._left = self.budget_bytes
        self.transmitted_bytes_per_tick.append(0)
        queued, self.queue = self.queue, []
        self._transmit(queued)

    def _fits(self, packet: Packet) -> bool:
        return self._left is None or packet.nbytes <= self._left

    def _transmit(self, packets: list[Packet]) -> None:
        # Strict priority order: once one packet does not fit, later ones wait too.
        for i, packet in enumerate(packets):
            if not self._fits(packet):
                self._overflow(packets[i:])
                return
            if self._left is not None:
                self._left -= packet.nbytes
            delay = self.delay_ticks if self.delay_of is None else self.delay_of(packet)
            self.in_flight.append((self.now + delay, packet))
            self._count([packet], "transmitted", "transmitted_bytes")
            self.transmitted_bytes_per_tick[-1] += packet.nbytes

    def _overflow(self, rest: list[Packet]) -> None:
        room = self.queue_capacity - len(self.queue) if self.overflow == "queue" else 0
        self.queue.extend(rest[:room])
        self._count(rest[room:], "dropped")


def one_way_seconds(nbytes: float, rate_bps: float | None, rtt_ms: float | None) -> float:
    """Modelled time for ``nbytes`` to cross one direction of the link: half the round trip plus
    serialisation at the link rate (an absent assumption counts 0). Nothing sent takes no time."""
    if not nbytes:
        return 0.0
    return (rtt_ms or 0.0) / 2000.0 + (8.0 * nbytes / rate_bps if rate_bps else 0.0)


class ComputeDelay:
    """The parameter delay from compute, after the online protocol of Alfarra et al. (ICML 2024):
    an update is not ready until the cloud has computed it, so a slow cloud hands the edge older
    parameters. Instead of a fixed ``--downlink-delay``, each parameter packet's delay follows
    from the stream's clock (edge batch t arrives at t * T, T = ``batch_interval_s``):

    - the cloud is one worker serving ticks in order; tick t's work (its counted GFLOPs, read
      from ``cloud_gflops()``) starts when the tick's uploads arrive (t * T plus their one-way
      time) or when the previous tick's work ends, whichever is later, and takes GFLOPs /
      ``cloud_throughput_gflops`` seconds;
    - the packet reaches the edge one downlink one-way time after that work ends;
    - the edge applies it before the first batch k > t with k * T at or after that moment, so the
      delay is ceil(latency / T) - 1 ticks: 0, as with no delay, while the round trip fits in
      one batch interval.
    """

    def __init__(self, costs: CostModel, cloud_gflops: Callable[[], float], uplink: "Link") -> None:
        assert costs.cloud_throughput_gflops and costs.batch_interval_s, "CostModel.validate requires both"
        self.costs, self.cloud_gflops, self.uplink = costs, cloud_gflops, uplink
        self.counted = cloud_gflops()  # GFLOPs already served by the cloud (ticks before this one)
        self.busy_until_s = 0.0

    def work_done_s(self) -> float:
        """When the cloud finishes the current tick's work counted so far (stream seconds)."""
        arrived = self.uplink.now * self.costs.batch_interval_s + one_way_seconds(
            self.uplink.transmitted_bytes_per_tick[-1], self.costs.uplink_rate_bps, self.costs.rtt_ms)
        return max(arrived, self.busy_until_s) + (self.cloud_gflops() - self.counted) / self.costs.cloud_throughput_gflops

    def delay_ticks(self, packet: "Packet") -> int:
        """Ticks a parameter packet transmitted now waits before the edge may apply it."""
        at_edge = self.work_done_s() + one_way_seconds(packet.nbytes, self.costs.downlink_rate_bps, self.costs.rtt_ms)
        latency = at_edge - self.uplink.now * self.costs.batch_interval_s
        return max(0, math.ceil(latency / self.costs.batch_interval_s - 1e-9) - 1)

    def end_tick(self) -> None:
        """The tick's work is all counted: a cloud that worked stays busy until it is done."""
        if self.cloud_gflops() > self.counted:
            self.busy_until_s = self.work_done_s()
            self.counted = self.cloud_gflops()


class Channel:
    """Uplink (edge -> cloud samples) and downlink (cloud -> edge parameters). ``compute``
    (a ComputeDelay, with --cloud-throughput) sets each parameter packet's delay instead of
    the fixed downlink delay."""

    def __init__(self, config: ChannelConfig, compute: Callable[["Link"], ComputeDelay] | None = None) -> None:
        self.config = config
        self.uplink = Link(config.uplink_budget_bytes, config.uplink_delay_batches, config.overflow, config.queue_capacity,
                           by_priority=config.uplink_priority == "lowest-entropy-first")
        self.downlink = Link(
            config.downlink_budget_bytes, config.downlink_delay_batches, config.overflow, config.queue_capacity
        )
        self.compute = compute(self.uplink) if compute is not None else None
        if self.compute is not None:
            self.downlink.delay_of = self.compute.delay_ticks
        self.param_delay_sum = 0
        self.param_delay_batches = 0
        self._params_sent_tick: int | None = None

    @property
    def now(self) -> int:
        return self.uplink.now

    def sync_due(self) -> bool:
        """Whether the cloud sends parameters at this tick (every ``sync_period_batches``)."""
        return (self.now + 1) % self.config.sync_period_batches == 0

    def note_params_applied(self, packet: Packet) -> None:
        """The edge applied parameters sent at ``packet.sent_tick``; used for the delay figure."""
        self._params_sent_tick = packet.sent_tick

    def tick(self) -> None:
        """End of an edge batch: record how old the edge's parameters are, then advance both links."""
        if self._params_sent_tick is not None:
            self.param_delay_sum += self.now - self._params_sent_tick
            self.param_delay_batches += 1
        if self.compute is not None:
            self.compute.end_tick()
        self.uplink.tick()
        self.downlink.tick()

    def mean_param_delay_batches(self) -> float:
        """Mean age, in batches, of the cloud parameters the edge used (0 = sent the batch before)."""
        return self.param_delay_sum / self.param_delay_batches if self.param_delay_batches else 0.0


BYTES_PER_VALUE = {"uint8": 1, "int16": 2, "float32": 4}
TOKEN_ID_BYTES = 2  # a token id of a vocabulary below 65,536 (Llama 2's: 32,000) as uint16
PAD_ID = 0  # padding after a sentence's tokens: never sent
NATIVE_BY_DTYPE = {"uint8": "uint8", "int16": "int16", "int32": "tokens"}
# An uploaded sample's attribute saying how a real link carries it (cema_cli/link/wire.py): the
# JPEG file (bytes) or "float32"; the simulated channel reads the pixels alone.
WIRE_FORM = "cema_wire_form"


def encode_uplink(images, encoding: str, jpeg_quality: int) -> tuple[Any, list[int]]:
    """Samples as the cloud receives them, and each sample's payload size in bytes.

    ``uint8``: raw pixels (C*H*W bytes); ``int16``: a sensor window's raw samples (2 bytes per
    value, C*T values); ``float32``: 4 bytes per value (what the official image code ships);
    ``jpeg``: the real encoded size at ``jpeg_quality`` and the decoded pixels; ``tokens``: a
    sentence's token ids without the padding, 2 bytes each. ``native`` (a run resolves it to the
    dataset's name when it opens; run/assumptions.py) follows the samples' dtype: uint8 and
    int16 as themselves, int32 token ids as ``tokens``. The samples of ``float32`` and ``jpeg``
    carry their wire form (``WIRE_FORM``: the JPEG file, or "float32") for a real link.
    """
    if encoding == "native":
        encoding = NATIVE_BY_DTYPE[str(images.dtype).removeprefix("torch.")]
    if encoding == "jpeg":
        return _jpeg_roundtrip(images, jpeg_quality)
    if encoding == "tokens":
        return images, [TOKEN_ID_BYTES * int(n) for n in (images != PAD_ID).sum(dim=1).tolist()]
    per_sample = int(images[0].numel()) if len(images) else 0
    if encoding == "float32":
        return with_wire_forms(images, ["float32"] * len(images)), [4 * per_sample] * len(images)
    return images, [BYTES_PER_VALUE[encoding] * per_sample] * len(images)


def with_wire_forms(images, forms: list[Any]) -> list[Any]:
    """The batch as a list of samples, each with its wire form."""
    samples = list(images)
    for sample, form in zip(samples, forms):
        setattr(sample, WIRE_FORM, form)
    return samples


def _jpeg_roundtrip(images, quality: int):
    import numpy as np
    import torch
    from PIL import Image

    decoded, sizes, files = [], [], []
    for image in images.cpu().permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell())
        files.append(buffer.getvalue())
        buffer.seek(0)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()
    return with_wire_forms(out.to(images.device), files), sizes


def state_nbytes(state: dict[str, Any], dtype: str) -> int:
    """Bytes of a parameter message: every value at float32 (4 bytes) or float16 (2 bytes)."""
    itemsize = 2 if dtype == "float16" else 4
    return itemsize * sum(int(t.numel()) for t in state.values())
