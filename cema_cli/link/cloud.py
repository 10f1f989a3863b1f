"""The cloud half of a real link, on the server.

A session rebuilds one edge's strategy exactly as the edge built it (the same configuration,
seed and source models, checked by a digest of the edge model's weights) and runs only its
cloud turn (CloudEdgeStrategy.cloud_phase), fed with the packets that crossed the wire. What the
cloud sends down is captured and returned to the edge, which puts it through its own channel:
budgets, delays and the sync clock stay on the edge, so a lockstep run keeps every count of the
simulated one. The edge builds the same strategy and never runs its cloud half.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from cema_cli.config import RunConfig
from cema_cli.errors import CemaError
from cema_cli.link.channel import Channel, Packet
from cema_cli.link.wire import WireError, state_digest
from cema_cli.run.api import Events, Session, methods_for, new_strategy, open_session
from cema_cli.run.engine import first_non_finite
from cema_cli.run.fleet import adopt
from cema_cli.run.sweep import config_from_dict
from cema_cli.strategies.base import WorkCounts
from cema_cli.strategies.cema import CEMA
from cema_cli.strategies.common import CloudEdgeStrategy

CACHED_RUNS = 4  # run sessions (dataset, source models, EATA's Fisher) kept for the next edge


class CloudInbox:
    """The uplink as the cloud half sees it: the packets that crossed the wire for this tick."""

    def __init__(self) -> None:
        self.arrived: list[Packet] = []

    def receive(self) -> list[Packet]:
        arrived, self.arrived = self.arrived, []
        return arrived


class CloudOutbox:
    """The downlink as the cloud half sees it: every ``send`` is kept, to be returned to the edge."""

    def __init__(self) -> None:
        self.sends: list[dict[str, Any]] = []

    def send(self, payloads: Any, nbytes: Any, priorities: Any = None, control: Any = False) -> None:
        self.sends.append({"payloads": list(payloads), "nbytes": [int(n) for n in nbytes],
                           "priorities": None if priorities is None else [float(p) for p in priorities],
                           "control": control if isinstance(control, bool) else list(control)})

    def take(self) -> list[dict[str, Any]]:
        sends, self.sends = self.sends, []
        return sends


class CloudChannel:
    """The channel of a cloud half on the server: the edge's tick, its inbox and outbox."""

    sync_due = Channel.sync_due  # the very rule of the simulated channel

    def __init__(self, config: Any) -> None:
        self.config, self.now = config, 0
        self.uplink, self.downlink = CloudInbox(), CloudOutbox()


@dataclass(frozen=True)
class SessionSpec:
    """What an edge's ``open`` message asks for: one method of its run, at a generation (the
    how-many-th build of that method's models in the edge's run), from the edge's weights."""

    config: RunConfig
    method: str
    generation: int
    edge_digest: str

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> "SessionSpec":
        try:
            config = config_from_dict(dict(data["config"]))
            spec = cls(replace(config, methods=(str(data["method"]),)), str(data["method"]), int(data["generation"]),
                       str(data["edge_digest"]))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise WireError(f"malformed open message ({type(error).__name__}: {error})") from None
        spec.config.validate()
        return spec


def packets_from(entries: Any) -> list[Packet]:
    """The wire's packet entries as the channel's packets (types checked: a WireError otherwise)."""
    if not isinstance(entries, list):
        raise WireError("malformed tick (packets is not a list)")
    try:
        return [Packet(e["payload"], int(e["nbytes"]), float(e["priority"]), int(e["sent_tick"]), int(e["sequence"]),
                       bool(e["control"])) for e in entries]
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"malformed packet ({type(error).__name__}: {error})") from None


def on_device(value: Any, device: Any) -> Any:
    """A payload's tensors on the cloud's device (the wire delivers them on the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(on_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: on_device(v, device) for k, v in value.items()}
    return value


class CloudSession:
    """One edge's cloud half: its strategy (student, optimiser, replay buffer...), ticked by the
    edge. ``shared`` holds the locks of the parts it shares with other sessions (the foundation)."""

    def __init__(self, strategy: CloudEdgeStrategy, channel: CloudChannel, spec: SessionSpec, locks: list[threading.Lock]) -> None:
        self.strategy, self.channel, self.spec, self.locks = strategy, channel, spec, locks
        self.ticks = 0

    def turn(self, tick: int, packets: list[Packet]) -> dict[str, Any]:
        """The cloud's turn at the edge's ``tick``: learn on what arrived, sync if due; return the
        downlink sends and the cloud's counters (the edge's row reports them)."""
        self.channel.now = tick
        device = self.strategy.context.device
        self.channel.uplink.arrived = [replace(p, payload=on_device(p.payload, device)) for p in packets]
        for lock in self.locks:
            lock.acquire()
        try:
            self.strategy.cloud_phase(self.strategy.arrived_images())
        finally:
            for lock in reversed(self.locks):
                lock.release()
        self.ticks += 1
        return {"tick": tick, "sends": self.channel.downlink.take(), **self.counters()}

    def counters(self) -> dict[str, Any]:
        meter = self.strategy.context.cloud_meter
        return {"work": {f.name: getattr(self.strategy.work, f.name) for f in fields(WorkCounts)},
                "meter": {"forward_gflops": meter.forward_gflops, "backward_gflops": meter.backward_gflops,
                          "seconds": meter.seconds}}

    def verdict(self) -> str | None:
        """The first non-finite parameter of the cloud's models (the engine's check, cloud side)."""
        return first_non_finite({"cloud": self.strategy.cloud_edge_model()})


class CloudBuilder:
    """Builds sessions: the run's dataset and source models are loaded once per run
    configuration and kept for the next session (at most CACHED_RUNS runs); CEMA's foundation is
    shared by the sessions of the same run and generation (``foundation="shared"``, as the
    simulated fleet), or each session's own."""

    def __init__(self, device: str, foundation: str = "shared") -> None:
        self.device, self.foundation = device, foundation
        self.runs: OrderedDict[str, tuple[Session, str]] = OrderedDict()
        self.owners: weakref.WeakValueDictionary[Any, CloudEdgeStrategy] = weakref.WeakValueDictionary()
        self.part_locks: dict[Any, threading.Lock] = {}
        self.lock = threading.Lock()  # builds seed the global generator: one at a time

    def build(self, spec: SessionSpec) -> CloudSession:
        with self.lock:
            session, digest = self.run_session(spec.config)
            if digest != spec.edge_digest:
                raise CemaError(f"the edge's {session.edge_name} weights (digest {spec.edge_digest[:12]}) differ from the "
                                f"server's (digest {digest[:12]}); give both sides the same weights (--edge-checkpoint).")
            strategy_cls, method_config = methods_for(session)[spec.method]
            channel = CloudChannel(session.config.channel)
            strategy, _ = new_strategy(session, strategy_cls, method_config, channel)
            if not isinstance(strategy, CloudEdgeStrategy):
                raise CemaError(f"method {spec.method!r} has no cloud half here (its placement runs it on the edge).")
            return CloudSession(strategy, channel, spec, self.share(strategy, spec))

    def run_session(self, config: RunConfig) -> tuple[Session, str]:
        """The run's session (dataset, source models) on the server's device, for this spec's
        config, and the digest of its edge model's weights."""
        config = replace(config, device=self.device)
        key = repr(replace(config, methods=(), method_options={}))
        if key not in self.runs:
            session = open_session(config, Events())
            if session.cloud_name:
                session.cloud_model()  # loaded once here, so that every session of the run shares the source
            self.runs[key] = (session, state_digest(session.edge_source))
            while len(self.runs) > CACHED_RUNS:
                self.runs.popitem(last=False)
        self.runs.move_to_end(key)
        session, digest = self.runs[key]
        return replace(session, config=config), digest

    def share(self, strategy: CloudEdgeStrategy, spec: SessionSpec) -> list[threading.Lock]:
        """Adopt the shared foundation of the session's run and generation; the lock its steps hold."""
        if self.foundation != "shared" or not isinstance(strategy, CEMA):
            return []
        key = (repr(spec.config), spec.method, spec.generation)
        owner = self.owners.setdefault(key, strategy)
        if owner is not strategy:
            adopt(strategy, owner, "foundation")
        return [self.part_locks.setdefault(key, threading.Lock())]
