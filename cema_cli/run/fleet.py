"""A fleet of edges sharing one cloud (issue 12, section 2): one process, one global tick, deterministic.

Every edge has its own stream, its own Channel (link budgets and delays) and its own edge model;
each plays its legs through the engine's loop (api.play_leg), one batch per global tick. At a
tick, every edge that still has batches runs its edge half (predict, select, upload); then the
cloud receives what arrived on every uplink, schedules cloud steps, learns, and sends parameters
down each edge's link at its syncs; then each edge loads what arrived and its channel ticks. A
lone edge's CloudEdgeStrategy.step is exactly this with N = 1, so a fleet of one reproduces a
single-edge run.

The cloud (cloud-placed methods: CEMA, Tent, ETA, EATA; others keep per-edge cloud copies):

- batching ``per-edge``: a cloud job is one edge's uploads that arrived at one tick, learnt by that
  edge's cloud half (domains never mixed); ``pooled``: the union of every edge's arrivals of a
  tick, learnt by one cloud (the naive fleet, which mixes domains in BN statistics).
- student ``per-edge``: one cloud copy of the edge model per edge; ``shared``: one, trained on every
  edge's uploads and sent to every edge (downlink bytes counted per recipient). For Tent/ETA/EATA
  the cloud model is the student.
- foundation (CEMA) ``shared``: one foundation model adapts on every edge's uploads; ``per-edge``:
  one copy per edge (an ablation).
- capacity: at most ``cloud_capacity`` cloud steps per tick (a step = one job learnt, or one
  replay-only step of an edge without a job); jobs wait in a queue ordered by the scheduler
  (``round-robin`` over edges, ``fifo`` by arrival, ``lowest-entropy-first`` by the job's mean
  upload entropy). An edge whose jobs wait receives the parameters they produce later: the
  summary's ``mean_queue_wait_ticks`` (ticks from arrival to learning) follows from the cloud's
  load, on top of the link's parameter age (``mean_staleness_batches``, the rows' param_delay_batches).

Edge-placed methods (bn, source, lame, t3a, tent/eata with placement edge, ...) and the cloud-placed
methods with their own packet formats (CoTTA, RoTTA, SAR, DeYO: one cloud copy per edge, outside
the capacity) run as independent edges on the same tick.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import torch

from cema_cli.run.api import (
    Events, Live, Session, check_method_options, methods_for, model_options, new_strategy, open_session, play_leg,
)
from cema_cli.config import RunConfig
from cema_cli.data.streams import Leg, plan_stream
from cema_cli.errors import CemaError
from cema_cli.run.assumptions import resolved_channel
from cema_cli.run.fleet_config import FleetConfig, edge_configs
from cema_cli.strategies.base import Strategy
from cema_cli.strategies.cema import CEMA
from cema_cli.strategies.common import CloudEdgeStrategy
from cema_cli.strategies.tent import BatchStatsCloudEdge


# Cloud halves the fleet's cloud runs: they keep CloudEdgeStrategy's packets and step. Other
# cloud-placed methods (CoTTA, RoTTA, SAR, DeYO) carry their own packets: each edge keeps its own
# cloud copy and steps alone, outside the capacity.
FLEET_CLOUD = (CEMA, BatchStatsCloudEdge)


@dataclass
class Job:
    """Uploads of one edge (``edge`` -1: of every edge, pooled) that arrived at the cloud at ``tick``."""

    edge: int
    images: torch.Tensor
    tick: int
    entropy: float  # mean entropy of the uploads (their uplink priority)
    sequence: int


class CloudQueue:
    """The cloud's queue of jobs and the scheduler that picks at most ``capacity`` per tick."""

    def __init__(self, capacity: int | None, scheduler: str) -> None:
        self.capacity, self.scheduler = capacity, scheduler
        self.jobs: list[Job] = []
        self.pointer = 0  # round-robin: the edge served next, or the first after it with a job
        self.sequence = 0

    def add(self, edge: int, images: torch.Tensor, tick: int, entropy: float) -> None:
        self.jobs.append(Job(edge, images, tick, entropy, self.sequence))
        self.sequence += 1

    def drop_edge(self, edge: int) -> None:
        """An edge's models were reset (a new leg of reset-each-shift): its waiting uploads go."""
        self.jobs = [j for j in self.jobs if j.edge != edge]

    def pick(self, limit: int | None = None) -> list[Job]:
        """The jobs served this tick (at most ``limit`` more), in the order they are learnt;
        removed from the queue."""
        count = len(self.jobs) if self.capacity is None else min(self.capacity, len(self.jobs))
        count = count if limit is None else min(count, limit)
        if self.scheduler == "fifo":
            chosen = self.jobs[:count]
        elif self.scheduler == "lowest-entropy-first":
            chosen = sorted(self.jobs, key=lambda j: (j.entropy, j.sequence))[:count]
        else:
            chosen = self.round_robin(count)
        served = {id(j) for j in chosen}
        self.jobs = [j for j in self.jobs if id(j) not in served]
        return chosen

    def round_robin(self, count: int) -> list[Job]:
        """One job (the oldest) per edge in turn, starting at the pointer."""
        waiting, chosen = list(self.jobs), []
        while len(chosen) < count:
            edges = sorted({j.edge for j in waiting})
            edge = next((e for e in edges if e >= self.pointer), edges[0])
            job = next(j for j in waiting if j.edge == edge)
            waiting.remove(job)
            chosen.append(job)
            self.pointer = edge + 1
        return chosen


class ComputeCredit:
    """A cloud compute budget in counted GFLOPs per tick (``--cloud-gflops-per-tick``): each tick
    adds the budget to the credit, unused credit is not banked beyond one tick's budget, and a
    step may start while the credit is positive. A step's GFLOPs are known only once it has run
    (cloud_meter.py counts them), so the last step of a tick may overdraw the credit; the debt
    delays the next ticks' steps, so over the run the cloud never spends more than the budget
    allows by more than one step."""

    def __init__(self, gflops_per_tick: float | None) -> None:
        self.budget = gflops_per_tick
        self.credit = 0.0

    def new_tick(self) -> None:
        if self.budget is not None:
            self.credit = min(self.credit, 0.0) + self.budget

    def allows_a_step(self) -> bool:
        return self.budget is None or self.credit > 0

    def spend(self, gflops: float) -> None:
        self.credit -= gflops


@dataclass
class CloudStats:
    """What the cloud did over the run: steps per tick, queue lengths, bytes received and sent."""

    steps_per_tick: list[int] = field(default_factory=list)
    gflops_per_tick: list[float] = field(default_factory=list)  # counted GFLOPs of the fleet cloud's steps
    largest_step_gflops: float = 0.0
    queue_per_tick: list[int] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)  # per job served: ticks it waited in the queue
    uplink_bytes_received: int = 0
    downlink_bytes_sent: int = 0

    @property
    def ticks(self) -> int:
        return len(self.steps_per_tick)


@dataclass
class FleetEdge:
    """One edge of the fleet: its session (config, stream, edge model), legs and running state."""

    index: int
    session: Session
    legs: list[Leg]
    live: Live | None = None
    generation: int = -1  # how many times its models were built (reset-each-shift builds one per leg)
    steps: Generator[None, None, None] | None = None

    @property
    def strategy(self) -> Strategy:
        assert self.live is not None
        return self.live.strategy

    @property
    def on_cloud(self) -> bool:
        """Whether the fleet's cloud runs this edge's cloud half (else the edge steps alone)."""
        return isinstance(self.strategy, FLEET_CLOUD)


def shared_parts(strategy: Strategy, fleet: FleetConfig, method: str) -> tuple[str, ...]:
    """Which parts of ``strategy``'s cloud half the fleet shares between edges."""
    if not isinstance(strategy, CloudEdgeStrategy):
        return ()
    if isinstance(strategy, CEMA):
        if fleet.cloud_batching == "pooled":
            return ("cloud",)
        return tuple(p for p, policy in (("foundation", fleet.foundation), ("student", fleet.student)) if policy == "shared")
    if fleet.cloud_batching == "pooled" or fleet.student == "shared":
        if not isinstance(strategy, BatchStatsCloudEdge):
            raise CemaError(f"method {method!r} keeps one cloud copy per edge in a fleet; --student shared and --cloud-batching pooled "
                            "apply to cema, tent, eta and eata. Run it with --student per-edge --cloud-batching per-edge.")
        return ("student",)
    return ()


def adopt(target: Strategy, source: Strategy, part: str) -> None:
    """``target`` uses ``source``'s cloud part (the same model and optimiser objects) from now on."""
    if part == "cloud":
        target.cloud = source.cloud  # type: ignore[attr-defined]  # CEMA pooled: one queue, buffer, foundation and student
    elif part == "foundation":
        target.cloud.foundation, target.cloud.foundation_opt = source.cloud.foundation, source.cloud.foundation_opt  # type: ignore[attr-defined]
    elif isinstance(target, CEMA):
        target.cloud.student, target.cloud.student_opt = source.cloud.student, source.cloud.student_opt  # type: ignore[attr-defined]
    else:  # Tent / ETA / EATA: the cloud model, its trained parameters and its optimiser (or EATA's learner)
        target.cloud, target.cloud_params = source.cloud, source.cloud_params  # type: ignore[attr-defined]
        for name in ("optimizer", "learner"):
            if hasattr(source, name):
                setattr(target, name, getattr(source, name))


class Fleet:
    """One method on every edge of the fleet, tick by tick; ``run`` returns the rows."""

    def __init__(self, edges: list[FleetEdge], method: str, strategy_cls: type, method_config: Any, fleet: FleetConfig,
                 on_row: Any) -> None:
        self.edges, self.method, self.strategy_cls, self.method_config = edges, method, strategy_cls, method_config
        self.fleet, self.on_row = fleet, on_row
        self.queue = CloudQueue(fleet.cloud_capacity, fleet.scheduler)
        self.credit = ComputeCredit(fleet.cloud_gflops_per_tick)
        self.stats = CloudStats()
        self.owners: dict[tuple[str, int], Strategy] = {}  # (shared part, generation) -> the strategy holding it
        self.rows: list[dict[str, Any]] = []

    def run(self) -> list[dict[str, Any]]:
        for edge in self.edges:
            edge.steps = self.edge_steps(edge)
        active = list(self.edges)
        tick = 0
        while active:
            active = [edge for edge in active if self.advance(edge)]
            if active:
                self.cloud_tick(active, tick)
                tick += 1
        return self.rows

    @staticmethod
    def advance(edge: FleetEdge) -> bool:
        """Run the edge up to the end of its next edge half; False once its stream has ended."""
        try:
            next(edge.steps)  # type: ignore[arg-type]
            return True
        except StopIteration:
            return False

    def edge_steps(self, edge: FleetEdge) -> Generator[None, None, None]:
        """The edge's legs, as run_benchmark plays them for one method, one batch per tick."""
        for leg in edge.legs:
            if leg.reset or edge.live is None:
                self.build(edge)
            step = edge.strategy.edge_phase if edge.on_cloud else edge.strategy.step  # type: ignore[attr-defined]
            rows = yield from play_leg(edge.session, self.method, self.method_config, edge.live, leg, step)  # type: ignore[arg-type]
            for row in rows:
                row = {**row, "edge": edge.index}
                self.rows.append(row)
                self.on_row(row)

    def build(self, edge: FleetEdge) -> None:
        """Fresh models for the edge; the shared cloud parts of its generation are adopted."""
        strategy, channel = new_strategy(edge.session, self.strategy_cls, self.method_config)
        edge.live, edge.generation = Live(strategy, channel, None), edge.generation + 1
        self.queue.drop_edge(edge.index)
        for part in shared_parts(strategy, self.fleet, self.method):
            owner = self.owners.setdefault((part, edge.generation), strategy)
            if owner is not strategy:
                adopt(strategy, owner, part)

    def cloud_tick(self, stepped: list[FleetEdge], tick: int) -> None:
        """The cloud's turn at ``tick``: receive, learn within capacity, sync, then the edges load."""
        edges = [e for e in stepped if e.on_cloud]
        if not edges:
            return
        self.receive(edges, tick)
        changed = self.learn(edges)
        shared = self.fleet.cloud_batching == "pooled" or self.fleet.student == "shared"
        for edge in edges:
            strategy: Any = edge.strategy
            strategy.unsent_update |= (bool(changed) if shared else edge.index in changed)
            before = edge.live.channel.downlink.stats.sent_bytes  # type: ignore[union-attr]
            strategy.sync_if_due()
            self.stats.downlink_bytes_sent += edge.live.channel.downlink.stats.sent_bytes - before  # type: ignore[union-attr]
        for edge in edges:
            edge.strategy.apply_parameters()  # type: ignore[attr-defined]

    def receive(self, edges: list[FleetEdge], tick: int) -> None:
        """What arrived on every uplink enters the queue: one job per edge, or one pooled job."""
        arrived = []
        for edge in edges:
            packets = edge.live.channel.uplink.receive()  # type: ignore[union-attr]
            self.stats.uplink_bytes_received += sum(p.nbytes for p in packets)
            images = edge.strategy.images_of(packets)  # type: ignore[attr-defined]
            if images is not None:
                priorities = [p.priority for p in packets if not p.control]
                arrived.append((edge.index, images, sum(priorities) / len(priorities)))
        if self.fleet.cloud_batching == "pooled" and arrived:
            images = torch.cat([a[1] for a in arrived])
            entropy = sum(a[2] * len(a[1]) for a in arrived) / len(images)
            arrived = [(-1, images, entropy)]
        for index, images, entropy in arrived:
            self.queue.add(index, images, tick, entropy)

    def learn(self, edges: list[FleetEdge]) -> set[int]:
        """Serve the scheduled jobs, then replay-only steps of idle edges while capacity lasts;
        return the edges whose cloud copy changed (-1: the pooled cloud)."""
        by_index = {e.index: e for e in self.edges}
        pooled = self.fleet.cloud_batching == "pooled"
        changed: set[int] = set()
        served: set[int] = set()
        self.credit.new_tick()
        steps, gflops = 0, 0.0
        while self.queue.jobs and self.credit.allows_a_step() and (self.queue.capacity is None or steps < self.queue.capacity):
            job, = self.queue.pick(1)  # one at a time: the credit is known only after each step
            self.stats.waits.append(self.stats.ticks - job.tick)
            learner: Any = edges[0].strategy if pooled else by_index[job.edge].strategy
            learnt, spent = metered_learn(learner, job.images, self.edges[0].session.autocast)
            changed |= {job.edge} if learnt else set()
            served.add(job.edge)
            steps, gflops = steps + 1, gflops + spent
            self.spend(spent)
        idle = [] if pooled and served else ([edges[0]] if pooled else [e for e in edges if e.index not in served])
        for edge in idle:
            if (self.queue.capacity is not None and steps >= self.queue.capacity) or not self.credit.allows_a_step():
                break
            learnt, spent = metered_learn(edge.strategy, None, edge.session.autocast)  # e.g. CEMA's replay-only distillation
            self.spend(spent)
            gflops += spent
            if learnt:
                changed.add(-1 if pooled else edge.index)
                steps += 1
        self.stats.steps_per_tick.append(steps)
        self.stats.gflops_per_tick.append(gflops)
        self.stats.queue_per_tick.append(len(self.queue.jobs))
        return changed


    def spend(self, gflops: float) -> None:
        self.credit.spend(gflops)
        self.stats.largest_step_gflops = max(self.stats.largest_step_gflops, gflops)


def metered_learn(strategy: Any, images: torch.Tensor | None, autocast: Any = None) -> tuple[bool, float]:
    """The cloud's learning on a job, timed and counted by the learner's meter (cloud_meter.py),
    under the run's --amp autocast as a lone edge's cloud half runs: whether the cloud copy
    changed, and the counted GFLOPs it took."""
    meter = strategy.context.cloud_meter
    before = meter.gflops
    with meter, autocast() if autocast is not None else contextlib.nullcontext():
        changed = strategy.learn(images)
    return changed, meter.gflops - before


# --- running fleets from a RunConfig -----------------------------------------------------------

def edge_sessions(base: RunConfig, fleet: FleetConfig, events: Events) -> list[Session]:
    """One Session per edge: the dataset, cloud source and cache shared; config, events and (when
    the edge names its own) edge model its own; each edge's `native` uplink encoding resolved as
    a single run's is."""
    configs = edge_configs(base, fleet)
    first = open_session(configs[0], edge_events(events, 0))
    sessions = []
    for index, config in enumerate(configs):
        session = dataclasses.replace(first, config=resolved_channel(config, first.dataset), events=edge_events(events, index))
        if (config.edge, config.edge_checkpoint) != (configs[0].edge, configs[0].edge_checkpoint):
            session = with_edge_model(session, index)
        sessions.append(session)
    return sessions


def with_edge_model(session: Session, index: int) -> Session:
    """The session with the edge model its config names, refused when its classes are not the dataset's."""
    from cema_cli.models import load_model

    config, dataset = session.config, session.dataset
    name = config.edge or dataset.default_edge
    torch.manual_seed(config.seed)
    try:
        model = load_model(name, session.events.on_model_progress, model_options(config, dataset)[0])
    except CemaError as error:
        raise CemaError(f"edge {index}: {error}") from None
    return dataclasses.replace(session, edge_name=name, edge_source=model)


def check_classes(sessions: list[Session]) -> None:
    """Every edge model predicts the dataset's classes (one forward pass of a clean image)."""
    for index, session in enumerate(sessions):
        dataset = session.dataset
        wanted = getattr(dataset, "model_classes", dataset.num_classes)
        image = dataset.clean_samples(1, session.config.seed)[:1]
        if len(image) == 0:  # no clean images to try: the loader's shape check stands alone
            continue
        with torch.no_grad():
            got = session.edge_source(image).shape[1]
        if got != wanted:
            raise CemaError(f"edge {index}: its model {session.edge_name} predicts {got} classes but dataset "
                            f"{session.config.dataset!r} has {wanted}; give that edge a model trained on this dataset.")


def edge_events(events: Events, index: int) -> Events:
    """The run's callbacks, with each batch record naming its edge; domain starts shown for edge 0."""
    return Events(on_row=lambda row: None, on_batch=lambda record: events.on_batch({**record, "edge": index}),
                  on_domain_start=events.on_domain_start if index == 0 else (lambda *args: None),
                  on_model_progress=events.on_model_progress)


@dataclass
class FleetResult:
    """The fleet's rows, each edge's rows when run alone (``independent``), and one summary per method."""

    rows: list[dict[str, Any]]
    independent: list[dict[str, Any]]
    summary: list[dict[str, Any]]


def run_fleet(base: RunConfig, fleet: FleetConfig, events: Events | None = None) -> FleetResult:
    """Every method of ``base`` as a fleet, and (``fleet.independent``) each edge alone."""
    base.validate()
    fleet.validate()
    check_method_options(base)
    events = events or Events()
    if base.window is not None:
        raise CemaError("--window (MD's single-sample window) is not supported in a fleet; drop --window or --edges.")
    sessions = edge_sessions(base, fleet, events)
    check_classes(sessions)
    methods = methods_for(sessions[0])
    legs = [plan_stream(s.config, s.dataset) for s in sessions]
    rows, alone, summary = [], [], []
    for method, (strategy_cls, method_config) in methods.items():
        played = Fleet([FleetEdge(i, s, legs[i]) for i, s in enumerate(sessions)], method, strategy_cls, method_config, fleet,
                       events.on_row)
        mine = played.run()
        rows.extend(mine)
        on_cloud = any(e.on_cloud for e in played.edges)
        solo: list[dict[str, Any]] = []
        if fleet.independent and on_cloud:
            for i, session in enumerate(sessions):
                one = Fleet([FleetEdge(i, session, legs[i])], method, strategy_cls, method_config, fleet.alone(i), lambda row: None)
                solo.extend(one.run())
        elif fleet.independent:
            solo = [dict(r) for r in mine]  # edge-placed: every edge already runs alone
        alone.extend(solo)
        summary.append(fleet_summary(method, fleet, mine, solo, played.stats))
    return FleetResult(rows, alone, summary)


def edge_accuracy(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Each edge's accuracy over all its rows (correct / samples)."""
    totals: dict[int, list[int]] = {}
    for row in rows:
        t = totals.setdefault(row["edge"], [0, 0])
        t[0] += row["correct"]
        t[1] += row["samples"]
    return {edge: c / n if n else 0.0 for edge, (c, n) in sorted(totals.items())}


def fleet_summary(method: str, fleet: FleetConfig, rows: list[dict[str, Any]], solo: list[dict[str, Any]],
                  stats: CloudStats) -> dict[str, Any]:
    """One line of fleet.csv: accuracy (mean and worst edge), bytes each way, cloud load, staleness,
    compute counts, and the collaboration gain over the edges run alone."""
    accuracy = edge_accuracy(rows)
    mean = sum(accuracy.values()) / len(accuracy)
    alone = edge_accuracy(solo) if solo else {}
    alone_mean = sum(alone.values()) / len(alone) if alone else None
    samples = sum(r["samples"] for r in rows)
    steps, ticks = sum(stats.steps_per_tick), stats.ticks
    total = {k: sum(r[k] for r in rows) for k in ("uplink_bytes", "downlink_bytes", "uploads", "edge_forward_samples",
                                                  "cloud_forward_samples", "cloud_backward_samples")}
    return {
        "method": method, "edges": fleet.size, "cloud_batching": fleet.cloud_batching, "student": fleet.student,
        "foundation": fleet.foundation, "cloud_capacity": fleet.cloud_capacity if fleet.cloud_capacity is not None else "unlimited",
        "scheduler": fleet.scheduler, "samples": samples,
        "mean_accuracy": mean, "worst_edge_accuracy": min(accuracy.values()),
        "edge_accuracies": " ".join(f"{a:.4f}" for a in accuracy.values()),
        "independent_mean_accuracy": alone_mean, "collaboration_gain": mean - alone_mean if alone_mean is not None else None,
        **total,
        "cloud_uplink_bytes_received": stats.uplink_bytes_received, "cloud_downlink_bytes_sent": stats.downlink_bytes_sent,
        "ticks": ticks, "cloud_steps": steps, "cloud_steps_per_tick": steps / ticks if ticks else 0.0,
        "peak_cloud_steps_per_tick": max(stats.steps_per_tick, default=0),
        "cloud_gflops_per_tick_budget": fleet.cloud_gflops_per_tick if fleet.cloud_gflops_per_tick is not None else "unlimited",
        "fleet_cloud_gflops": sum(stats.gflops_per_tick), "largest_cloud_step_gflops": stats.largest_step_gflops,
        "cloud_utilisation": steps / (fleet.cloud_capacity * ticks) if fleet.cloud_capacity and ticks else None,
        "longest_queue": max(stats.queue_per_tick, default=0), "final_queue": stats.queue_per_tick[-1] if stats.queue_per_tick else 0,
        "mean_queue_wait_ticks": sum(stats.waits) / len(stats.waits) if stats.waits else 0.0,
        "mean_staleness_batches": sum(r["param_delay_batches"] * r["samples"] for r in rows) / samples if samples else 0.0,
        "edge_gflops_per_sample": rows[0].get("edge_gflops_per_sample") if rows else None,
        "cloud_gflops_per_sample": rows[0].get("cloud_gflops_per_sample") if rows else None,
    }
