"""``run_benchmark(config) -> rows``: build the parts from the registries and run the engine.

No printing and no files here: callers receive rows and per-batch records through ``Events``
(run/events.py). A study (one run, cells or a fleet, with its files) is ``study.run_study``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import platform
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from cema_cli.link.channel import Channel, ComputeDelay
from cema_cli.link.cloud_meter import CloudMeter
from cema_cli.config import RunConfig
from cema_cli.link.costs import modelled_columns
from cema_cli.data import dataset_preset, open_dataset
from cema_cli.data.streams import Leg, MixedStream, plan_stream, segment_order_name
from cema_cli.run.assumptions import check_assumptions, resolved_channel
from cema_cli.run.engine import SlidingWindow, Tally, drain, run_stream, stream_steps
from cema_cli.run.events import Events
from cema_cli.run.provenance import provenance
from cema_cli.run.threads import loader_workers
from cema_cli.errors import CemaError
from cema_cli.link.client import edge_link, link_columns, remote_counts
from cema_cli.link.options import LinkOptions
from cema_cli.models import ModelOptions, load_model, weights_source
from cema_cli.results.health import OK, degraded_status, references_for
from cema_cli.results.schema import SCHEMA_VERSION
from cema_cli.results.stats import wilson_interval
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import Strategy, StrategyContext, WorkCounts, make_config, placements_of
from cema_cli.strategies.common import CloudEdgeStrategy


@dataclass
class Session:
    """The parts shared by every (method, domain) of one run."""

    config: RunConfig
    device: torch.device
    dataset: Any
    edge_name: str
    cloud_name: str | None  # None: no cloud model (edge-only methods)
    edge_source: torch.nn.Module
    events: Events
    _cloud_source: torch.nn.Module | None = field(default=None, repr=False)
    cloud_options: ModelOptions = field(default_factory=ModelOptions)
    autocast: Callable[[], Any] | None = None  # --amp: a torch.autocast context factory
    cache: dict[Any, Any] = field(default_factory=dict)  # per-run results reused across domains (EATA's Fisher)
    link: Any = None  # link.client.EdgeLink: the cloud halves run across a real link (None: the simulated channel)

    @property
    def preset(self) -> str:
        """The published method settings in force: --preset, else the dataset's."""
        return self.config.preset or dataset_preset(self.dataset)

    def cloud_model(self) -> torch.nn.Module:
        """A fresh foundation model on the device; loaded on first use only."""
        if not self.cloud_name:
            raise CemaError(f"dataset {self.config.dataset!r} has no default cloud model; pass --cloud (e.g. timm:resnet50).")
        if self._cloud_source is None:
            torch.manual_seed(self.config.seed)  # --random-init weights follow the run's seed
            self._cloud_source = load_model(self.cloud_name, self.events.on_model_progress, self.cloud_options)
        return copy.deepcopy(self._cloud_source).to(self.device)


# What of the environment every row records (run.json records it all).
ROW_ENVIRONMENT = ("device", "cema_version", "git_commit", "git_dirty", "torch_version", "torchvision_version", "timm_version",
                   "numpy_version", "pillow_version", "opencv_version")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else mps, else cpu; an unavailable device is an error."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available[name]:
        raise CemaError(f"--device {name} is not available on this machine; use --device cpu or auto.")
    return torch.device(name)


def environment(device: torch.device) -> dict[str, str]:
    """Versions and hardware recorded in run.json and every result row."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        **provenance(),  # the git commit, and the versions of the libraries that compute the numbers
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": f"{device.type}:{name}",
    }


def run_benchmark(config: RunConfig, events: Events | None = None, inputs: Any = None,
                  link: LinkOptions | None = None) -> list[dict[str, Any]]:
    """Run every method on every domain of ``config``; return one result row per pair.
    ``inputs``: a sweep's shared read-only inputs (shared_inputs.CellInputs), else computed here.
    ``link``: a live link runs the cloud halves in a ``cema serve`` process (cema_cli/link)."""
    config.validate()
    check_method_options(config)
    events = events or Events()
    with edge_link(link, config, cloud_methods(method_configs(config, config.preset))) as live_link:
        session = open_session(config, events, inputs)  # meanwhile a local server starts
        session.link = live_link
        return play_methods(session, methods_for(session))


def play_methods(session: Session, methods: dict[str, tuple[type[Strategy], Any]]) -> list[dict[str, Any]]:
    """Every method on every leg of the stream, in the run's order; one row per (method, domain)."""
    live: dict[str, Live] = {}
    rows = []
    try:
        for leg in plan_stream(session.config, session.dataset):
            for method, (strategy_cls, method_config) in methods.items():
                if leg.reset or method not in live:
                    release(session, live.get(method))
                    live[method] = Live(*new_strategy(session, strategy_cls, method_config), new_window(session.config))
                    attach(session, live[method].strategy, method)
                for row in run_leg(session, method, method_config, live[method], leg):
                    session.events.on_row(row)
                    rows.append(row)
    finally:
        for state in live.values():
            release(session, state)
    return rows


def cloud_methods(methods: dict[str, tuple[type[Strategy], Any]]) -> list[str]:
    """The methods whose placement runs a cloud half."""
    return [m for m, (cls, cfg) in methods.items() if getattr(cfg, "placement", placements_of(cls)[0]) == "cloud"]


def attach(session: Session, strategy: Strategy, method: str) -> None:
    """Across a live link, the strategy's cloud half runs on the server (a session of its own)."""
    if session.link is not None and isinstance(strategy, CloudEdgeStrategy):
        session.link.attach(strategy, session.config, method, session.edge_source)


def release(session: Session, state: "Live | None") -> None:
    if session.link is not None and state is not None:
        session.link.release(state.strategy)


def methods_for(session: Session) -> dict[str, tuple[type[Strategy], Any]]:
    """Each method's strategy and final config for this session (the dataset's preset, the
    run's batch size and edge model), refused before anything runs if the session cannot run it."""
    methods = sized_for_run(method_configs(session.config, session.preset), session)
    check_assumptions(methods, session.dataset, session.edge_source, session.edge_name)
    check_single_samples(session, methods)
    require_cloud(session, methods)
    require_clean(session, methods)
    return methods


def check_method_options(config: RunConfig) -> None:
    """Refuse bad method options before the dataset and models load. The dataset's preset is not
    known yet, so this checks --preset's settings (else the defaults); run_benchmark rechecks."""
    method_configs(config, config.preset)


@dataclass
class Live:
    """A method's running state between legs: models, link, and the batch-size-1 window."""

    strategy: Strategy
    channel: Channel
    window: SlidingWindow | None


def new_window(config: RunConfig) -> SlidingWindow | None:
    return SlidingWindow(config.window) if config.window is not None else None


def check_single_samples(session: Session, methods: dict[str, tuple[type[Strategy], Any]]) -> None:
    """Batch size 1 with a BN edge model: batch statistics of one sample are meaningless
    (shared/spec/streams.md section 7.1); only MD's window (7.2) or a GN/LN model make it valid."""
    config = session.config
    if config.batch_size > 1 or (config.window or 1) > 1:
        return
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in session.edge_source.modules()):
        return
    refused = [m for m, (cls, _) in methods.items() if getattr(cls, "batch_statistics", True)]
    if refused:
        raise CemaError(f"--batch-size 1: {', '.join(refused)} would normalise one sample with its own BatchNorm statistics "
                        f"on {session.edge_name}; add --window L (L >= 2, MD's sliding window) or use a GroupNorm/LayerNorm model.")


def method_configs(config: RunConfig, preset: str) -> dict[str, tuple[type[Strategy], Any]]:
    """Each method's strategy and its config: defaults, the preset's published settings, then -o."""
    return {m: (STRATEGIES.get(m), make_config(STRATEGIES.get(m), config.method_options.get(m, {}), m, preset)) for m in config.methods}


def sized_for_run(methods: dict[str, tuple[type[Strategy], Any]], session: Session) -> dict[str, tuple[type[Strategy], Any]]:
    """Settings that follow the run's batch size and edge model (e.g. SAR's official lr rule):
    a config class opts in with ``for_run(batch_size, transformer, explicit_options)``."""
    transformer = is_transformer(session.edge_source)
    config = session.config
    return {m: (cls, cfg.for_run(config.batch_size, transformer, set(config.method_options.get(m, {})))
                if hasattr(cfg, "for_run") else cfg) for m, (cls, cfg) in methods.items()}


def is_transformer(model: torch.nn.Module) -> bool:
    """LayerNorm and no BatchNorm/GroupNorm: the ViT branch of SAR's lr rule (section 7.3)."""
    kinds = {type(m) for m in model.modules()}
    convolutional = any(issubclass(k, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)) for k in kinds)
    return not convolutional and any(issubclass(k, torch.nn.LayerNorm) for k in kinds)


def require_cloud(session: Session, methods: dict[str, tuple[type[Strategy], Any]]) -> None:
    """Methods placed on the cloud need a cloud model; edge-only ones (source, bn, tent on the
    edge) run without one, so a dataset without a default cloud needs --cloud only for the former."""
    if session.cloud_name:
        return
    cloud = cloud_methods(methods)
    if cloud:
        raise CemaError(f"dataset {session.config.dataset!r} has no default cloud model and {', '.join(cloud)} run(s) on the cloud; "
                        "pass --cloud (e.g. timm:resnet50), or run edge-only methods.")


def require_clean(session: Session, methods: dict[str, tuple[type[Strategy], Any]]) -> None:
    """A method that needs clean in-distribution images (EATA's Fisher set) fails before any
    method runs, not after the ones before it: the dataset raises its own message if it has none."""
    if any(getattr(cfg, "needs_clean_samples", False) for _, cfg in methods.values()):
        session.dataset.clean_samples(1, session.config.seed)


def open_session(config: RunConfig, events: Events, inputs: Any = None) -> Session:
    device = resolve_device(config.device)
    dataset = inputs.open(config, device.type) if inputs is not None else open_dataset(config, device.type, loader_workers)
    config = resolved_channel(config, dataset)
    edge_name = config.edge or dataset.default_edge
    cloud_name = config.cloud or dataset.default_cloud
    if not edge_name:
        raise CemaError(f"dataset {config.dataset!r} has no default edge model; pass --edge "
                        "(e.g. timm:resnet18 with --edge-checkpoint FILE).")
    edge_options, cloud_options = model_options(config, dataset)
    autocast = autocast_for(config.amp, device)
    torch.manual_seed(config.seed)  # --random-init weights follow the run's seed
    edge_source = load_model(edge_name, events.on_model_progress, edge_options)
    return Session(config, device, dataset, edge_name, cloud_name, edge_source, events, cloud_options=cloud_options, autocast=autocast,
                   cache=inputs.cache if inputs is not None else {})


def model_options(config: RunConfig, dataset: Any) -> tuple[ModelOptions, ModelOptions]:
    """(edge, cloud) model options: weights from the config; classes and logit subset from the dataset."""
    shared = {
        "random_init": config.random_init, "num_classes": getattr(dataset, "model_classes", dataset.num_classes),
        "class_subset": getattr(dataset, "class_subset", None), "input_size": config.input_size,
        "channels_last": config.channels_last,
    }
    return ModelOptions(checkpoint=config.edge_checkpoint, **shared), ModelOptions(checkpoint=config.cloud_checkpoint, **shared)


def stream_columns(session: Session, corruption: str, severity: int, segment: int) -> dict[str, Any]:
    """What rebuilds the stream (shared/spec/streams.md section 11); ``segment``: the leg's position."""
    config = session.config
    return {"segment": segment, "order": config.order, "dirichlet": config.dirichlet, "label_sampler": config.label_sampler,
            "gradual": config.gradual, "window": config.window,
            "segment_order": segment_order_name(config, session.dataset, corruption, severity)}


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(amp: str | None, device: torch.device) -> Callable[[], Any] | None:
    """--amp bf16|fp16: an autocast context around each strategy step (CUDA; the CPU too, where
    it is mostly slower: for checks). Under fp16 every optimiser step is loss-scaled
    (strategies/precision.py); refused on other devices."""
    if amp is None:
        return None
    if device.type not in ("cuda", "cpu"):
        raise CemaError(f"--amp runs on CUDA (or the CPU); this run is on {device.type}. Drop --amp or use --device cuda.")
    return functools.partial(torch.autocast, device_type=device.type, dtype=AMP_DTYPES[amp])


def precision_columns(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """How the models computed (recorded in every row): --amp, the autocast dtype, the loss
    scaling of the optimiser steps, the memory format, and whether cuDNN may run float32
    convolutions in TF32 (PyTorch's default on CUDA, not changed by cema)."""
    dtype = AMP_DTYPES.get(config.amp, torch.float32)
    return {"amp": config.amp or "none", "amp_dtype": str(dtype).removeprefix("torch."),
            "loss_scaling": "dynamic" if config.amp == "fp16" else "none", "channels_last": config.channels_last,
            "tf32": device.type == "cuda" and torch.backends.cudnn.allow_tf32}


@dataclass
class FoundationLoader:
    """Builds a fresh foundation model for one strategy and remembers whether it did, so that the
    foundation's counted compute is reported for the methods that use it, whatever the run order."""

    session: Session
    used: bool = False

    def __call__(self) -> torch.nn.Module:
        self.used = True
        return self.session.cloud_model()


def new_strategy(session: Session, strategy_cls: type[Strategy], method_config: Any, channel: Any = None) -> tuple[Strategy, Any]:
    """A strategy on fresh models and a fresh channel (reset-each-shift, or continual's start).
    ``channel``: another channel than the simulated one (the server's end of a real link)."""
    torch.manual_seed(session.config.seed)
    meter, costs = CloudMeter(session.device), session.config.costs
    compute = (lambda uplink: ComputeDelay(costs, lambda: meter.gflops, uplink)) if costs.cloud_throughput_gflops else None
    channel = channel if channel is not None else Channel(session.config.channel, compute)
    context = StrategyContext(
        edge_model=copy.deepcopy(session.edge_source).to(session.device),
        cloud_model=FoundationLoader(session),
        channel=channel,
        num_classes=session.dataset.num_classes,
        device=session.device,
        clean_samples=lambda count: session.dataset.clean_samples(count, session.config.seed),
        seed=session.config.seed,
        cache=session.cache,
        cloud_meter=meter,
    )
    return strategy_cls(context, method_config), channel


def run_leg(session: Session, method: str, method_config: Any, live: Live, leg: Leg) -> list[dict[str, Any]]:
    """Play one leg of the stream; one row per domain (a mixed leg: per source domain, as MD's
    ``eval_domain_dict``, its traffic shared out batch by batch in proportion to the samples)."""
    return drain(play_leg(session, method, method_config, live, leg))


def play_leg(session: Session, method: str, method_config: Any, live: Live, leg: Leg,
             step: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Generator[None, None, list[dict[str, Any]]]:
    """``run_leg`` one batch at a time (engine.stream_steps): a fleet passes the edge half as
    ``step`` and runs the cloud at each yield."""
    config, channel = session.config, live.channel
    corruption, severity = ("mixed", leg.domains[0][1]) if leg.mixed else leg.domains[0]
    session.events.on_domain_start(method, corruption, severity, -(-len(leg.order) // config.batch_size))
    before = link_counts(channel, live.strategy)
    shares = TrafficShares(before)
    base = {"method": method, "corruption": corruption, "severity": severity,
            "uplink_budget_bytes": config.channel.uplink_budget_bytes}

    def on_batch(tally: Tally, strat: Strategy, chan: Channel) -> None:
        shares.add(tally, link_counts(chan, strat))
        spent = subtract(link_counts(chan, strat), before)
        session.events.on_batch({
            **base, "batch": tally.batches, "seen": tally.seen, "correct": tally.correct, "accuracy": tally.accuracy,
            "uploads": spent["uploads"], "uplink_bytes": spent["uplink_bytes"], "downlink_bytes": spent["downlink_bytes"],
            **strat.batch_log(),
        })

    stream = leg_stream(session, leg)
    tally = yield from stream_steps(live.strategy, stream, channel, session.device, on_batch, session.autocast, live.window,
                                    config.collapse_share, step)
    foundation, queued = uses_foundation(live.strategy), len(channel.uplink.queue)
    compute = (counted_compute(session, tally.sample_shape, tally.sample_dtype, foundation)
               | model_columns(session, tally.sample_shape, foundation))
    compute["trained_values"] = live.strategy.trained_values  # values the method trains on this model
    references = reference_accuracies(session, leg, references_for(method))
    if not leg.mixed:
        spent = subtract(link_counts(channel, live.strategy), before)
        traffic = cost_columns(config, spent, tally.seen, queued) | compute | link_columns(session.link, spent)
        traffic |= verdict_columns(tally, references, None)
        return [result_row(session, method, method_config, corruption, severity, tally, traffic, getattr(stream, "skipped", 0), leg.segment,
                           stream_workers(stream))]
    return [result_row(session, method, method_config, *leg.domains[tag], part, cost_columns(config, shares.parts[tag], part.seen, queued)
                       | compute | link_columns(session.link, shares.parts[tag]) | verdict_columns(part, references, tag),
                       stream.skipped_in(tag), leg.segment, stream_workers(stream))
            for tag, part in sorted(tally.parts.items())]


# --- the no-learning reference of a stream (cema_cli/results/health.py, "degraded") ----------------

def reference_accuracies(session: Session, leg: Leg, names: tuple[str, ...]) -> dict[str, dict[int | None, float]]:
    """Accuracy of each reference method on this leg's batches, by part (None: the whole leg; a
    mixed leg also by source domain). Played once per session and leg (the cache), with the
    global random state left as it was, so the methods' own numbers do not change."""
    if not (session.config.batch_size > 1 or (session.config.window or 1) > 1):
        names = tuple(n for n in names if n != "bn")  # one sample's own BatchNorm statistics: no reference
    found = {}
    for name in names:
        key = ("reference", name, reference_key(session, leg))
        if key not in session.cache:
            session.cache[key] = play_reference(session, name, leg)
        found[name] = session.cache[key]
    return found


def reference_key(session: Session, leg: Leg) -> str:
    """What a reference's accuracy depends on: the run minus its methods, channel and costs, the
    edge model, and the leg's items."""
    from cema_cli.config import ChannelConfig, CostModel

    stream = dataclasses.replace(session.config, methods=(), method_options={}, channel=ChannelConfig(), costs=CostModel(),
                                 device=session.device.type)
    text = json.dumps([asdict(stream), session.edge_name, leg.domains, leg.order], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def play_reference(session: Session, name: str, leg: Leg) -> dict[int | None, float]:
    strategy_cls = STRATEGIES.get(name)
    devices = [session.device] if session.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        strategy, channel = new_strategy(session, strategy_cls, make_config(strategy_cls, {}, name, session.preset))
        tally = run_stream(strategy, leg_stream(session, leg), channel, session.device, autocast=session.autocast,
                           window=new_window(session.config))
    return {None: tally.accuracy, **{tag: part.accuracy for tag, part in tally.parts.items()}}


def verdict_columns(tally: Tally, references: dict[str, dict[int | None, float]], part: int | None) -> dict[str, Any]:
    """``status`` (the engine's verdict, else degraded or ok), and the reference it was held against."""
    scores = {name: accuracy[part] for name, accuracy in references.items() if part in accuracy}
    best = max(scores.items(), key=lambda item: item[1]) if scores else None
    status = tally.status if tally.status != OK else degraded_status(tally.accuracy, best, tally.chance)
    return {"status": status, "reference_method": best[0] if best else None, "reference_accuracy": best[1] if best else None}


def cost_columns(config: RunConfig, spent: dict[str, float], seen: int, queued: int) -> dict[str, Any]:
    """The traffic columns and the modelled ones (cema_cli/link/costs.py) over the edge batches the
    counters span (a mixed leg's domain: its share of them, as for the bytes)."""
    traffic = traffic_columns(spent, seen, queued)
    return traffic | modelled_columns(config.costs, traffic, spent["edge_batches"])


def leg_stream(session: Session, leg: Leg) -> Any:
    config = session.config
    if leg.mixed:
        return MixedStream(session.dataset, leg, config.seed, config.batch_size)
    (corruption, severity), = leg.domains
    return session.dataset.stream(corruption, severity, config.seed, config.samples, config.batch_size, order=leg.order)


def link_counts(channel: Channel, strategy: Strategy) -> dict[str, float]:
    """The channel's and the strategy's running counters that a row reports; a leg's are
    differences of two readings. Uploads are samples: control packets (CEMA's moments) only
    count in the bytes."""
    up, control, down = channel.uplink.stats, channel.uplink.control_stats, channel.downlink.stats
    return {"uploads": up.sent - control.sent, "uplink_bytes": up.transmitted_bytes, "downlink_bytes": down.transmitted_bytes,
            "delivered_uploads": up.transmitted - control.transmitted, "dropped_uploads": up.dropped - control.dropped,
            "sync_events": down.sent, "delay_sum": channel.param_delay_sum, "delay_batches": channel.param_delay_batches,
            "edge_batches": channel.now, **{f"{f.name}_samples": getattr(strategy.work, f.name) for f in fields(WorkCounts)}, **meter_counts(strategy),
            **remote_counts(strategy)}


def meter_counts(strategy: Strategy) -> dict[str, float]:
    """The cloud half's counted GFLOPs and measured seconds so far (cema_cli/link/cloud_meter.py);
    0 for a strategy without a cloud half (or a test double without a context)."""
    meter = getattr(getattr(strategy, "context", None), "cloud_meter", None) or CloudMeter()
    return {"cloud_gflops": meter.gflops, "cloud_backward_gflops": meter.backward_gflops, "cloud_seconds": meter.seconds}


def subtract(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


class TrafficShares:
    """A mixed leg's traffic per source domain: each batch's counters go to the domains of its
    samples in proportion to their number (so the rows of a leg sum to its traffic)."""

    def __init__(self, start: dict[str, float]) -> None:
        self.last, self.parts, self.seen = start, {}, {}

    def add(self, tally: Tally, counts: dict[str, float]) -> None:
        spent, self.last = subtract(counts, self.last), counts
        fresh = {tag: part.seen - self.seen.get(tag, 0) for tag, part in tally.parts.items()}
        batch = sum(fresh.values())
        for tag, count in fresh.items():
            if count:
                mine = self.parts.setdefault(tag, dict.fromkeys(spent, 0.0))
                for key, value in spent.items():
                    mine[key] += value * count / batch
        self.seen = {tag: part.seen for tag, part in tally.parts.items()}


def traffic_columns(spent: dict[str, float], seen: int, queued: int) -> dict[str, Any]:
    return {
        "uploads": spent["uploads"], "upload_ratio": spent["uploads"] / seen if seen else 0.0,
        "uplink_bytes": spent["uplink_bytes"], "downlink_bytes": spent["downlink_bytes"],
        "delivered_uploads": spent["delivered_uploads"], "dropped_uploads": spent["dropped_uploads"], "queued_uploads": queued,
        "param_delay_batches": spent["delay_sum"] / spent["delay_batches"] if spent["delay_batches"] else 0.0,
        "sync_events": spent["sync_events"],
        **{f"{f.name}_samples": int(spent[f"{f.name}_samples"]) for f in fields(WorkCounts)},
        "cloud_gflops": spent["cloud_gflops"], "cloud_backward_gflops": spent["cloud_backward_gflops"],
        "cloud_exposed_images": spent["delivered_uploads"], "cloud_exposed_share": spent["delivered_uploads"] / seen if seen else 0.0,
        "cloud_seconds": spent["cloud_seconds"],
    }


def uses_foundation(strategy: Strategy) -> bool:
    loader = getattr(getattr(strategy, "context", None), "cloud_model", None)
    return bool(getattr(loader, "used", False))


def counted_compute(session: Session, sample_shape: tuple[int, ...], dtype: torch.dtype, foundation: bool) -> dict[str, float | None]:
    """Forward GFLOPs per sample of the edge model and, for a method that uses it, the foundation
    model (counted, hardware-independent: cema_cli/models/flops.py). Counted once per run."""
    from cema_cli.models.flops import forward_gflops_per_sample

    models = {"edge_gflops_per_sample": session.edge_source,
              "cloud_gflops_per_sample": session._cloud_source if foundation else None}
    counts: dict[str, float | None] = {}
    for column, model in models.items():
        key = (column, sample_shape, dtype)
        if model is not None and sample_shape and key not in session.cache:
            session.cache[key] = forward_gflops_per_sample(model, sample_shape, dtype)
        counts[column] = session.cache.get(key) if model is not None else None
    return counts


def model_columns(session: Session, sample_shape: tuple[int, ...], foundation: bool) -> dict[str, Any]:
    """What identifies each model of a row: its resolved weights (the tag), the sha256 of the
    checkpoint file, and the input size it was fed (the stream's own unless the model resizes).
    The foundation model's columns say ``unused`` for a method that never loads it."""
    edge_options = model_options(session.config, session.dataset)[0]
    columns = model_identity("edge", session.edge_name, edge_options, session.edge_source, sample_shape, session.cache)
    if foundation and session._cloud_source is not None:
        return columns | model_identity("cloud", session.cloud_name, session.cloud_options, session._cloud_source, sample_shape, session.cache)
    return columns | {"cloud_weights": "unused" if session.cloud_name else "none", "cloud_weights_sha256": "", "cloud_input_size": ""}


def model_identity(role: str, name: str, options: ModelOptions, model: torch.nn.Module, sample_shape: tuple[int, ...],
                   cache: dict[Any, Any]) -> dict[str, str]:
    """``<role>_weights``, ``<role>_weights_sha256`` and ``<role>_input_size`` ("224x224"); the
    weights are resolved once per run (the file's hash is cached by path, size and mtime)."""
    key = ("weights", name, options)
    if key not in cache:
        cache[key] = weights_source(name, options)
    source = cache[key]
    return {f"{role}_weights": source.label, f"{role}_weights_sha256": source.sha256(), f"{role}_input_size": fed_size_text(model, sample_shape)}


def fed_size_text(model: torch.nn.Module, sample_shape: tuple[int, ...]) -> str:
    """"224x224" for (C, H, W) images (the size the network saw); a sensor window's or a
    sentence's own shape ("6x100", "64") otherwise."""
    if len(sample_shape) == 3:
        return "x".join(map(str, model.fed_size(sample_shape[-2:])))
    return "x".join(map(str, sample_shape))


def stream_workers(stream: Any) -> int:
    """The loader processes a stream read with (0: the main process, or an in-memory dataset)."""
    return getattr(stream, "workers", None) or 0


def corruption_device(dataset: Any, corruption: str) -> str:
    """Where a generated corruption was computed (cpu or cuda); '' for published files and clean data."""
    if getattr(dataset, "corruption_source", "") != "generated" or corruption == "none":
        return ""
    options = getattr(dataset, "options", None)
    return options.corruption_device if options is not None else "cpu"  # the embedded default corrupts once, on the CPU


def result_row(session: Session, method: str, method_config: Any, corruption: str, severity: int, tally: Tally,
               traffic: dict[str, Any], skipped: int, segment: int = 0, workers: int = 0) -> dict[str, Any]:
    """One tidy results.csv row: the scores, the channel traffic, and what reproduces them."""
    config = session.config
    info = session.dataset.domain_info(corruption, severity, tally.seen)
    return {
        "schema_version": SCHEMA_VERSION, "method": method, "dataset": config.dataset,
        "corruption": corruption, "severity": severity, "samples": tally.seen,
        "accuracy": tally.accuracy, "correct": tally.correct, "top5_accuracy": tally.top5_accuracy,
        **{k: v for k, v in traffic.items() if k != "status"},
        **dict(zip(("accuracy_low", "accuracy_high"), wilson_interval(tally.correct, tally.seen))),  # test-set sampling error
        "uplink_budget_bytes": config.channel.uplink_budget_bytes, "downlink_budget_bytes": config.channel.downlink_budget_bytes,
        "seconds": tally.seconds, "images_per_s": tally.seen / tally.seconds if tally.seconds else 0.0,
        "threads": torch.get_num_threads(),
        "seed": config.seed, "batch_size": config.batch_size, "protocol": config.protocol, **stream_columns(session, corruption, severity, segment),
        "edge_model": session.edge_name, "cloud_model": session.cloud_name,
        "skipped_images": skipped, **precision_columns(config, session.device), "status": traffic["status"],
        "data_wait_seconds": tally.wait_seconds, "loader_workers": workers, "corruption_device": corruption_device(session.dataset, corruption),
        "corruption_source": info.corruption_source, "constants": info.constants,
        "channel": json.dumps(asdict(config.channel), sort_keys=True),
        "preset": session.preset, "method_config": json.dumps(asdict(method_config), sort_keys=True),
        **{k: v for k, v in environment(session.device).items() if k in ROW_ENVIRONMENT},
    }
