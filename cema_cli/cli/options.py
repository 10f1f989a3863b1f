"""The run options of ``bench``, ``compare`` and ``sweep``, typed: each command line parses into
one frozen, validated ``RunOptions`` (every flag's value, and which flags were typed), and
``build_configs(options, file, study)`` turns it into the RunConfigs of the study, setting by
setting, by one precedence rule:

    a flag typed on the command line  >  the --config file  >  the study resumed  >  the flag's default

("the study resumed": the settings recorded by the study in --out or --resume, run/record.py).
No torch import.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cema_cli.config import ChannelConfig, CostModel, RunConfig, parse_bit_rate, parse_rate, seed_list
from cema_cli.errors import CemaError, unknown_name
from cema_cli.results.health import COLLAPSE_SHARE

DEFAULT_METHOD = "cema"
DEFAULT_COMPARE = "cema,tent,eata,source"
NOT_A_FLAG = {"flag": False}


@dataclass(frozen=True)
class RunOptions:
    """The shared flags of bench, compare and sweep, as given, plus ``methods`` (``--method`` of
    bench, ``--methods`` of the others) and ``explicit``: the flags typed on the command line.
    The annotations are the flags' definitions (``with_run_options`` builds the commands from them)."""

    methods: str = field(default=DEFAULT_METHOD, metadata=NOT_A_FLAG)
    dataset: Annotated[str, typer.Option(help="Dataset name; see `cema list datasets`.")] = "mnist"
    corruption: Annotated[str, typer.Option("--corruption", "-c", help="A name, a comma list, or 'all' (the 15 common ones; watch and sentiment: natural, shifts, all).")] = "gaussian_noise"
    severity: Annotated[str, typer.Option("--severity", "-s", help="1-5, a comma list, or 'all'.")] = "5"
    samples: Annotated[Optional[int], typer.Option(help="Samples per domain (default: all); a mixed stream's total.")] = None
    batch_size: Annotated[int, typer.Option(help="Edge batch size.")] = 64
    seed: Annotated[int, typer.Option(help="Fixes the stream order and every random draw.")] = 0
    edge: Annotated[Optional[str], typer.Option(help="Edge model (default: the dataset's).")] = None
    cloud: Annotated[Optional[str], typer.Option(help="Cloud foundation model (default: the dataset's).")] = None
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto"
    protocol: Annotated[str, typer.Option(help="reset-each-shift (fresh models per domain), continual, mixed, correlated, mixed-correlated or gradual.")] = "reset-each-shift"
    order: Annotated[str, typer.Option(help="Stream permutation family: cema (torch, seeded) or md (Python random, as MD).")] = "cema"
    dirichlet: Annotated[Optional[float], typer.Option(help="Label shift: Dirichlet concentration > 0 (default: class-sorted); correlated protocols.")] = None
    label_sampler: Annotated[str, typer.Option(help="Label-shift sampler: md or rotta (--dirichlet is RoTTA's gamma).")] = "md"
    gradual: Annotated[str, typer.Option(help="Gradual severity variant: md (1..5..1 for every corruption) or cotta.")] = "md"
    window: Annotated[Optional[int], typer.Option(help="Batch size 1: MD's sliding window of L samples (adapt every L).")] = None
    constants: Annotated[Optional[str], typer.Option(help="Corruption constants: imagenet or cifar (default: the dataset's).")] = None
    preset: Annotated[Optional[str], typer.Option(help="Published method settings: imagenet, cifar10 or cifar100 (default: the dataset's).")] = None
    data_root: Annotated[Optional[str], typer.Option(help="Root folder of an on-disk dataset.")] = None
    subset: Annotated[Optional[str], typer.Option(help="Image-tree datasets: a count (seeded choice) or a file listing <wnid>/<file> paths.")] = None
    clean_root: Annotated[Optional[str], typer.Option(help="Clean images for EATA's Fisher set (a class tree or images.npy + labels.npy).")] = None
    workers: Annotated[Optional[int], typer.Option(help="Data loader worker processes (default: from the idle cores; see README).")] = None
    edge_checkpoint: Annotated[Optional[str], typer.Option(help="Edge weights: a state_dict file (torch.load weights_only).")] = None
    cloud_checkpoint: Annotated[Optional[str], typer.Option(help="Cloud weights: a state_dict file (torch.load weights_only).")] = None
    random_init: Annotated[bool, typer.Option("--random-init", help="Random weights for both models (plumbing checks; recorded).")] = False
    input_size: Annotated[Optional[int], typer.Option(help="Resize images to this side in px (default: the dataset's native size, 224 ImageNet, 32 CIFAR).")] = None
    amp: Annotated[Optional[str], typer.Option(help="Autocast dtype on CUDA (or the CPU): bf16, or fp16 with loss scaling.")] = None
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Channels-last memory format for the models.")] = False
    uplink_encoding: Annotated[str, typer.Option(help="Uplink payload: native (the dataset's samples: uint8 pixels, int16 sensor windows, token ids), jpeg or float32.")] = "native"
    uplink_budget: Annotated[str, typer.Option(help="Uplink bytes per batch (16kB), a link rate (8Mbit/s, with --frame-rate), or unlimited; a comma list sweeps.")] = "unlimited"
    downlink_budget: Annotated[str, typer.Option(help="Downlink bytes per batch, or unlimited; a comma list sweeps.")] = "unlimited"
    uplink_delay: Annotated[int, typer.Option(help="Uplink delay in batches.")] = 0
    downlink_delay: Annotated[int, typer.Option(help="Downlink delay in batches.")] = 0
    sync_period: Annotated[int, typer.Option(help="Send parameters to the edge every K batches.")] = 1
    overflow: Annotated[str, typer.Option(help="When the budget is exhausted: drop or queue.")] = "drop"
    frame_rate: Annotated[Optional[float], typer.Option(help="Stream images per second, to read budgets given as link rates (8Mbit/s).")] = None
    rtt: Annotated[Optional[float], typer.Option(help="Modelled link round-trip time in ms (cost columns; see README).")] = None
    uplink_rate: Annotated[Optional[str], typer.Option(help="Modelled uplink rate, e.g. 10Mbit (upload time, staleness in seconds).")] = None
    downlink_rate: Annotated[Optional[str], typer.Option(help="Modelled downlink rate, e.g. 50Mbit.")] = None
    batch_interval: Annotated[Optional[float], typer.Option(help="Seconds between two edge batches (the stream's clock, for --cloud-throughput).")] = None
    cloud_price: Annotated[Optional[float], typer.Option(help="Price of one cloud GPU-hour: adds cloud_cost per domain.")] = None
    cloud_throughput: Annotated[Optional[float], typer.Option(help="Cloud GFLOP/s: the parameter delay follows from compute (with --batch-interval), not --downlink-delay.")] = None
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Method option METHOD.NAME=VALUE (repeatable).")] = None
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML run or sweep file; flags typed here win (see README).")] = None
    out: Annotated[Optional[str], typer.Option(help="Output folder, new or empty (default: cema-runs/<time>-<methods>).")] = None
    force: Annotated[bool, typer.Option("--force", help="Replace the run files of an --out that already holds a run.")] = False
    min_accuracy: Annotated[Optional[float], typer.Option(help="Exit 1 when a method's mean accuracy is below this, in percent (90 = 90%; values 0-1 are refused as ambiguous).")] = None
    metric: Annotated[str, typer.Option(help="Show accuracy or error (%, 100 - accuracy) in the tables (top-5 beside it from 100 classes up).")] = "accuracy"
    seeds: Annotated[Optional[str], typer.Option(help="Several seeds: a count (5 = seeds 0-4) or a list (0,1,2); adds mean ± 95% tables.")] = None
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per run (default: idle cores / workers; see README).")] = None
    executor: Annotated[Optional[str], typer.Option(help="Run as resumable cells: serial, process or ray (default with --seeds: process).")] = None
    collapse_share: Annotated[float, typer.Option(help="Exit 3 when this share of a domain's predictions falls in 2 classes and the labels' does not (see README).")] = COLLAPSE_SHARE
    edges: Annotated[Optional[int], typer.Option(help="A fleet of N edges sharing one cloud, edge i's corruption order rotated by i (protocol continual by default; see README).")] = None
    cloud_batching: Annotated[str, typer.Option(help="Fleet cloud batches: per-edge (one edge's uploads) or pooled (their union).")] = "per-edge"
    student: Annotated[Optional[str], typer.Option(help="Fleet students: per-edge (one cloud copy per edge) or shared (default with pooled).")] = None
    foundation: Annotated[str, typer.Option(help="Fleet foundation model (CEMA): shared or per-edge.")] = "shared"
    cloud_capacity: Annotated[Optional[int], typer.Option(help="Fleet cloud steps per tick (default: unlimited).")] = None
    cloud_gflops_per_tick: Annotated[Optional[float], typer.Option(help="Fleet cloud compute budget, counted GFLOPs per tick (default: unlimited; --edges 1 for one edge).")] = None
    scheduler: Annotated[str, typer.Option(help="Fleet cloud queue order: round-robin, fifo or lowest-entropy-first.")] = "round-robin"
    independent: Annotated[bool, typer.Option("--independent/--no-independent", help="Fleet: also run each edge alone, for the collaboration gain.")] = True
    link: Annotated[str, typer.Option(help="simulated (one process), live (the cloud in a `cema serve` process), or simulated,live (both, side by side).")] = "simulated"
    cloud_url: Annotated[Optional[str], typer.Option(help="Live link: HOST:PORT of a running `cema serve` (default: start one on loopback).")] = None
    link_token: Annotated[Optional[str], typer.Option(help="Live link: the server's token (default: $CEMA_LINK_TOKEN).")] = None
    timing: Annotated[str, typer.Option(help="Live link: lockstep (rows equal the simulated ones) or realtime (paced at --frame-rate, never waits).")] = "lockstep"
    shape: Annotated[Optional[str], typer.Option(help="Live link rate, e.g. 2Mbit (both ways) or 2Mbit,50Mbit (up,down): tc tbf as root, else an application token bucket.")] = None
    shape_rtt: Annotated[float, typer.Option(help="Live link: round-trip time in ms, added in the application layer.")] = 0.0
    shape_loss: Annotated[float, typer.Option(help="Live link: share of uplink messages lost, in the application layer (0-1).")] = 0.0
    shaper: Annotated[str, typer.Option(help="Live link shaping: auto (tc as root, else app), tc or app.")] = "auto"
    tls_ca: Annotated[Optional[Path], typer.Option(help="Live link: verify the server's TLS certificate with this PEM file.")] = None
    tls_cert: Annotated[Optional[Path], typer.Option(help="Live link: the local server speaks TLS with this PEM certificate (and --tls-key).")] = None
    tls_key: Annotated[Optional[Path], typer.Option(help="Live link: the private key of --tls-cert.")] = None
    edge_id: Annotated[Optional[str], typer.Option(help="Live link: this edge's name on the server (default: edge-<host>-<pid>).")] = None
    link_timeout: Annotated[float, typer.Option(help="Live link: seconds a lockstep batch waits for the cloud before the cloud counts as gone.")] = 300.0
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False

    explicit: frozenset[str] = field(default=frozenset(), metadata=NOT_A_FLAG)

    def __post_init__(self) -> None:
        self.check()

    @classmethod
    def from_cli(cls, context: typer.Context, **values: Any) -> "RunOptions":
        """The options of one command line: ``values`` as Typer parsed them, the typed ones marked."""
        typed = {name for name in context.params if getattr(context.get_parameter_source(name), "name", "") == "COMMANDLINE"}
        return cls(**values, explicit=frozenset("methods" if name == "method" else name for name in typed))

    def typed(self, name: str) -> bool:
        return name in self.explicit

    def check(self) -> None:
        """What the flags alone can tell, before any file is read."""
        for flag in ("out", "resume"):
            value = getattr(self, flag, None)
            if value is not None and not value.strip():
                raise CemaError(f"--{flag} '' names no folder; give a folder, e.g. --{flag} runs/a.")
        if self.threads is not None and self.threads < 1:
            raise CemaError(f"--threads {self.threads} must be at least 1.")
        if self.typed("seed") and self.typed("seeds"):
            raise CemaError("--seed and --seeds both give the seed; use --seed for one run or --seeds for several.")
        if self.seeds is not None:
            seed_list(self.seeds)
        from cema_cli.results.saved import checked_min_accuracy

        checked_min_accuracy(self.min_accuracy)
        check_metric(self.metric)


@dataclass(frozen=True)
class SweepOptions(RunOptions):
    """``cema sweep``: the run options and the sweep's own."""

    resume: Annotated[Optional[str], typer.Option(help="Resume the study in this folder: its stored grid, only the missing cells.")] = None
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the number of cells, how many are done, and a time estimate.")] = False
    versus: Annotated[Optional[str], typer.Option(help="Paired comparison of every method against this one (e.g. tent); remembered by the study.")] = None
    suite: Annotated[Optional[str], typer.Option(help="A shipped benchmark, read as --config: embedded (README, \"The default benchmark\").")] = None
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")] = None
    cpus_per_cell: Annotated[Optional[float], typer.Option(help="Ray: CPUs reserved per cell (default: --threads, else 1).")] = None
    gpus_per_cell: Annotated[Optional[float], typer.Option(help="Ray: GPUs per cell, fractional allowed (default: 1 on CUDA, else 0).")] = None


def flag_parameters(options: type[RunOptions]) -> list[inspect.Parameter]:
    """The Typer parameters of an options class: every field but ``methods`` and ``explicit``."""
    hints = typing.get_type_hints(options, include_extras=True)
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
            for f in fields(options) if f.metadata.get("flag", True)]


def with_run_options(first: inspect.Parameter, options: type[RunOptions] = RunOptions) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``ctx``, ``first`` (its methods flag) and every flag of ``options``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        first_keyword = first.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        parameters = [context, first_keyword, *flag_parameters(options)]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate


# --- flag values ---------------------------------------------------------------------------------

def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_corruptions(text: str, dataset: str = "mnist") -> tuple[str, ...]:
    """Images: 'all' = the 15 common corruptions in the standard order, 'extra' = the 4 extra ones
    (corruptions.expand_names: the same words in every command), 'none' for ImageNet-R. The
    datasets that are not images (watch, sentiment): 'natural', 'shifts' (the generated ones) and
    'all' (both)."""
    from cema_cli.data import NATURAL_DOMAINS, SHIFT_DOMAINS

    if not split_list(text):
        raise CemaError("--corruption is empty; give a name, a comma list, 'all' (15) or 'extra' (4).")
    if dataset not in NATURAL_DOMAINS:
        from cema_cli.corruptions import expand_names

        return expand_names(text, also=("none",))
    natural, shifts = NATURAL_DOMAINS[dataset], SHIFT_DOMAINS[dataset]
    groups = {"all": natural + shifts, "natural": natural, "shifts": shifts}
    return tuple(dict.fromkeys(name for part in split_list(text) for name in groups.get(part, (part,))))


def parse_severities(text: str) -> tuple[int, ...]:
    if text.strip() == "all":
        return (1, 2, 3, 4, 5)
    try:
        values = tuple(int(part) for part in split_list(text))
    except ValueError:
        raise CemaError(f"--severity {text!r} is not a number or list; use e.g. 5 or 1,3,5 or all.") from None
    if not values:
        raise CemaError(f"--severity {text!r} is empty; give 1-5, a comma list such as 1,3,5, or all.")
    return values


def check_metric(metric: str) -> None:
    """--metric accuracy|error; anything else is refused by name (exit 2)."""
    from cema_cli.results.report import METRICS

    if metric not in METRICS:
        raise unknown_name("metric", metric, METRICS)


def resolve_methods(text: str) -> list[str]:
    from cema_cli.strategies import STRATEGIES

    methods = STRATEGIES.names() if text.strip() == "all" else split_list(text)
    if not methods:
        raise CemaError("no method given; pass e.g. --methods cema,tent,source or all.")
    return methods


def parse_options(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``--option cema.warmup_samples=640`` -> {"cema": {"warmup_samples": "640"}}."""
    options: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise CemaError(f"--option {pair!r} is not METHOD.NAME=VALUE; e.g. --option eata.fisher_beta=1000.")
        options.setdefault(method.strip(), {})[name.strip()] = value.strip()
    return options


def checked_options(options: dict[str, dict[str, str]], methods: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """An option for a method that does not run would be silently ignored: refuse it."""
    for method in options:
        if method not in methods:
            raise CemaError(f"--option {method}.* is given but {method!r} is not run; add it to --method(s) ({', '.join(methods)}) or drop the option.")
    return options


def model_list(text: str | None) -> tuple[str | None, ...]:
    """--edge/--cloud: a model, or a comma list (an axis of model pairs); None: the dataset's."""
    models = tuple(split_list(text)) if text is not None else ()
    return models or (None,)


def bit_rate(flag: str) -> Callable[[str | None], float | None]:
    return lambda text: None if text is None else parse_bit_rate(text, flag)


def same(value: Any) -> Any:
    return value


def budget_points(values: tuple[Any, ...], frame_rate: float | None, batch_size: int) -> list[int | None]:
    """Budget points from flags (text), the file (bytes or text) or a study (bytes or None)."""
    points = [v if v is None or isinstance(v, int) else parse_rate(str(v), frame_rate, batch_size) for v in values]
    if not points:
        raise CemaError("a budget option is empty; give e.g. 16kB, a comma list, or unlimited.")
    return list(dict.fromkeys(points))


# --- from the flags, a --config file and a resumed study to RunConfigs ----------------------------

RUN_FIELDS = ("dataset", "samples", "batch_size", "device", "protocol", "order", "dirichlet", "label_sampler", "gradual",
              "window", "constants", "preset", "data_root", "subset", "clean_root", "workers", "edge_checkpoint",
              "cloud_checkpoint", "random_init", "input_size", "amp", "channels_last", "collapse_share")
# flag -> (the setting it gives, how the flag's value becomes the setting's); toml_config.py and
# run/record.py name the settings of a file and of a study the same way.
FLAG_SETTINGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "methods": ("methods", lambda text: tuple(resolve_methods(text))),
    "corruption": ("corruptions", lambda text: tuple(split_list(text))),  # groups expand per dataset (build_configs)
    "severity": ("severities", parse_severities),
    "seed": ("seeds", lambda seed: (seed,)),
    "seeds": ("seeds", seed_list),  # after seed: when given, it is the seeds
    "edge": ("edges", model_list),
    "cloud": ("clouds", model_list),
    "uplink_budget": ("uplink_budgets", lambda text: tuple(split_list(text))),
    "downlink_budget": ("downlink_budgets", lambda text: tuple(split_list(text))),
    "uplink_encoding": ("channel.uplink_encoding", same),
    "uplink_delay": ("channel.uplink_delay_batches", same),
    "downlink_delay": ("channel.downlink_delay_batches", same),
    "sync_period": ("channel.sync_period_batches", same),
    "overflow": ("channel.overflow", same),
    "rtt": ("costs.rtt_ms", same),
    "uplink_rate": ("costs.uplink_rate_bps", bit_rate("--uplink-rate")),
    "downlink_rate": ("costs.downlink_rate_bps", bit_rate("--downlink-rate")),
    "batch_interval": ("costs.batch_interval_s", same),
    "cloud_price": ("costs.cloud_price_per_hour", same),
    "cloud_throughput": ("costs.cloud_throughput_gflops", same),
    **{name: (name, same) for name in RUN_FIELDS},
}
# Flags that change what a study computes: typing one builds the grid from the flags.
SETTING_FLAGS = frozenset(FLAG_SETTINGS) | {"option", "config", "frame_rate"}


def flag_settings(options: RunOptions, names: Any) -> dict[str, Any]:
    settings = {}
    for name in names:
        value = getattr(options, name)
        if name != "seeds" or value is not None:
            setting, parse = FLAG_SETTINGS[name]
            settings[setting] = parse(value)
    return settings


def layered_settings(options: RunOptions, file: Any = None, study: Any = None) -> dict[str, Any]:
    """Every setting from the first layer that gives it: typed flags, the file, the study, defaults."""
    layers = [flag_settings(options, [n for n in FLAG_SETTINGS if options.typed(n)]), file.settings if file else {},
              study.defaults() if study else {}, flag_settings(options, FLAG_SETTINGS)]
    names = dict.fromkeys(name for layer in layers for name in layer)
    return {name: next(layer[name] for layer in layers if name in layer) for name in names}


def distinct(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``--severity 5,5`` or ``--methods bn,bn`` runs each once: a results.csv holds one row per
    method and domain (``cema report`` refuses repeats)."""
    return tuple(dict.fromkeys(values))


def method_options(methods: tuple[str, ...], options: RunOptions, file: Any, study: Any) -> dict[str, dict[str, Any]]:
    """Each running method's options, key by key: --option, else the file's table, else the study's."""
    flags = checked_options(parse_options(options.option or []), methods)
    layers = [study.method_options if study else {}, file.method_tables if file else {}, flags]  # later wins
    merged = {m: {k: v for layer in layers for k, v in layer.get(m, {}).items()} for m in methods}
    return {m: values for m, values in merged.items() if values}


def build_configs(options: RunOptions, file: Any = None, study: Any = None) -> list[RunConfig]:
    """The validated RunConfigs of the options, a --config file (toml_config.RunFile) and a
    resumed study (run.record.StudyRecord): one per model pair, budget point and seed, in that order."""
    settings = layered_settings(options, file, study)
    methods = distinct(settings["methods"])
    part = {prefix: {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith(prefix + ".")} for prefix in ("channel", "costs")}
    corruptions = parse_corruptions(",".join(settings["corruptions"]), settings["dataset"])
    base = RunConfig(methods=methods, corruptions=corruptions, severities=distinct(settings["severities"]),
                     channel=ChannelConfig(**part["channel"]), costs=CostModel(**part["costs"]),
                     method_options=method_options(methods, options, file, study), **{name: settings[name] for name in RUN_FIELDS})
    ups, downs = (budget_points(settings[axis], options.frame_rate, base.batch_size) for axis in ("uplink_budgets", "downlink_budgets"))
    return [replace(base, edge=edge, cloud=cloud, seed=seed,
                    channel=replace(base.channel, uplink_budget_bytes=up, downlink_budget_bytes=down)).validate()
            for edge in settings["edges"] for cloud in settings["clouds"] for up in ups for down in downs for seed in settings["seeds"]]


# --- the link between edge and cloud (issue 24) ------------------------------------------------

def link_options(options: RunOptions, server_dir: Path | None = None) -> tuple[Any, ...]:
    """The links of the run, in the order run: ``--link simulated,live`` runs both (the validation
    report). None is the simulated channel. Every option of a real link is checked here, before
    anything loads; a real link's options without ``--link live`` are refused."""
    from cema_cli.link.options import LINKS, LinkOptions

    modes = list(dict.fromkeys(split_list(options.link)))
    for mode in modes:
        if mode not in LINKS:
            raise unknown_name("--link", mode, LINKS)
    up, down = shape_rates(options.shape)
    live = LinkOptions(mode="live", cloud_url=options.cloud_url, timing=options.timing, frame_rate=options.frame_rate,
                       shape_up_bps=up, shape_down_bps=down, shape_rtt_ms=options.shape_rtt, shape_loss=options.shape_loss,
                       shaper=options.shaper, token=options.link_token, tls_ca=path_text(options.tls_ca),
                       tls_cert=path_text(options.tls_cert), tls_key=path_text(options.tls_key), edge_id=options.edge_id,
                       timeout_s=options.link_timeout, server_dir=str(server_dir) if server_dir else None)
    if "live" not in modes:
        replace(live, mode="simulated").validate()
    return tuple(live.validate() if mode == "live" else None for mode in modes or ["simulated"])


def shape_rates(text: str | None) -> tuple[float | None, float | None]:
    """--shape UP or UP,DOWN in bits per second (one rate: both ways)."""
    if text is None:
        return None, None
    parts = split_list(text)
    if len(parts) not in (1, 2):
        raise CemaError(f"--shape {text!r}: give a rate (2Mbit, both ways) or two (2Mbit,50Mbit: up, down).")
    rates = [parse_bit_rate(part, "--shape") for part in parts]
    return rates[0], rates[-1]


def with_shaped_costs(config: RunConfig, options: RunOptions) -> RunConfig:
    """A shaped live link's rates and round trip stand in for the cost model's ones not given, so
    the modelled columns predict that link (the validation report compares the two)."""
    up, down = shape_rates(options.shape)
    costs = config.costs
    filled = {"uplink_rate_bps": costs.uplink_rate_bps if costs.uplink_rate_bps is not None else up,
              "downlink_rate_bps": costs.downlink_rate_bps if costs.downlink_rate_bps is not None else down,
              "rtt_ms": costs.rtt_ms if costs.rtt_ms is not None or not options.shape_rtt else options.shape_rtt}
    return replace(config, costs=replace(costs, **filled))


def path_text(path: Path | None) -> str | None:
    return str(path) if path is not None else None
