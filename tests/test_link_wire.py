"""The real link's pieces that need no server: the wire format and its refusals, the token
bucket, the scheduler's orders, the link options (issue 24)."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time

import pytest
import torch

from cema_cli.errors import CemaError
from cema_cli.link import wire
from cema_cli.link.options import LinkOptions, parse_url
from cema_cli.link.shaping import Pacer, TokenBucket, chunks


def roundtrip(fields, kind="tick", edge="edge-1"):
    raw = b"".join(bytes(b) for b in wire.encode(kind, fields, edge))
    header_len, body_len = wire.read_prefix(raw[:wire.PREFIX.size], len(raw))
    assert wire.PREFIX.size + header_len + body_len == len(raw)
    start = wire.PREFIX.size + header_len
    return wire.decode(raw[wire.PREFIX.size:start], bytearray(raw[start:])), raw


def test_every_allowed_dtype_and_structure_crosses_exactly() -> None:
    tensors = {name: (torch.arange(6).reshape(2, 3) % 2).to(dtype) for name, dtype in wire.DTYPES.items()}
    fields = {"tensors": tensors, "view": torch.arange(12.0).reshape(3, 4).t(), "empty": torch.empty(0, 5),
              "nested": [(1, -2.5, True, None, "é"), {"a": [math.inf, -math.inf]}], "scalar": torch.tensor(3.25)}
    message, raw = roundtrip(fields)
    got = message.fields
    assert message.kind == "tick" and message.edge == "edge-1" and message.wire_bytes == len(raw)
    for name, tensor in tensors.items():
        assert got["tensors"][name].dtype == tensor.dtype and torch.equal(got["tensors"][name], tensor)
    assert torch.equal(got["view"], fields["view"]) and got["empty"].shape == (0, 5) and got["scalar"].item() == 3.25
    assert got["nested"][0] == (1, -2.5, True, None, "é") and isinstance(got["nested"][0], tuple)
    assert got["nested"][1] == {"a": [math.inf, -math.inf]}
    assert math.isnan(roundtrip({"x": math.nan})[0].fields["x"])


def test_body_is_the_raw_tensor_bytes_aligned() -> None:
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    message, raw = roundtrip({"payload": image, "moments": torch.ones(5)})
    header = json.loads(raw[wire.PREFIX.size:wire.PREFIX.size + wire.read_prefix(raw[:16], 10**9)[0]])
    (_, shape, offset, nbytes), (_, _, offset2, nbytes2) = header["tensors"]
    assert (shape, offset, nbytes, offset2 % wire.ALIGN, nbytes2) == ([3, 32, 32], 0, 3072, 0, 20)
    assert raw.endswith(image.numpy().tobytes() + torch.ones(5).numpy().tobytes())


def test_python_objects_are_refused_not_pickled() -> None:
    class Thing:
        pass

    for value in (Thing(), {1: "non-string key"}, {"x"}, b"bytes", torch.zeros(2, dtype=torch.complex64)):
        with pytest.raises(wire.WireError):
            wire.encode("tick", {"v": value})


def header_message(header: dict, body: bytes = b"") -> tuple[bytes, bytearray]:
    return json.dumps(header).encode(), bytearray(body)


@pytest.mark.parametrize("header, body, expected", [
    ({"kind": "x", "edge": "e", "fields": {}}, b"", "expected kind, edge, fields and tensors"),
    ({"kind": "x", "edge": "e", "fields": [], "tensors": []}, b"", "fields is not an object"),
    ({"kind": "x", "edge": "e", "fields": {"t": {"$t": 0}}, "tensors": []}, b"", "malformed value"),
    ({"kind": "x", "edge": "e", "fields": {"t": {"$t": 0}}, "tensors": [["object", [1], 0, 8]]}, bytes(8), "not allowed"),
    ({"kind": "x", "edge": "e", "fields": {}, "tensors": [["float32", [3], 0, 8]]}, bytes(8), "cannot hold"),
    ({"kind": "x", "edge": "e", "fields": {}, "tensors": [["uint8", [16], 0, 16]]}, bytes(8), "outside the message body"),
    ({"kind": "x", "edge": "e", "fields": {}, "tensors": [["uint8", [4], 3, 4]]}, bytes(8), "outside the message body"),
    ({"kind": "x", "edge": "e", "fields": {}, "tensors": [["uint8", [-1], 0, 0]]}, b"", "malformed tensor shape"),
    ({"kind": "x", "edge": "e", "fields": {"v": {"$x": 1}}, "tensors": []}, b"", "malformed value"),
    ({"kind": "x", "edge": "e", "fields": {"v": {"$f": "1e9"}}, "tensors": []}, b"", "malformed value"),
])
def test_malformed_headers_are_refused(header, body, expected) -> None:
    with pytest.raises(wire.WireError, match=expected):
        wire.decode(*header_message(header, body))


def test_deep_nesting_bare_constants_and_bad_utf8_are_refused() -> None:
    nested: list = []
    for _ in range(40):
        nested = [nested]
    deep = {"kind": "x", "edge": "e", "fields": {"$d": {"v": nested}}, "tensors": []}
    with pytest.raises(wire.WireError, match="nested too deeply"):
        wire.decode(*header_message(deep))
    with pytest.raises(wire.WireError, match="bare NaN"):
        wire.decode(b'{"kind": "x", "edge": "e", "fields": {"$d": {"v": NaN}}, "tensors": []}', bytearray())
    with pytest.raises(wire.WireError, match="malformed header"):
        wire.decode(b"\xff\xfe", bytearray())
    with pytest.raises(wire.WireError, match="malformed header"):
        wire.decode(b"[" * 100_000, bytearray())


def test_prefix_refuses_magic_version_and_size_before_reading_more() -> None:
    assert wire.read_prefix(struct.pack(">4sB3xII", b"CEMA", 1, 10, 20), 100) == (10, 20)
    with pytest.raises(wire.WireError, match="bad magic") as error:
        wire.read_prefix(struct.pack(">4sB3xII", b"HTTP", 1, 10, 20), 100)
    assert error.value.category == "bad magic"
    with pytest.raises(wire.WireError, match="protocol version 2") as error:
        wire.read_prefix(struct.pack(">4sB3xII", b"CEMA", 2, 10, 20), 100)
    assert error.value.category == "wrong version"
    with pytest.raises(wire.WireError, match="over the limit of 100 bytes") as error:
        wire.read_prefix(struct.pack(">4sB3xII", b"CEMA", 1, 10, 75), 100)
    assert error.value.category == "oversized message"


def test_stream_reader_tells_a_clean_close_from_a_truncated_message() -> None:
    raw = b"".join(bytes(b) for b in wire.encode("tick", {"x": torch.arange(4)}))

    async def read(data: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await wire.read_message(reader, 10**6, 5)

    assert torch.equal(asyncio.run(read(raw)).fields["x"], torch.arange(4))
    with pytest.raises(wire.PeerClosed):
        asyncio.run(read(b""))
    for cut in (3, 20, len(raw) - 1):
        with pytest.raises(wire.WireError, match="truncated") as error:
            asyncio.run(read(raw[:cut]))
        assert error.value.category == "truncated message"


def test_state_digest_changes_with_any_value() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = wire.state_digest(model)
    assert before == wire.state_digest(model)
    with torch.no_grad():
        model[1].running_var[0] += 1e-6
    assert wire.state_digest(model) != before


def test_token_bucket_paces_to_its_rate_after_the_burst() -> None:
    bucket = TokenBucket(8_000.0, burst=100)  # 1,000 bytes per second
    assert bucket.reserve(100) == pytest.approx(0.0, abs=1e-3)
    assert bucket.reserve(500) == pytest.approx(0.5, abs=0.02)  # in debt by 500 bytes
    assert bucket.reserve(250) == pytest.approx(0.75, abs=0.02)


def test_pacer_chunks_without_copies_and_loses_a_seeded_share() -> None:
    data = [bytes(range(200)), memoryview(bytes(50))]
    pieces = list(chunks(data, 64))
    assert [len(p) for p in pieces] == [64, 64, 64, 8, 50] and b"".join(pieces) == data[0] + bytes(50)
    draws = [Pacer(loss=0.25, seed=7) for _ in range(2)]
    first, second = ([pacer.lost() for _ in range(4000)] for pacer in draws)
    assert first == second and 0.22 < sum(first) / len(first) < 0.28
    assert not any(Pacer(loss=0.0).lost() for _ in range(100))


def test_pacer_holds_a_message_for_its_delay() -> None:
    class Sink:
        def __init__(self):
            self.at = None

        def writelines(self, buffers):
            self.at = time.monotonic()

        async def drain(self):
            return None

    sink, start = Sink(), time.monotonic()
    asyncio.run(Pacer(delay_s=0.2).write(sink, [b"x"], start))
    assert sink.at - start >= 0.2


def test_urls_and_link_options_are_checked(monkeypatch) -> None:
    monkeypatch.delenv("CEMA_LINK_TOKEN", raising=False)
    assert parse_url("127.0.0.1:7741") == ("127.0.0.1", 7741)
    assert parse_url("[::1]:80") == ("::1", 80)
    for bad in ("localhost", "host:0", "host:70000", "http://host:1", "a b:1"):
        with pytest.raises(CemaError, match="HOST:PORT"):
            parse_url(bad)
    with pytest.raises(CemaError, match="add --link live"):
        LinkOptions(cloud_url="h:1").validate()
    with pytest.raises(CemaError, match="--frame-rate"):
        LinkOptions(mode="live", timing="realtime").validate()
    with pytest.raises(CemaError, match="token"):
        LinkOptions(mode="live", cloud_url="h:1").validate()
    with pytest.raises(CemaError, match="go together"):
        LinkOptions(mode="live", tls_cert="c.pem").validate()
    with pytest.raises(CemaError, match="--shape-loss"):
        LinkOptions(mode="live", shape_loss=1.0).validate()
    assert LinkOptions(mode="live", timing="realtime", frame_rate=64).validate().live


def test_scheduler_orders_as_the_simulated_fleet() -> None:
    """round-robin serves edges in turn, fifo by arrival, lowest-entropy-first by the uploads'
    mean entropy; a session's jobs run one at a time, in order."""
    from types import SimpleNamespace

    from cema_cli.link.server import Job, Scheduler, Session

    def jobs(policy: str) -> list[tuple[int, int]]:
        scheduler = Scheduler(policy)
        sessions = [Session(SimpleNamespace(index=i), f"s{i}", 0.0) for i in (1, 2, 3)]
        arrivals = [(0, 0.5), (0, 0.1), (1, 0.9), (2, 0.3), (1, 0.2)]  # (session, entropy) in arrival order
        for sequence, (s, entropy) in enumerate(arrivals):
            scheduler.add(Job(sessions[s], "tick", {}, None, 0.0, 0.0, sequence, entropy))
        order = []
        while (job := scheduler.pick()) is not None:
            order.append((job.session.edge.index, job.sequence))  # served at once: no session is busy
        return order

    assert jobs("fifo") == [(1, 0), (1, 1), (2, 2), (3, 3), (2, 4)]
    assert jobs("round-robin") == [(1, 0), (2, 2), (3, 3), (1, 1), (2, 4)]
    assert jobs("lowest-entropy-first") == [(3, 3), (1, 0), (1, 1), (2, 2), (2, 4)]
    scheduler = Scheduler("fifo")
    busy = Session(SimpleNamespace(index=1), "busy", 0.0, busy=True)
    scheduler.add(Job(busy, "tick", {}, None, 0.0, 0.0, 0, 0.0))
    assert scheduler.pick() is None  # its session is running a job
