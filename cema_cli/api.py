"""``run_benchmark(config) -> rows``: build the parts from the registries and run the engine.

No printing and no files here: callers receive rows and per-batch records through ``Events``.
"""

from __future__ import annotations

import copy
import functools
import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

import cema_cli
from cema_cli.channel import Channel, LinkStats
from cema_cli.config import RunConfig
from cema_cli.data import dataset_preset, open_dataset
from cema_cli.engine import Tally, run_stream
from cema_cli.errors import CemaError
from cema_cli.models import ModelOptions, load_model, weights_label
from cema_cli.results import SCHEMA_VERSION
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import Strategy, StrategyContext, make_config


@dataclass
class Events:
    """Optional callbacks: the CLI draws progress and writes files from these."""

    on_row: Callable[[dict[str, Any]], None] = lambda row: None
    on_batch: Callable[[dict[str, Any]], None] = lambda record: None
    on_domain_start: Callable[[str, str, int, int], None] = lambda method, corruption, severity, batches: None
    on_model_progress: Callable[[str, int, int], None] | None = None


@dataclass
class Session:
    """The parts shared by every (method, domain) of one run."""

    config: RunConfig
    device: torch.device
    dataset: Any
    edge_name: str
    cloud_name: str
    edge_source: torch.nn.Module
    events: Events
    _cloud_source: torch.nn.Module | None = field(default=None, repr=False)
    cloud_options: ModelOptions = field(default_factory=ModelOptions)
    autocast: Callable[[], Any] | None = None  # --amp: a torch.autocast context factory
    cache: dict[Any, Any] = field(default_factory=dict)  # per-run results reused across domains (EATA's Fisher)

    @property
    def preset(self) -> str:
        """The published method settings in force: --preset, else the dataset's."""
        return self.config.preset or dataset_preset(self.dataset)

    def cloud_model(self) -> torch.nn.Module:
        """A fresh foundation model on the device; loaded on first use only."""
        if self._cloud_source is None:
            self._cloud_source = load_model(self.cloud_name, self.events.on_model_progress, self.cloud_options)
        return copy.deepcopy(self._cloud_source).to(self.device)


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
        "cema_version": cema_cli.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": f"{device.type}:{name}",
    }


def run_benchmark(config: RunConfig, events: Events | None = None) -> list[dict[str, Any]]:
    """Run every method on every domain of ``config``; return one result row per pair."""
    config.validate()
    check_method_options(config)
    events = events or Events()
    session = open_session(config, events)
    methods = method_configs(config, session.preset)
    live: dict[str, tuple[Strategy, Channel]] = {}
    rows = []
    for corruption, severity in config.domains():
        for method, (strategy_cls, method_config) in methods.items():
            if config.protocol == "reset-each-shift" or method not in live:
                live[method] = new_strategy(session, strategy_cls, method_config)
            strategy, channel = live[method]
            row = run_domain(session, method, method_config, strategy, channel, corruption, severity)
            events.on_row(row)
            rows.append(row)
    return rows


def check_method_options(config: RunConfig) -> None:
    """Refuse bad method options before the dataset and models load. The dataset's preset is not
    known yet, so this checks --preset's settings (else the defaults); run_benchmark rechecks."""
    method_configs(config, config.preset)


def method_configs(config: RunConfig, preset: str) -> dict[str, tuple[type[Strategy], Any]]:
    """Each method's strategy and its config: defaults, the preset's published settings, then -o."""
    return {m: (STRATEGIES.get(m), make_config(STRATEGIES.get(m), config.method_options.get(m, {}), m, preset)) for m in config.methods}


def open_session(config: RunConfig, events: Events) -> Session:
    device = resolve_device(config.device)
    dataset = open_dataset(config, pin_memory=device.type == "cuda")
    edge_name = config.edge or dataset.default_edge
    cloud_name = config.cloud or dataset.default_cloud
    if not edge_name or not cloud_name:
        raise CemaError(f"dataset {config.dataset!r} has no default models; pass --edge and --cloud "
                        "(e.g. timm:resnet18 with --edge-checkpoint FILE).")
    edge_options, cloud_options = model_options(config, dataset)
    autocast = autocast_for(config.amp, device)
    edge_source = load_model(edge_name, events.on_model_progress, edge_options)
    return Session(config, device, dataset, edge_name, cloud_name, edge_source, events, cloud_options=cloud_options, autocast=autocast)


def model_options(config: RunConfig, dataset: Any) -> tuple[ModelOptions, ModelOptions]:
    """(edge, cloud) model options: weights from the config; classes and logit subset from the dataset."""
    shared = {
        "random_init": config.random_init, "num_classes": getattr(dataset, "model_classes", dataset.num_classes),
        "class_subset": getattr(dataset, "class_subset", None), "input_size": config.input_size,
        "channels_last": config.channels_last,
    }
    return ModelOptions(checkpoint=config.edge_checkpoint, **shared), ModelOptions(checkpoint=config.cloud_checkpoint, **shared)


def autocast_for(amp: str | None, device: torch.device) -> Callable[[], Any] | None:
    """--amp bf16|fp16: a CUDA autocast context around each strategy step; refused elsewhere."""
    if amp is None:
        return None
    if device.type != "cuda":
        raise CemaError(f"--amp runs on CUDA only; this run is on {device.type}. Drop --amp or use --device cuda.")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return functools.partial(torch.autocast, device_type="cuda", dtype=dtype)


def new_strategy(session: Session, strategy_cls: type[Strategy], method_config: Any) -> tuple[Strategy, Channel]:
    """A strategy on fresh models and a fresh channel (reset-each-shift, or continual's start)."""
    torch.manual_seed(session.config.seed)
    channel = Channel(session.config.channel)
    context = StrategyContext(
        edge_model=copy.deepcopy(session.edge_source).to(session.device),
        cloud_model=session.cloud_model,
        channel=channel,
        num_classes=session.dataset.num_classes,
        device=session.device,
        clean_samples=lambda count: session.dataset.clean_samples(count, session.config.seed),
        seed=session.config.seed,
        cache=session.cache,
    )
    return strategy_cls(context, method_config), channel


def run_domain(session: Session, method: str, method_config: Any, strategy: Strategy, channel: Channel, corruption: str, severity: int) -> dict[str, Any]:
    config = session.config
    total = session.dataset.domain_size(corruption, severity)
    samples = min(config.samples or total, total)
    session.events.on_domain_start(method, corruption, severity, -(-samples // config.batch_size))
    up_before, down_before = copy.copy(channel.uplink.stats), copy.copy(channel.downlink.stats)
    delay_before = (channel.param_delay_sum, channel.param_delay_batches)
    base = {"method": method, "corruption": corruption, "severity": severity,
            "uplink_budget_bytes": config.channel.uplink_budget_bytes}

    def on_batch(tally: Tally, strat: Strategy, chan: Channel) -> None:
        up, down = chan.uplink.stats.minus(up_before), chan.downlink.stats.minus(down_before)
        session.events.on_batch({
            **base, "batch": tally.batches, "seen": tally.seen, "correct": tally.correct,
            "accuracy": tally.accuracy, "uploads": up.sent, "uplink_bytes": up.transmitted_bytes,
            "downlink_bytes": down.transmitted_bytes, **strat.batch_log(),
        })

    stream = session.dataset.stream(corruption, severity, config.seed, samples, config.batch_size)
    tally = run_stream(strategy, stream, channel, session.device, on_batch, session.autocast, config.collapse_share)
    up, down = channel.uplink.stats.minus(up_before), channel.downlink.stats.minus(down_before)
    delay_sum, delay_n = channel.param_delay_sum - delay_before[0], channel.param_delay_batches - delay_before[1]
    traffic = {
        "uploads": up.sent, "upload_ratio": up.sent / tally.seen if tally.seen else 0.0,
        "uplink_bytes": up.transmitted_bytes, "downlink_bytes": down.transmitted_bytes,
        "delivered_uploads": up.transmitted, "dropped_uploads": up.dropped, "queued_uploads": len(channel.uplink.queue),
        "param_delay_batches": delay_sum / delay_n if delay_n else 0.0, "sync_events": down.sent,
    }
    return result_row(session, method, method_config, corruption, severity, tally, traffic, getattr(stream, "skipped", 0))


def result_row(session: Session, method: str, method_config: Any, corruption: str, severity: int, tally: Tally,
               traffic: dict[str, Any], skipped: int) -> dict[str, Any]:
    """One tidy results.csv row: the scores, the channel traffic, and what reproduces them."""
    config = session.config
    info = session.dataset.domain_info(corruption, severity, tally.seen)
    return {
        "schema_version": SCHEMA_VERSION, "method": method, "dataset": config.dataset,
        "corruption": corruption, "severity": severity, "samples": tally.seen,
        "accuracy": tally.accuracy, "correct": tally.correct, **traffic,
        "uplink_budget_bytes": config.channel.uplink_budget_bytes, "downlink_budget_bytes": config.channel.downlink_budget_bytes,
        "seconds": tally.seconds, "images_per_s": tally.seen / tally.seconds if tally.seconds else 0.0,
        "seed": config.seed, "batch_size": config.batch_size, "protocol": config.protocol,
        "edge_model": session.edge_name, "cloud_model": session.cloud_name,
        "edge_weights": weights_label(session.edge_name, model_options(config, session.dataset)[0]),
        "cloud_weights": weights_label(session.cloud_name, session.cloud_options),
        "skipped_images": skipped, "amp": config.amp or "none", "status": tally.status,
        "corruption_source": info.corruption_source, "constants": info.constants,
        "channel": json.dumps(asdict(config.channel), sort_keys=True),
        "preset": session.preset, "method_config": json.dumps(asdict(method_config), sort_keys=True),
        **{k: v for k, v in environment(session.device).items() if k in ("device", "cema_version", "torch_version")},
    }
