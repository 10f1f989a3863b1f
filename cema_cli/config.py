"""Frozen run configuration, validated once where it enters (the CLI or the Python API).

No torch import here: the CLI builds and validates a config before anything heavy loads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cema_cli.errors import CemaError, unknown_name
from cema_cli.results.health import COLLAPSE_SHARE

PROTOCOLS = ("reset-each-shift", "continual", "mixed", "correlated", "mixed-correlated", "gradual")
# Stream options (shared/spec/streams.md; built in cema_cli/data/streams.py).
ORDER_FAMILIES = ("cema", "md")
LABEL_SAMPLERS = ("md", "rotta")
GRADUAL_VARIANTS = ("md", "cotta")
LABEL_SHIFTED = ("correlated", "mixed-correlated")
DEVICES = ("auto", "cpu", "cuda", "mps")
ENCODINGS = ("uint8", "jpeg", "float32")
PARAM_DTYPES = ("float32", "float16")
OVERFLOW_POLICIES = ("drop", "queue")
# Which uploads cross a link that cannot carry all of them; arrivals always keep stream order.
UPLINK_PRIORITIES = ("lowest-entropy-first", "stream-order")
AMP_DTYPES = ("bf16", "fp16")
# Published per-dataset method settings (fidelity/reference.md, "Published settings by dataset").
PRESETS = ("imagenet", "cifar10", "cifar100")


@dataclass(frozen=True)
class ChannelConfig:
    """The edge<->cloud link (see channel.py). ``None`` budgets mean unlimited."""

    uplink_encoding: str = "uint8"
    jpeg_quality: int = 85
    downlink_dtype: str = "float32"
    uplink_budget_bytes: int | None = None
    downlink_budget_bytes: int | None = None
    uplink_delay_batches: int = 0
    downlink_delay_batches: int = 0
    sync_period_batches: int = 1
    overflow: str = "drop"
    queue_capacity: int = 1024
    uplink_priority: str = "lowest-entropy-first"

    def validate(self) -> "ChannelConfig":
        if self.uplink_encoding not in ENCODINGS:
            raise unknown_name("uplink encoding", self.uplink_encoding, ENCODINGS)
        if self.downlink_dtype not in PARAM_DTYPES:
            raise unknown_name("downlink dtype", self.downlink_dtype, PARAM_DTYPES)
        if self.overflow not in OVERFLOW_POLICIES:
            raise unknown_name("overflow policy", self.overflow, OVERFLOW_POLICIES)
        if self.uplink_priority not in UPLINK_PRIORITIES:
            raise unknown_name("uplink priority", self.uplink_priority, UPLINK_PRIORITIES)
        if not 1 <= self.jpeg_quality <= 95:
            raise CemaError(f"--jpeg-quality {self.jpeg_quality} is outside 1-95; pick e.g. 85.")
        for name in ("uplink_budget_bytes", "downlink_budget_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise CemaError(f"{name} is negative ({value}); give 0 or more bytes, or 'unlimited'.")
        for name in ("uplink_delay_batches", "downlink_delay_batches", "queue_capacity"):
            if getattr(self, name) < 0:
                raise CemaError(f"{name} is negative; give 0 or more.")
        if self.sync_period_batches < 1:
            raise CemaError("--sync-period must be at least 1 batch.")
        return self


@dataclass(frozen=True)
class CostModel:
    """User-given assumptions behind the modelled cost columns (README, "Cost columns"); None:
    not assumed, and the columns that need it stay empty. Recorded in run.json and every row."""

    rtt_ms: float | None = None  # round-trip time of the edge-cloud link
    uplink_rate_bps: float | None = None  # link rates in bits per second
    downlink_rate_bps: float | None = None
    batch_interval_s: float | None = None  # seconds between two edge batches (the stream's clock)
    cloud_price_per_hour: float | None = None  # price of one GPU-hour in the cloud (any currency)
    cloud_throughput_gflops: float | None = None  # cloud GFLOP/s: drives the parameter delay (channel.ComputeDelay)

    def validate(self) -> "CostModel":
        checks = (("--rtt", self.rtt_ms, True), ("--uplink-rate", self.uplink_rate_bps, False),
                  ("--downlink-rate", self.downlink_rate_bps, False), ("--batch-interval", self.batch_interval_s, False),
                  ("--cloud-price", self.cloud_price_per_hour, True), ("--cloud-throughput", self.cloud_throughput_gflops, False))
        for flag, value, zero_ok in checks:
            if value is not None and not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
                bound = "0 or more" if zero_ok else "above 0"
                raise CemaError(f"{flag} {value:g} must be a finite number {bound}; e.g. --rtt 50, --uplink-rate 10Mbit, "
                                "--batch-interval 0.5, --cloud-price 2.5, --cloud-throughput 1000.")
        if self.cloud_throughput_gflops is not None and self.batch_interval_s is None:
            raise CemaError("--cloud-throughput turns compute into batches of delay and needs the stream's clock; "
                            "add --batch-interval SECONDS (the time between two edge batches).")
        return self

    def given(self) -> bool:
        return any(v is not None for v in asdict(self).values())


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a benchmark run; recorded in run.json and every result row."""

    methods: tuple[str, ...] = ("cema",)
    dataset: str = "mnist"
    corruptions: tuple[str, ...] = ("gaussian_noise",)
    severities: tuple[int, ...] = (5,)
    samples: int | None = None
    batch_size: int = 64
    seed: int = 0
    edge: str | None = None
    cloud: str | None = None
    device: str = "auto"
    protocol: str = "reset-each-shift"
    constants: str | None = None
    preset: str | None = None  # method settings: None = the dataset's (imagenet, cifar10, cifar100)
    data_root: str | None = None
    # Real runs (issue 6; shared/spec/data.md): weights, inputs, loading and the accelerator.
    edge_checkpoint: str | None = None
    cloud_checkpoint: str | None = None
    random_init: bool = False
    input_size: int | None = None
    subset: str | None = None
    clean_root: str | None = None
    workers: int | None = None
    amp: str | None = None
    channels_last: bool = False
    collapse_share: float = COLLAPSE_SHARE  # share of predictions in two classes that flags a collapse (cema_cli.results.health)
    # Streams (shared/spec/streams.md): permutation family, label shift, gradual variant, window.
    order: str = "cema"
    dirichlet: float | None = None  # None: the class sort (MD delta 0); else the Dirichlet concentration
    label_sampler: str = "md"
    gradual: str = "md"
    window: int | None = None
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    costs: CostModel = field(default_factory=CostModel)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> "RunConfig":
        from cema_cli.corruptions import ALL, CONSTANT_SETS
        from cema_cli.data import DATASETS
        from cema_cli.strategies import STRATEGIES

        for method in self.methods:
            STRATEGIES.check(method)
        DATASETS.check(self.dataset)
        for corruption in self.corruptions:
            if corruption not in ALL and corruption != "none":
                raise unknown_name("corruption", corruption, ALL + ("none",))
        for severity in self.severities:
            if not 1 <= severity <= 5:
                raise CemaError(f"severity {severity} is outside 1-5; pass e.g. --severity 5 or 1,3,5.")
        if self.samples is not None and self.samples < 1:
            raise CemaError(f"--samples {self.samples} must be a positive count of samples per domain.")
        if not 0 <= self.seed < 2**63:  # torch.manual_seed takes a 64-bit signed seed
            raise CemaError(f"--seed {self.seed} is outside 0 to 2**63-1; give e.g. --seed 0.")
        if self.batch_size < 1:
            raise CemaError(f"--batch-size {self.batch_size} must be at least 1.")
        self.validate_stream()
        if self.device not in DEVICES:
            raise unknown_name("device", self.device, DEVICES)
        if self.preset is not None and self.preset not in PRESETS:
            raise unknown_name("preset", self.preset, PRESETS)
        if self.constants is not None and self.constants not in CONSTANT_SETS:
            raise unknown_name("constants set", self.constants, CONSTANT_SETS)
        if not isinstance(self.collapse_share, (int, float)) or not 0 < self.collapse_share <= 1:  # nan fails too
            raise CemaError(f"--collapse-share {self.collapse_share} is not a share in (0, 1]; e.g. {COLLAPSE_SHARE} (the default).")
        self.validate_real_run()
        self.channel.validate()
        self.costs.validate()
        if self.costs.cloud_throughput_gflops is not None and self.channel.downlink_delay_batches:
            raise CemaError("--cloud-throughput derives the parameter delay from compute; drop --downlink-delay "
                            f"{self.channel.downlink_delay_batches} (or drop --cloud-throughput to keep a fixed delay).")
        return self

    def validate_stream(self) -> None:
        """The protocol and its parameters (shared/spec/streams.md sections 1-7)."""
        for kind, value, valid in (("protocol", self.protocol, PROTOCOLS), ("--order family", self.order, ORDER_FAMILIES),
                                   ("label sampler", self.label_sampler, LABEL_SAMPLERS), ("gradual variant", self.gradual, GRADUAL_VARIANTS)):
            if value not in valid:
                raise unknown_name(kind, value, valid)
        if self.dirichlet is not None and not (math.isfinite(self.dirichlet) and self.dirichlet > 0):
            raise CemaError(f"--dirichlet {self.dirichlet}: a Dirichlet concentration must be above 0 (e.g. 0.1); "
                            "omit --dirichlet for the class-sorted stream.")
        if (self.dirichlet is not None or self.label_sampler != "md") and self.protocol not in LABEL_SHIFTED:
            raise CemaError(f"--dirichlet and --label-sampler shape label-shifted streams; add --protocol correlated or mixed-correlated (not {self.protocol}).")
        if self.label_sampler == "rotta" and (self.protocol != "correlated" or self.dirichlet is None):
            raise CemaError("--label-sampler rotta runs with --protocol correlated and a concentration --dirichlet GAMMA (RoTTA publishes 0.1).")
        if self.protocol == "gradual" and self.severities != (5,):
            raise CemaError("--protocol gradual visits severities 1-5 on its own schedule; drop --severity.")
        if self.gradual != "md" and self.protocol != "gradual":
            raise CemaError(f"--gradual {self.gradual} applies to --protocol gradual only.")
        if self.window is not None and (self.window < 1 or self.batch_size != 1):
            raise CemaError(f"--window {self.window}: MD's sliding window holds L >= 1 samples and runs with --batch-size 1.")

    def validate_real_run(self) -> None:
        """The options of runs on real data and models (shared/spec/data.md)."""
        if self.random_init and (self.edge_checkpoint or self.cloud_checkpoint):
            raise CemaError("--random-init and a --*-checkpoint contradict each other; give one of them.")
        for flag, path in (("--edge-checkpoint", self.edge_checkpoint), ("--cloud-checkpoint", self.cloud_checkpoint)):
            if path is not None and not Path(path).expanduser().is_file():
                raise CemaError(f"{flag} {path}: no such file; give a saved state_dict (torch.save(model.state_dict(), path)).")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise unknown_name("--amp dtype", self.amp, AMP_DTYPES)
        if self.amp is not None and self.device not in ("auto", "cuda"):
            raise CemaError(f"--amp runs on CUDA only; this run asks for --device {self.device}. Drop --amp or use --device cuda.")
        if self.input_size is not None and self.input_size < 8:
            raise CemaError(f"--input-size {self.input_size} is too small; give a side in pixels, e.g. 32 or 224.")
        if self.workers is not None and self.workers < 0:
            raise CemaError(f"--workers {self.workers} must be 0 (load in the main process) or more.")

    def domains(self) -> list[tuple[str, int]]:
        """(corruption, severity) pairs in run order: corruption-major, as the papers iterate."""
        return [(c, s) for c in self.corruptions for s in self.severities]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_rate(text: str, frame_rate: float | None, batch_size: int) -> int | None:
    """A link rate such as '8Mbit/s' -> bytes per edge batch at ``frame_rate`` images per second;
    anything else is read by ``parse_bytes``."""
    cleaned = text.strip().lower()
    rates = {"kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9}
    unit = next((u for u in rates if cleaned.endswith(u)), None)
    if unit is None:
        return parse_bytes(text)
    if not frame_rate or not math.isfinite(frame_rate) or frame_rate <= 0:
        raise CemaError(f"the link rate {text!r} needs the stream's frame rate; add e.g. --frame-rate 30 (images per second).")
    try:
        bits_per_second = float(cleaned[: -len(unit)]) * rates[unit]
    except ValueError:
        raise CemaError(f"cannot read {text!r} as a link rate; use e.g. 8Mbit/s or 500kbit/s.") from None
    return int(bits_per_second / 8 * batch_size / frame_rate)


def parse_bytes(text: str) -> int | None:
    """'unlimited' -> None; '16kB' -> 16000; '1MiB' -> 1048576; '512' -> 512."""
    units = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    cleaned = text.strip().lower()
    if cleaned in ("unlimited", "inf", "none"):
        return None
    value, unit = number_and_unit(cleaned, "b")
    if unit not in units or not math.isfinite(value) or value < 0:
        raise CemaError(f"cannot read {text!r} as a byte count; use e.g. 512, 16kB, 1.5MB or unlimited.")
    return int(value * units[unit])


def number_and_unit(cleaned: str, default_unit: str) -> tuple[float, str]:
    """'16kb' -> (16.0, 'kb'); '512' -> (512.0, default_unit); an unreadable number is nan."""
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    return value, cleaned[len(number):] or default_unit


BIT_RATES = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def parse_bit_rate(text: str, flag: str) -> float:
    """A link rate in bits per second: '10Mbit', '10Mbit/s', '10Mbps', '500kbit/s', or a bare
    number of bits per second. Units are decimal (1 Mbit = 10^6 bits); bytes are not accepted
    here ('10MB' would read as megabits in some tools and megabytes in others)."""
    cleaned = text.strip().lower().removesuffix("/s")
    cleaned = cleaned[:-3] + "bit" if cleaned.endswith("bps") else cleaned
    value, unit = number_and_unit(cleaned, "bit")
    if unit not in BIT_RATES or not math.isfinite(value) or value <= 0:
        raise CemaError(f"{flag} {text!r} is not a link rate above 0 in bits per second; use e.g. 10Mbit, 500kbit/s or 1e7.")
    return value * BIT_RATES[unit]
