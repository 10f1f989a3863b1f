"""``cema serve``: the cloud half of real edge-cloud links.

One asyncio loop reads and writes every edge's connection (asyncio streams, TLS optional); the
cloud's work runs on ``capacity`` worker threads. Every edge message becomes a job in its
session's queue (a session's jobs run one at a time, in order); the scheduler picks the next
session to serve as the simulated fleet does: ``round-robin`` over edges, ``fifo`` by arrival, or
``lowest-entropy-first`` by the mean entropy of the uploads (fleet.CloudQueue's orders).

Admission: the first message must be a ``hello`` with the shared token, within
``hello_timeout_s`` and HELLO_LIMIT bytes; at most ``max_edges`` edges at once, each id once
(a newer connection of an id replaces the older). Afterwards every message must carry the
edge's id and name one of its own sessions. A malformed message is refused with an ``error``
answer (the connection stays when its framing held, closes when not); it never reaches another
edge's session, and a failing session never stops the server. An edge that leaves (or dies) has
its sessions freed at once.

Statistics (``server.json`` under ``out``, rewritten atomically, and the ``status`` request):
sessions held and freed, measured utilisation (busy worker seconds / capacity / seconds since the
first job), queue waits, request latency (a tick's arrival to its answer written), per-edge bytes,
refusals by reason, and the process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import secrets
import signal
import ssl
import sys
import threading
import time
import traceback
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cema_cli import __version__
from cema_cli.errors import CemaError
from cema_cli.link.client import keepalive
from cema_cli.link.cloud import CloudBuilder, CloudSession, SessionSpec, packets_from
from cema_cli.link.options import EDGE_ID, MESSAGE_LIMIT, TOKEN_ENV
from cema_cli.link.shaping import Pacer, TokenBucket
from cema_cli.link.wire import HELLO_LIMIT, PeerClosed, WireError, encode, message_size, read_message

log = logging.getLogger("cema.serve")
SCHEDULERS = ("round-robin", "fifo", "lowest-entropy-first")
KEPT_SAMPLES = 100_000  # latencies and waits kept for the percentiles
KEPT_SESSIONS = 10_000


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 7741
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_edges: int = 64
    capacity: int = 1
    scheduler: str = "round-robin"
    foundation: str = "shared"
    device: str = "cpu"
    threads: int = 1
    max_message_bytes: int = MESSAGE_LIMIT
    shape_down_bps: float | None = None  # application-level pacing of every answer (else what each edge asks)
    ready_file: str | None = None
    out: str | None = None
    hello_timeout_s: float = 10.0
    stall_timeout_s: float = 120.0  # a started message that sends nothing for this long is dropped


@dataclass
class EdgeRecord:
    """What the server saw of one edge id, kept after it leaves (server.json's ``edges``)."""

    bytes_in: int = 0
    bytes_out: int = 0
    messages: int = 0
    ticks: int = 0
    sessions: int = 0
    connections: int = 0
    connected: bool = False
    last_reason: str = ""


@dataclass
class Edge:
    """One admitted connection."""

    index: int
    id: str
    peer: str
    writer: Any
    pacer: Pacer
    record: EdgeRecord
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    sessions: dict[str, "Session"] = field(default_factory=dict)
    connected: bool = True
    writing: asyncio.Task | None = None


@dataclass
class Session:
    edge: Edge
    id: str
    opened: float
    cloud: CloudSession | None = None
    jobs: deque = field(default_factory=deque)
    busy: bool = False
    closed: bool = False
    ticks: int = 0
    busy_s: float = 0.0
    method: str = ""
    error: str = ""


@dataclass
class Job:
    session: Session
    kind: str
    fields: dict[str, Any]
    rid: Any
    arrived: float
    arrived_wall: float
    sequence: int
    entropy: float
    started: float = 0.0


def summary(values: Any) -> dict[str, float]:
    """count, mean, p50, p99 and max of a sample (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    rank = lambda q: ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # noqa: E731
    return {"count": len(ordered), "mean": sum(ordered) / len(ordered), "p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1]}


def memory() -> dict[str, int]:
    """Resident and peak resident bytes of this process (Linux /proc; else getrusage's peak)."""
    with contextlib.suppress(OSError):
        status = Path("/proc/self/status").read_text().split("\n")
        values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status if line.startswith(("VmRSS", "VmHWM"))}
        return {"rss_bytes": values.get("VmRSS", 0), "peak_rss_bytes": values.get("VmHWM", 0)}
    import resource

    return {"rss_bytes": 0, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


class Scheduler:
    """The sessions' jobs; ``pick`` returns the next one to run: the head job of a session that
    is not busy, chosen by the policy. ``round-robin`` serves edges in turn after the last one."""

    def __init__(self, policy: str) -> None:
        self.policy, self.pointer, self.sessions = policy, -1, []

    def add(self, job: Job) -> None:
        job.session.jobs.append(job)
        if job.session not in self.sessions:
            self.sessions.append(job.session)

    def pick(self) -> Job | None:
        ready = [s.jobs[0] for s in self.sessions if s.jobs and not s.busy]
        if not ready:
            return None
        if self.policy == "fifo":
            job = min(ready, key=lambda j: j.sequence)
        elif self.policy == "lowest-entropy-first":
            job = min(ready, key=lambda j: (j.entropy, j.sequence))
        else:
            later = [j for j in ready if j.session.edge.index > self.pointer]
            job = min(later or ready, key=lambda j: (j.session.edge.index, j.sequence))
            self.pointer = job.session.edge.index
        job.session.jobs.popleft()
        self.sessions = [s for s in self.sessions if s.jobs or s.busy or s is job.session]
        return job

    def forget(self, session: Session) -> None:
        session.jobs.clear()
        self.sessions = [s for s in self.sessions if s is not session]


class CloudServer:
    def __init__(self, options: ServeOptions, token: str) -> None:
        self.options, self.token = options, token
        self.builder = CloudBuilder(options.device, options.foundation)
        self.pool = ThreadPoolExecutor(options.capacity, thread_name_prefix="cema-cloud")
        self.scheduler = Scheduler(options.scheduler)
        self.edges: dict[str, Edge] = {}
        self.records: dict[str, EdgeRecord] = {}
        self.running = 0
        self.sequence = 0
        self.indices = 0
        self.started = time.monotonic()
        self.first_job: float | None = None
        self.busy_s = 0.0
        self.waits: deque[float] = deque(maxlen=KEPT_SAMPLES)
        self.latencies: deque[float] = deque(maxlen=KEPT_SAMPLES)
        self.refused: Counter = Counter()
        self.opened = self.closed = self.freed = self.ticks = 0
        self.finished: deque[dict[str, Any]] = deque(maxlen=KEPT_SESSIONS)
        self.stats_written = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- admission ------------------------------------------------------------------------------

    async def handle(self, reader: Any, writer: Any) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2]) if writer.get_extra_info("peername") else "?"
        keepalive(writer.get_extra_info("socket"))
        edge = None
        reason = "closed"
        try:
            edge = await self.admit(reader, writer, peer)
            if edge is not None:
                reason = await self.serve_edge(edge, reader)
        except (ConnectionError, OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            reason = f"connection lost ({type(error).__name__})"
        finally:
            if edge is not None:
                self.free(edge, reason)
                with contextlib.suppress(Exception):  # its last answer (an error, say) goes out first
                    await asyncio.wait_for(edge.outbox.join(), 2)
                if edge.writing is not None:
                    edge.writing.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def admit(self, reader: Any, writer: Any, peer: str) -> Edge | None:
        """The edge of a valid hello, or None after refusing (and logging) anything else."""
        try:
            hello = await asyncio.wait_for(read_message(reader, HELLO_LIMIT, self.options.hello_timeout_s),
                                           self.options.hello_timeout_s)
        except WireError as error:
            await self.refuse(writer, peer, str(error), error.category)
            return None
        except (PeerClosed, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as error:
            self.note_refusal(peer, f"no hello ({type(error).__name__})", "no hello")
            return None
        problem = self.admission_problem(hello)
        if problem:
            await self.refuse(writer, peer, *problem)
            return None
        return self.welcome(writer, peer, hello)

    def admission_problem(self, hello: Any) -> tuple[str, str] | None:
        """(reason, category) of a refused hello; None when the edge is admitted."""
        token = hello.fields.get("token")
        if hello.kind != "hello":
            return f"the first message must be a hello, not {hello.kind!r}", "no hello"
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
            return "bad token", "bad token"
        if not EDGE_ID.fullmatch(hello.edge):
            return f"bad edge id {hello.edge[:70]!r}", "bad edge id"
        if hello.edge not in self.edges and len(self.edges) >= self.options.max_edges:
            return f"server full (--max-edges {self.options.max_edges})", "server full"
        if downlink_pacer(hello.fields.get("downlink"), self.options) is None:
            return "bad downlink shaping request", "malformed message"
        return None

    def welcome(self, writer: Any, peer: str, hello: Any) -> Edge:
        older = self.edges.get(hello.edge)
        if older is not None:  # the edge reconnected before its old connection was seen to die
            older.writer.close()
            self.free(older, "replaced by a newer connection")
        record = self.records.setdefault(hello.edge, EdgeRecord())
        record.connections += 1
        record.connected = True
        record.bytes_in += hello.wire_bytes
        self.indices += 1
        edge = Edge(self.indices, hello.edge, peer, writer, downlink_pacer(hello.fields.get("downlink"), self.options), record)
        self.edges[edge.id] = edge
        edge.writing = asyncio.get_running_loop().create_task(self.write_loop(edge))
        self.send(edge, "welcome", {"cema_version": __version__, "device": self.options.device, "threads": torch.get_num_threads(),
                                    "capacity": self.options.capacity, "scheduler": self.options.scheduler})
        log.info("edge %s admitted from %s", edge.id, peer)
        return edge

    async def refuse(self, writer: Any, peer: str, reason: str, category: str) -> None:
        self.note_refusal(peer, reason, category)
        with contextlib.suppress(Exception):
            writer.writelines(encode("refused", {"error": reason}))
            await asyncio.wait_for(writer.drain(), 5)

    def note_refusal(self, peer: str, reason: str, category: str) -> None:
        log.warning("refused %s: %s", peer, reason)
        self.refused[category] += 1

    # --- an admitted edge -----------------------------------------------------------------------

    async def serve_edge(self, edge: Edge, reader: Any) -> str:
        """Read the edge's messages until it leaves; return why it left."""
        while edge.connected:
            try:
                message = await read_message(reader, self.options.max_message_bytes, self.options.stall_timeout_s)
            except PeerClosed:
                return "the edge closed the connection"
            except WireError as error:  # the framing cannot be trusted after this: the connection goes
                self.note_refusal(f"{edge.id}@{edge.peer}", str(error), error.category)
                self.send(edge, "error", {"error": str(error)})
                return f"refused: {error}"
            except asyncio.TimeoutError:
                return "stalled within a message"
            edge.record.bytes_in += message.wire_bytes
            edge.record.messages += 1
            problem = self.dispatch(edge, message)
            if problem:
                self.note_refusal(f"{edge.id}@{edge.peer}", *problem)
                self.send(edge, "error", {"error": problem[0], "rid": message.fields.get("rid")})
                if problem[1] == "identity mismatch":
                    return f"refused: {problem[0]}"
        return "replaced by a newer connection"

    def dispatch(self, edge: Edge, message: Any) -> tuple[str, str] | None:
        """Queue the message's job; (reason, category) when it is refused."""
        if message.edge != edge.id:
            return f"message signed {message.edge[:70]!r} on the connection of edge {edge.id!r}", "identity mismatch"
        kind, fields = message.kind, message.fields
        if kind == "status":
            self.send(edge, "status", {**self.snapshot(), "rid": fields.get("rid")})
            return None
        if kind not in ("open", "tick", "verdict", "close"):
            return f"unknown message kind {kind[:40]!r}", "malformed message"
        sid = fields.get("session")
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            return "malformed session id", "malformed message"
        if kind == "open":
            if sid in edge.sessions:
                return f"session {sid} is already open", "malformed message"
            edge.sessions[sid] = Session(edge, sid, time.monotonic())
            edge.record.sessions += 1
        elif sid not in edge.sessions:
            return f"no session {sid} of edge {edge.id}", "unknown session"
        return self.queue(edge.sessions[sid], kind, fields)

    def queue(self, session: Session, kind: str, fields: dict[str, Any]) -> tuple[str, str] | None:
        entropy = -math.inf
        if kind == "tick":
            try:
                fields = {**fields, "tick": int(fields["tick"]), "packets": packets_from(fields.get("packets")),
                          "sent_at": float(fields.get("sent_at", 0.0))}
            except (KeyError, TypeError, ValueError, WireError) as error:
                return f"malformed tick ({error})", "malformed message"
            uploads = [p.priority for p in fields["packets"] if not p.control and math.isfinite(p.priority)]
            entropy = sum(uploads) / len(uploads) if uploads else math.inf
        self.sequence += 1
        self.scheduler.add(Job(session, kind, fields, fields.get("rid"), time.monotonic(), time.time(), self.sequence, entropy))
        self.run_jobs()
        return None

    # --- the cloud's workers ---------------------------------------------------------------------

    def run_jobs(self) -> None:
        while self.running < self.options.capacity:
            job = self.scheduler.pick()
            if job is None:
                return
            job.session.busy, job.started = True, time.monotonic()
            self.running += 1
            self.first_job = self.first_job or job.started
            future = asyncio.get_running_loop().run_in_executor(self.pool, self.execute, job)
            future.add_done_callback(lambda done, job=job: self.finished_job(job, done))

    def execute(self, job: Job) -> tuple[list[Any], float]:
        """(In a worker.) The job's answer, encoded here while its tensors are current, and the
        seconds it took."""
        start = time.monotonic()
        try:
            kind, fields = self.work(job)
        except (CemaError, WireError) as error:
            kind, fields = "error", {"error": str(error)}
            job.session.error = str(error)
        except Exception as error:  # noqa: BLE001 - one session's failure never stops the server
            log.error("session %s of edge %s failed: %s", job.session.id, job.session.edge.id, traceback.format_exc().strip())
            kind, fields = "error", {"error": f"the cloud failed on this session ({type(error).__name__}: {error})"}
            job.session.error, job.session.cloud = str(error), None
        return encode(kind, {**fields, "rid": job.rid}), time.monotonic() - start

    def work(self, job: Job) -> tuple[str, dict[str, Any]]:
        session, fields = job.session, job.fields
        if job.kind == "open":
            spec = SessionSpec.from_fields(fields)
            session.cloud, session.method = self.builder.build(spec), spec.method
            return "opened", {"session": session.id}
        if session.cloud is None:
            raise CemaError(f"session {session.id} is not open ({session.error or 'its opening failed'})")
        if job.kind == "tick":
            answer = session.cloud.turn(fields["tick"], fields["packets"])
            return "answer", {**answer, "received_at": job.arrived_wall, "queued_s": job.started - job.arrived}
        if job.kind == "verdict":
            return "verdict", {"first_non_finite": session.cloud.verdict()}
        return "closed", {"session": session.id, "ticks": session.ticks}

    def finished_job(self, job: Job, done: Any) -> None:
        """(In the loop.) Account for the job, answer the edge, start the next jobs."""
        self.running -= 1
        session = job.session
        session.busy = False
        buffers, seconds = done.result()
        if job.kind == "tick":
            session.ticks += 1
            session.busy_s += seconds
            session.edge.record.ticks += 1
            self.ticks += 1
            self.busy_s += seconds
            self.waits.append(job.started - job.arrived)
        if session.edge.connected and not session.closed:
            self.send_buffers(session.edge, buffers, job)
        if job.kind == "close" and not session.closed:
            self.end_session(session, "closed by the edge")
            self.closed += 1
        if job.kind == "open" and session.cloud is not None:
            self.opened += 1
        self.run_jobs()

    # --- answers --------------------------------------------------------------------------------

    def send(self, edge: Edge, kind: str, fields: dict[str, Any]) -> None:
        self.send_buffers(edge, encode(kind, fields), None)

    def send_buffers(self, edge: Edge, buffers: list[Any], job: Job | None) -> None:
        edge.outbox.put_nowait((buffers, time.monotonic(), job))

    async def write_loop(self, edge: Edge) -> None:
        try:
            while True:
                buffers, queued_at, job = await edge.outbox.get()
                try:
                    await edge.pacer.write(edge.writer, buffers, queued_at)
                finally:
                    edge.outbox.task_done()
                edge.record.bytes_out += message_size(buffers)
                if job is not None and job.kind == "tick":
                    self.latencies.append(time.monotonic() - job.arrived)
        except (ConnectionError, OSError, ssl.SSLError, RuntimeError):
            edge.connected = False
            while not edge.outbox.empty():  # nothing more can be written: release the waiters
                edge.outbox.get_nowait()
                edge.outbox.task_done()

    # --- leaving ----------------------------------------------------------------------------------

    def free(self, edge: Edge, reason: str) -> None:
        """The edge is gone: its queued jobs dropped, its sessions freed (a running job finishes
        first and its answer is dropped)."""
        if not edge.connected and self.edges.get(edge.id) is not edge:
            return
        edge.connected = False
        edge.record.connected = False
        edge.record.last_reason = reason
        if self.edges.get(edge.id) is edge:
            del self.edges[edge.id]
        sessions = [s for s in edge.sessions.values() if not s.closed]
        for session in sessions:
            self.scheduler.forget(session)
            self.end_session(session, f"edge gone: {reason}")
            self.freed += 1
        log.info("edge %s left (%s); %d session(s) freed", edge.id, reason, len(sessions))
        self.write_stats(force=True)

    def end_session(self, session: Session, reason: str) -> None:
        session.closed = True
        session.cloud = None  # the strategy, its student, optimiser and buffer go with it
        session.edge.sessions.pop(session.id, None)
        self.finished.append({"edge": session.edge.id, "session": session.id, "method": session.method, "ticks": session.ticks,
                              "busy_s": session.busy_s, "seconds": time.monotonic() - session.opened, "ended": reason})
        self.write_stats()

    # --- statistics -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        serving = now - self.first_job if self.first_job else 0.0
        return {
            "pid": os.getpid(), "cema_version": __version__, "uptime_s": now - self.started, "device": self.options.device,
            "threads": torch.get_num_threads(), "capacity": self.options.capacity, "scheduler": self.options.scheduler,
            "foundation": self.options.foundation, "max_edges": self.options.max_edges,
            "edges_connected": len(self.edges), "sessions_held": sum(len(e.sessions) for e in self.edges.values()),
            "sessions_opened": self.opened, "sessions_closed": self.closed, "sessions_freed": self.freed, "ticks": self.ticks,
            "utilisation": self.busy_s / (self.options.capacity * serving) if serving else 0.0,
            "busy_s": self.busy_s, "queue_wait_s": summary(self.waits), "request_latency_s": summary(self.latencies),
            "refused": dict(self.refused), "edges": {k: vars(v) for k, v in self.records.items()},
            "sessions": list(self.finished), **memory(),
        }

    def write_stats(self, force: bool = False) -> None:
        if not self.options.out or (not force and time.monotonic() - self.stats_written < 1.0):
            return
        self.stats_written = time.monotonic()
        write_atomic(Path(self.options.out) / "server.json", json.dumps(self.snapshot(), indent=1))

    async def periodic_stats(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.write_stats(force=True)

    # --- running ----------------------------------------------------------------------------------

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self.loop.add_signal_handler(sig, stop.set)
        server = await asyncio.start_server(self.handle, self.options.host, self.options.port, ssl=tls_context(self.options),
                                            limit=2**20, reuse_address=True)
        port = server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d (capacity %d, scheduler %s, device %s, %s)", self.options.host, port, self.options.capacity,
                 self.options.scheduler, self.options.device, "TLS" if self.options.tls_cert else "no TLS")
        if self.options.ready_file:
            write_atomic(Path(self.options.ready_file), json.dumps({"host": self.options.host, "port": port, "pid": os.getpid()}))
        stats = self.loop.create_task(self.periodic_stats())
        async with server:
            await stop.wait()
        stats.cancel()
        for edge in list(self.edges.values()):
            edge.writer.close()
            self.free(edge, "server stopped")
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.write_stats(force=True)
        log.info("stopped")


def downlink_pacer(request: Any, options: ServeOptions) -> Pacer | None:
    """The pacer of an edge's answers: the server's own --shape, else what the edge asked for
    (its link's rate and half its round trip); None for a malformed request."""
    if not isinstance(request, dict):
        return None
    bps, delay = request.get("bps") or 0, request.get("delay_s") or 0
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in (bps, delay)) or delay > 60:
        return None
    rate = options.shape_down_bps or bps
    return Pacer(TokenBucket(rate) if rate else None, float(delay))


def tls_context(options: ServeOptions) -> ssl.SSLContext | None:
    if not options.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key)
    except (OSError, ssl.SSLError) as error:
        raise CemaError(f"--tls-cert {options.tls_cert} / --tls-key {options.tls_key}: cannot load them ({error}); "
                        "give a PEM certificate and its private key.") from None
    return context


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def serve(options: ServeOptions) -> None:
    """Run the server until SIGTERM or Ctrl-C."""
    tls_context(options)  # a bad certificate is refused before anything listens
    token = options.token or os.environ.get(TOKEN_ENV) or ""
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"token: {token}  (give it to each edge: --link-token or ${TOKEN_ENV})", file=sys.stderr, flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(options.threads)
    if options.out:
        Path(options.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(CloudServer(options, token).serve())
