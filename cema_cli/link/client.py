"""The edge half of the real link: one connection to ``cema serve`` per edge process
(``LinkClient``), and one ``RemoteCloud`` per cloud-placed strategy, which takes the cloud's
turn across the wire (CloudEdgeStrategy.cloud_turn).

At each edge batch the edge sends the packets its uplink delivered (``tick``) and, in lockstep,
waits for the cloud's answer: the parameters it sent down, which the edge puts through its own
downlink (budgets, delays, the sync clock), and the cloud's counters. In realtime the edge never
waits: answers are applied when they have arrived, at the end of a later batch.

The connection runs an asyncio loop in a background thread (TLS included); the edge's loop
talks to it through thread-safe futures. When the cloud is gone, the edge keeps predicting with
the parameters it has, counts the uploads that found no cloud, and tries to reconnect at most
every ``retry_s`` seconds; a new cloud session starts from the source models.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import os
import re
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import Any

from cema_cli import __version__
from cema_cli.errors import CemaError
from cema_cli.link.options import LinkOptions, parse_url
from cema_cli.link.shaping import Pacer, shaping_text
from cema_cli.link.wire import HELLO_LIMIT, PeerClosed, WireError, encode, message_size, read_message, state_digest

CONNECT_TIMEOUT_S = 30.0
COUNTERS = ("wire_uplink_bytes", "wire_downlink_bytes", "uploads_lost", "reconnects", "upload_seconds_sum", "upload_messages",
            "staleness_seconds_sum", "staleness_messages", "offline_seconds")


class LinkDown(Exception):
    """The cloud cannot be reached now: the connection closed, was refused or timed out."""


class Lost(Exception):
    """An uplink message dropped by the application-layer loss (--shape-loss)."""


class RemoteError(CemaError):
    """The server refused a request; its message says why."""


def keepalive(sock: socket.socket | None) -> None:
    """Dead peers are noticed within about a minute even when nothing is sent."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if isinstance(error, OSError) and not isinstance(error, ConnectionError) else text


class LinkClient:
    """One edge's connection to the cloud; ``call`` is thread-safe and returns a future of the
    answer (``LinkDown`` when the connection is lost first, ``Lost`` when the loss dropped it)."""

    def __init__(self, options: LinkOptions, edge_id: str, uplink: Pacer, downlink: dict[str, float]) -> None:
        self.options, self.edge_id, self.uplink, self.downlink = options, edge_id, uplink, downlink
        self.host, self.port = parse_url(options.cloud_url or "")
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[int, concurrent.futures.Future]] = {}
        self.rids = itertools.count(1)
        self.epoch, self.connected, self.reason = 0, False, ""
        self.down_since: float | None = None
        self.offline_closed, self.last_attempt = 0.0, -math.inf
        self.outbox: asyncio.Queue | None = None
        self.tasks: list[asyncio.Task] = []
        self.server: dict[str, Any] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cema-link", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return self.options.cloud_url or ""

    # --- connecting ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and be admitted; LinkDown when the server cannot be reached, RemoteError when it refuses."""
        future = asyncio.run_coroutine_threadsafe(self._connect(), self.loop)
        try:
            future.result(CONNECT_TIMEOUT_S)
        except RemoteError:
            raise
        except (OSError, ssl.SSLError, WireError, PeerClosed, asyncio.TimeoutError, concurrent.futures.TimeoutError) as error:
            future.cancel()
            raise LinkDown(describe(error)) from None

    def tls_context(self) -> ssl.SSLContext | None:
        """TLS when a CA is given; a local server's own certificate is pinned (its host name is
        the loopback or namespace address, which such a certificate need not name)."""
        if not self.options.tls_ca:
            return None
        context = ssl.create_default_context(cafile=self.options.tls_ca)
        context.check_hostname = not self.options.tls_pinned
        return context

    async def _connect(self) -> None:
        context = self.tls_context()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=context, server_hostname=self.host if context else None), CONNECT_TIMEOUT_S)
        keepalive(writer.get_extra_info("socket"))
        writer.writelines(encode("hello", {"token": self.options.resolved_token() or "", "cema_version": __version__,
                                           "downlink": self.downlink}, self.edge_id))
        await writer.drain()
        reply = await asyncio.wait_for(read_message(reader, HELLO_LIMIT, CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S)
        if reply.kind != "welcome":
            writer.close()
            raise RemoteError(f"the cloud at {self.url} refused edge {self.edge_id!r}: {reply.fields.get('error', reply.kind)}")
        self.started(reader, writer, reply.fields)

    def started(self, reader: Any, writer: Any, welcome: dict[str, Any]) -> None:
        """(In the loop.) The admitted connection's reader and writer tasks; an outage ends here."""
        with self.lock:
            self.epoch += 1
            self.connected, self.server, self.outbox = True, welcome, asyncio.Queue()
            if self.down_since is not None:
                self.offline_closed += time.monotonic() - self.down_since
                self.down_since = None
            epoch, outbox = self.epoch, self.outbox
        self.tasks = [self.loop.create_task(self._read(reader, epoch)), self.loop.create_task(self._write(writer, epoch, outbox))]

    def ensure_up(self) -> bool:
        """Connected, or reconnected now (at most one attempt per ``retry_s``)."""
        with self.lock:
            if self.connected:
                return True
            now = time.monotonic()
            if now - self.last_attempt < self.options.retry_s:
                return False
            self.last_attempt = now
        try:
            self.connect()
        except (LinkDown, RemoteError) as error:
            self.reason = str(error)
            return False
        return True

    def offline_seconds(self) -> float:
        with self.lock:
            open_outage = time.monotonic() - self.down_since if self.down_since is not None else 0.0
            return self.offline_closed + open_outage

    # --- messages -----------------------------------------------------------------------------

    def call(self, kind: str, fields: dict[str, Any], droppable: bool = False) -> concurrent.futures.Future:
        """Send a request; its future holds the answer. ``droppable``: subject to --shape-loss."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.wire_bytes = 0  # type: ignore[attr-defined]
        with self.lock:
            if not self.connected:
                future.set_exception(LinkDown(self.reason or "offline"))
                return future
            if droppable and self.uplink.lost():
                future.set_exception(Lost())
                return future
            rid, epoch = next(self.rids), self.epoch
            self.pending[rid] = (epoch, future)
        buffers = encode(kind, {**fields, "rid": rid}, self.edge_id)
        future.wire_bytes = message_size(buffers)  # type: ignore[attr-defined]
        self.loop.call_soon_threadsafe(self._enqueue, epoch, rid, buffers, time.monotonic())
        return future

    def request(self, kind: str, fields: dict[str, Any], timeout: float | None = None) -> Any:
        """``call`` and wait for the answer; a timeout drops the connection (LinkDown)."""
        future = self.call(kind, fields)
        return self.answer(future, timeout)

    def answer(self, future: concurrent.futures.Future, timeout: float | None = None) -> Any:
        try:
            return future.result(timeout or self.options.timeout_s)
        except concurrent.futures.TimeoutError:
            self.drop(f"no answer in {timeout or self.options.timeout_s:g} s")
            raise LinkDown(self.reason) from None

    def _enqueue(self, epoch: int, rid: int, buffers: list[Any], queued_at: float) -> None:
        if epoch != self.epoch or self.outbox is None:
            self._fail([rid], LinkDown(self.reason or "offline"))
        else:
            self.outbox.put_nowait((buffers, queued_at))

    async def _write(self, writer: Any, epoch: int, outbox: asyncio.Queue) -> None:
        try:
            while True:
                buffers, queued_at = await outbox.get()
                await self.uplink.write(writer, buffers, queued_at)
        except (OSError, ssl.SSLError) as error:
            self._lost(epoch, describe(error))
        finally:
            writer.close()

    async def _read(self, reader: Any, epoch: int) -> None:
        try:
            while True:
                message = await read_message(reader, self.options.max_message_bytes, self.options.timeout_s)
                self._deliver(message)
        except (PeerClosed, WireError, OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            self._lost(epoch, f"the cloud closed the connection ({describe(error)})" if isinstance(error, PeerClosed) else describe(error))

    def _deliver(self, message: Any) -> None:
        with self.lock:
            _, future = self.pending.pop(message.fields.get("rid"), (0, None))
        if future is None:
            return
        if message.kind == "error":
            future.set_exception(RemoteError(f"the cloud refused a request: {message.fields.get('error', '?')}"))
        else:
            future.set_result(message)

    def _fail(self, rids: list[int], error: Exception) -> None:
        with self.lock:
            futures = [self.pending.pop(rid)[1] for rid in rids if rid in self.pending]
        for future in futures:
            future.set_exception(error)

    def _lost(self, epoch: int, reason: str) -> None:
        """(In the loop.) The connection of ``epoch`` is gone: every answer it owed fails."""
        with self.lock:
            if epoch != self.epoch or not self.connected:
                return
            self.connected, self.reason, self.outbox = False, reason, None
            self.down_since = time.monotonic()
            owed = [rid for rid, (e, _) in self.pending.items() if e == epoch]
        for task in self.tasks:
            task.cancel()
        self._fail(owed, LinkDown(reason))

    def drop(self, reason: str) -> None:
        """Give up on the current connection (a timeout): the next turn reconnects."""
        with self.lock:
            epoch = self.epoch
        self.loop.call_soon_threadsafe(self._lost, epoch, reason)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if not self.connected:
                    return
            time.sleep(0.01)

    def close(self) -> None:
        """Close the connection (not an outage), stop the loop and its thread."""
        with self.lock:
            self.connected, self.reason, self.down_since = False, "closed by the edge", None
            owed = list(self.pending)
        self._fail(owed, LinkDown("closed by the edge"))
        with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()

    async def _shutdown(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def packet_entry(packet: Any) -> dict[str, Any]:
    return {"payload": packet.payload, "nbytes": packet.nbytes, "priority": packet.priority, "sent_tick": packet.sent_tick,
            "sequence": packet.sequence, "control": packet.control}


class RemoteCloud:
    """One strategy's cloud half across the link: a session on the server, opened from the
    edge's run configuration, ticked by ``turn``. ``frame_interval`` (realtime): seconds between
    two edge batches; None: lockstep."""

    def __init__(self, client: LinkClient, opening: dict[str, Any], frame_interval: float | None) -> None:
        self.client, self.opening, self.interval = client, opening, frame_interval
        self.session = uuid.uuid4().hex[:16]
        self.epoch = 0  # the connection this session was opened on (0: none yet)
        self.counts = dict.fromkeys(COUNTERS, 0.0)
        self.offline_at_start = client.offline_seconds()
        self.base: dict[str, float] = {}  # cloud counters of the sessions before a reconnection
        self.last: dict[str, float] = {}
        self.outstanding: deque[tuple[concurrent.futures.Future, dict[str, Any], int]] = deque()
        self.next_frame: float | None = None

    # --- opening ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the session on the current connection; LinkDown if it is gone."""
        self.exchange("open", {"session": self.session, **self.opening})
        if self.epoch:
            self.counts["reconnects"] += 1
            self.base = dict(self.last)
        self.epoch = self.client.epoch

    def exchange(self, kind: str, fields: dict[str, Any], timeout: float | None = None) -> Any:
        """A request and its answer, their bytes counted."""
        future = self.client.call(kind, fields)
        reply = self.client.answer(future, timeout)
        self.count(future, reply)
        return reply

    def reachable(self) -> bool:
        """The session is open on a live connection (reconnecting and reopening if need be)."""
        if not self.client.ensure_up():
            return False
        if self.epoch == self.client.epoch:
            return True
        try:
            self.open()
        except LinkDown:
            return False
        return True

    # --- the cloud's turn ---------------------------------------------------------------------

    def turn(self, strategy: Any) -> None:
        """The cloud's turn at this edge batch: what the uplink delivered crosses the wire."""
        channel = strategy.channel
        packets = channel.uplink.receive()
        uploads = sum(1 for p in packets if not p.control)
        if self.reachable():
            fields = {"session": self.session, "tick": channel.now, "sent_at": time.time(),
                      "packets": [packet_entry(p) for p in packets]}
            future = self.client.call("tick", fields, droppable=True)
            self.outstanding.append((future, fields, uploads))
        else:
            self.counts["uploads_lost"] += uploads
        if self.interval is None:
            self.settle(strategy, wait=True)
        else:
            self.pace()
            self.settle(strategy, wait=False)

    def pace(self) -> None:
        """Realtime: the next batch is captured one frame interval after this one."""
        now = time.monotonic()
        self.next_frame = (self.next_frame or now) + self.interval
        if self.next_frame > now:
            time.sleep(self.next_frame - now)

    def settle(self, strategy: Any, wait: bool) -> None:
        """Take the answers that have come (all owed ones when ``wait``), in the order sent."""
        while self.outstanding and (wait or self.outstanding[0][0].done()):
            future, fields, uploads = self.outstanding.popleft()
            try:
                reply = self.client.answer(future) if wait else future.result(0)
            except (LinkDown, Lost):
                self.counts["uploads_lost"] += uploads
                continue
            self.count(future, reply)
            self.apply(strategy, reply, fields)

    def apply(self, strategy: Any, reply: Any, fields: dict[str, Any]) -> None:
        """The cloud's answer to one tick: its counters, then its downlink sends through the
        edge's own downlink (realtime: dated at the tick they were learnt from)."""
        answer = reply.fields
        self.mirror(strategy, answer["work"], answer["meter"])
        origin = answer["tick"] if self.interval is not None else None
        for send in answer["sends"]:
            strategy.channel.downlink.send(send["payloads"], send["nbytes"], send["priorities"], send["control"], sent_tick=origin)
        if fields["packets"]:
            self.counts["upload_seconds_sum"] += max(0.0, answer["received_at"] - fields["sent_at"])
            self.counts["upload_messages"] += 1
        if answer["sends"]:
            self.counts["staleness_seconds_sum"] += time.time() - fields["sent_at"]
            self.counts["staleness_messages"] += 1

    def mirror(self, strategy: Any, work: dict[str, float], meter: dict[str, float]) -> None:
        """The cloud's work counts and meter, as the edge's row reports them (a reopened session
        counts from zero again: the earlier sessions' totals are kept as a base)."""
        self.last = {**{f"work.{k}": v for k, v in work.items() if k.startswith("cloud_")}, **{f"meter.{k}": v for k, v in meter.items()}}
        total = {k: self.base.get(k, 0.0) + v for k, v in self.last.items()}
        for key, value in total.items():
            if key.startswith("work."):
                setattr(strategy.work, key[5:], int(value))
        strategy.context.cloud_meter.mirror(total["meter.forward_gflops"], total["meter.backward_gflops"], total["meter.seconds"])

    def count(self, future: concurrent.futures.Future, reply: Any) -> None:
        self.counts["wire_uplink_bytes"] += future.wire_bytes  # type: ignore[attr-defined]
        self.counts["wire_downlink_bytes"] += reply.wire_bytes

    # --- the end of a leg and of the session --------------------------------------------------

    def first_non_finite(self, strategy: Any) -> str | None:
        """The cloud's own check of its models, once it has answered every tick (None when it
        cannot be asked); realtime answers still owed are taken first."""
        if not self.reachable():
            return None
        try:
            reply = self.exchange("verdict", {"session": self.session})
        except LinkDown:
            return None
        self.settle(strategy, wait=False)
        return reply.fields.get("first_non_finite")

    def close(self) -> None:
        if self.epoch and self.epoch == self.client.epoch:
            with contextlib.suppress(LinkDown, RemoteError):
                self.exchange("close", {"session": self.session}, timeout=min(30.0, self.client.options.timeout_s))

    def totals(self) -> dict[str, float]:
        return {**self.counts, "offline_seconds": self.client.offline_seconds() - self.offline_at_start}


# --- one edge run's link ------------------------------------------------------------------------

class EdgeLink:
    """The live link of one edge's run: its connection (made at the first cloud-placed strategy,
    once a local server listens), a RemoteCloud per such strategy, and the link columns of its rows."""

    def __init__(self, options: LinkOptions, local: Any, seed: int) -> None:
        self.options, self.local, self.seed = options, local, seed
        self.shaping = local.shaping if local is not None else shaping_text(options, "app")
        self.generations: dict[str, int] = {}
        self.digests: dict[int, str] = {}
        self._client: LinkClient | None = None

    @property
    def client(self) -> LinkClient:
        if self._client is None:
            options = self.local.options() if self.local is not None else self.options
            self.options = options
            client = LinkClient(options, options.edge_id or default_edge_id(), *pacers_for(options, self.seed))
            try:
                client.connect()
            except LinkDown as error:
                client.close()
                raise CemaError(f"cannot reach the cloud at {options.cloud_url}: {error}; start `cema serve` there, or check "
                                "--cloud-url, the token and --tls-ca.") from None
            except RemoteError:
                client.close()
                raise
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def attach(self, strategy: Any, config: Any, method: str, edge_source: Any) -> None:
        """Open the strategy's cloud session (later, when the cloud is unreachable now)."""
        generation = self.generations[method] = self.generations.get(method, -1) + 1
        if id(edge_source) not in self.digests:
            self.digests[id(edge_source)] = state_digest(edge_source)
        opening = {"config": asdict(replace(config, methods=(method,))), "method": method, "generation": generation,
                   "edge_digest": self.digests[id(edge_source)]}
        interval = config.batch_size / self.options.frame_rate if self.options.timing == "realtime" else None
        strategy.remote = RemoteCloud(self.client, opening, interval)
        strategy.remote.reachable()  # opens the session now; an unreachable cloud is retried at every batch

    def release(self, strategy: Any) -> None:
        remote = getattr(strategy, "remote", None)
        if remote is not None:
            remote.close()

    def columns(self, spent: dict[str, float]) -> dict[str, Any]:
        """The row's link columns over a leg's counters (``spent``: differences, or a mixed
        leg's share of them)."""
        payload = spent["uplink_bytes"] + spent["downlink_bytes"]
        wire = spent["wire_uplink_bytes"] + spent["wire_downlink_bytes"]
        status = link_status(spent)
        return {
            "link": "live", "link_timing": self.options.timing, "link_shaping": self.shaping, "link_status": status,
            "cloud_url": self.client.url, "cloud_device": self.client.server.get("device", ""),
            "offline_seconds": spent["offline_seconds"], "uploads_lost": round(spent["uploads_lost"]), "reconnects": round(spent["reconnects"]),
            "wire_uplink_bytes": round(spent["wire_uplink_bytes"]), "wire_downlink_bytes": round(spent["wire_downlink_bytes"]),
            "wire_overhead": wire / payload - 1.0 if payload else None,
            "measured_upload_seconds": mean(spent["upload_seconds_sum"], spent["upload_messages"]),
            "measured_staleness_seconds": mean(spent["staleness_seconds_sum"], spent["staleness_messages"]),
            "upload_messages": round(spent["upload_messages"]),
            "reproducible": self.options.timing == "lockstep" and status == "ok",
        }


def mean(total: float, count: float) -> float | None:
    return total / count if count else None


def link_status(spent: dict[str, float]) -> str:
    """'ok', or what the link did to the row: an outage (seconds offline, reconnections) and
    uploads that found no cloud."""
    parts = []
    if spent["offline_seconds"] > 0 or spent["reconnects"]:
        parts.append(f"outage: {spent['offline_seconds']:.1f} s offline, {round(spent['reconnects'])} reconnect(s)")
    if spent["uploads_lost"]:
        parts.append(f"{round(spent['uploads_lost'])} upload(s) lost")
    return "; ".join(parts) or "ok"


def remote_counts(strategy: Any) -> dict[str, float]:
    """A strategy's link counters so far (zeros without a real link), for api.link_counts."""
    remote = getattr(strategy, "remote", None)
    return remote.totals() if remote is not None else dict.fromkeys(COUNTERS, 0.0)


def link_columns(link: EdgeLink | None, spent: dict[str, float]) -> dict[str, Any]:
    return link.columns(spent) if link is not None else {"link": "simulated", "reproducible": True}


@contextlib.contextmanager
def edge_link(options: LinkOptions | None, config: Any, cloud_methods: list[str]) -> Iterator[EdgeLink | None]:
    """The run's live link (None: simulated, or no method has a cloud half): to ``cloud_url``, or
    to a local server started now, while the edge loads its data, and stopped after the run."""
    if options is None or not options.live or not cloud_methods:
        yield None
        return
    options.check_run(config)
    from cema_cli.link.local import local_server

    with contextlib.ExitStack() as stack:
        local = stack.enter_context(local_server(options, torch_threads(), config.device)) if options.cloud_url is None else None
        link = EdgeLink(options, local, config.seed)
        stack.callback(link.close)
        yield link


def pacers_for(options: LinkOptions, seed: int) -> tuple[Pacer, dict[str, float]]:
    """The uplink's pacer here, and what the server is asked to do on the downlink: application
    buckets unless the kernel shapes (tc), delay and loss always in the application layer."""
    from cema_cli.link.shaping import app_pacers

    rates = (None, None) if options.shaper == "tc" else (options.shape_up_bps, options.shape_down_bps)
    up, down = app_pacers(*rates, options.shape_rtt_ms, options.shape_loss, seed)
    return up, {"bps": down.bucket.rate * 8 if down.bucket else 0.0, "delay_s": down.delay_s}


def default_edge_id() -> str:
    """edge-<host>-<pid>: unique on the server while this process lives."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"edge-{socket.gethostname()[:32]}-{os.getpid()}")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class StatusProbe:
    """A connection that asks a server for its statistics (one connection, kept while it is used)."""

    def __init__(self, options: LinkOptions) -> None:
        self.client = LinkClient(options, f"probe-{os.getpid()}", Pacer(), {"bps": 0, "delay_s": 0})
        self.client.connect()

    def status(self, timeout: float = 60.0) -> dict[str, Any]:
        if not self.client.ensure_up():
            raise LinkDown(self.client.reason)
        return self.client.request("status", {}, timeout=timeout).fields

    def close(self) -> None:
        self.client.close()


def server_status(options: LinkOptions, timeout: float = 60.0) -> dict[str, Any]:
    """The statistics of the server ``options`` reach (a short-lived probe connection)."""
    probe = StatusProbe(options)
    try:
        return probe.status(timeout)
    finally:
        probe.close()
