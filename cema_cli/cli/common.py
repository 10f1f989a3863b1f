"""What every command module shares: the consoles, one-line error handling, and the run options
of bench, compare and sweep with their parsing into RunConfigs. No torch import at module level."""

from __future__ import annotations

import contextlib
import inspect
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

try:  # typer 0.2x vendors click; older typer uses the click package
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors

from cema_cli.config import ChannelConfig, CostModel, RunConfig, parse_bit_rate, parse_rate
from cema_cli.errors import CemaError
from cema_cli.results.health import COLLAPSE_SHARE


console = Console()
# Errors are one line wherever stderr goes (a log wraps nothing), and never read as rich markup.
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

DEFAULT_METHOD = "cema"
DEFAULT_COMPARE = "cema,tent,eata,source"

# --- error handling ---------------------------------------------------------------------------

def print_error(message: str, kind: str = "error") -> None:
    """``kind: message`` on one line; the message is plain text (``[/x]`` is printed as is)."""
    line = " ".join(str(message).split())
    style = "bold red" if kind == "error" else "yellow"
    err_console.print(Text.assemble((f"{kind}:", style), " ", line), soft_wrap=True)


def usage_message(error: Any) -> str:
    """click's message plus where to look: ``cema bench --help``, or the flag this command uses."""
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "cema"
    hint = ""
    if isinstance(error, click_errors.NoSuchOption) and error.option_name == "-o":
        hint = " (-o is --option of bench and compare; here write --output)"
    return f"{error.format_message().rstrip('.')}{hint}; see `{command} --help`."


def print_help_and_exit(error: Any) -> None:
    """``cema`` alone: the help, as click would print it."""
    typer.echo(error.ctx.get_help())
    sys.exit(0)


@contextlib.contextmanager
def user_errors(verbose: bool) -> Iterator[None]:
    """One clear line and a non-zero exit for every failure; a traceback only with --verbose."""
    try:
        yield
    except CemaError as error:
        if verbose:
            traceback.print_exc()
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        print_error("rows finished so far are kept in results.csv", "interrupted")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except OSError as error:  # the file system refused: a path or permission the user can fix
        if verbose:
            traceback.print_exc()
        print_error(f"{error.filename or 'a file'}: {error.strerror or error}; check the path, its permissions and free space.")
        raise typer.Exit(2) from None
    except Exception as error:  # noqa: BLE001 - the last line of defence for a CLI
        if verbose:
            traceback.print_exc()
        print_error(f"{type(error).__name__}: {error} (an internal error: run with --verbose for the traceback and report it)")
        raise typer.Exit(1) from None

# --- option parsing ---------------------------------------------------------------------------

def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_corruptions(text: str) -> tuple[str, ...]:
    """'all' = the 15 common corruptions in the standard order; 'extra' = the 4 extra ones."""
    from cema_cli.corruptions import ALL, COMMON, EXTRA

    names: list[str] = []
    for part in split_list(text):
        expanded = {"all": COMMON, "extra": EXTRA, "all19": ALL}.get(part, (part,))
        names.extend(n for n in expanded if n not in names)
    if not names:
        raise CemaError("--corruption is empty; give a name, a comma list, or 'all'.")
    return tuple(names)


def parse_severities(text: str) -> tuple[int, ...]:
    if text.strip() == "all":
        return (1, 2, 3, 4, 5)
    try:
        values = tuple(int(part) for part in split_list(text))
    except ValueError:
        raise CemaError(f"--severity {text!r} is not a number or list; use e.g. 5 or 1,3,5 or all.") from None
    return values


def checked_options(options: dict[str, dict[str, str]], methods: list[str]) -> dict[str, dict[str, str]]:
    """An option for a method that does not run would be silently ignored: refuse it."""
    for method in options:
        if method not in methods:
            raise CemaError(f"--option {method}.* is given but {method!r} is not run; add it to --method(s) ({', '.join(methods)}) or drop the option.")
    return options


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


# --- the shared options of bench and compare ---------------------------------------------------

def _run_options(
    dataset: Annotated[str, typer.Option(help="Dataset name; see `cema list datasets`.")] = "mnist",
    corruption: Annotated[str, typer.Option("--corruption", "-c", help="A name, a comma list, or 'all' (the 15 common ones).")] = "gaussian_noise",
    severity: Annotated[str, typer.Option("--severity", "-s", help="1-5, a comma list, or 'all'.")] = "5",
    samples: Annotated[Optional[int], typer.Option(help="Samples per domain (default: all); a mixed stream's total.")] = None,
    batch_size: Annotated[int, typer.Option(help="Edge batch size.")] = 64,
    seed: Annotated[int, typer.Option(help="Fixes the stream order and every random draw.")] = 0,
    edge: Annotated[Optional[str], typer.Option(help="Edge model (default: the dataset's).")] = None,
    cloud: Annotated[Optional[str], typer.Option(help="Cloud foundation model (default: the dataset's).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    protocol: Annotated[str, typer.Option(help="reset-each-shift (fresh models per domain), continual, mixed, correlated, mixed-correlated or gradual.")] = "reset-each-shift",
    order: Annotated[str, typer.Option(help="Stream permutation family: cema (torch, seeded) or md (Python random, as MD).")] = "cema",
    dirichlet: Annotated[Optional[float], typer.Option(help="Label shift: Dirichlet concentration > 0 (default: class-sorted); correlated protocols.")] = None,
    label_sampler: Annotated[str, typer.Option(help="Label-shift sampler: md or rotta (--dirichlet is RoTTA's gamma).")] = "md",
    gradual: Annotated[str, typer.Option(help="Gradual severity variant: md (1..5..1 for every corruption) or cotta.")] = "md",
    window: Annotated[Optional[int], typer.Option(help="Batch size 1: MD's sliding window of L samples (adapt every L).")] = None,
    constants: Annotated[Optional[str], typer.Option(help="Corruption constants: imagenet or cifar (default: the dataset's).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Published method settings: imagenet, cifar10 or cifar100 (default: the dataset's).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Root folder of an on-disk dataset.")] = None,
    subset: Annotated[Optional[str], typer.Option(help="Image-tree datasets: a count (seeded choice) or a file listing <wnid>/<file> paths.")] = None,
    clean_root: Annotated[Optional[str], typer.Option(help="Clean images for EATA's Fisher set (a class tree or images.npy + labels.npy).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Data loader worker processes (default: one per core, at most 8).")] = None,
    edge_checkpoint: Annotated[Optional[str], typer.Option(help="Edge weights: a state_dict file (torch.load weights_only).")] = None,
    cloud_checkpoint: Annotated[Optional[str], typer.Option(help="Cloud weights: a state_dict file (torch.load weights_only).")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="Random weights for both models (plumbing checks; recorded).")] = False,
    input_size: Annotated[Optional[int], typer.Option(help="Model input side in px (default: each model's own config).")] = None,
    amp: Annotated[Optional[str], typer.Option(help="CUDA autocast dtype: bf16 or fp16.")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Channels-last memory format for the models.")] = False,
    uplink_encoding: Annotated[str, typer.Option(help="Uplink payload: uint8, jpeg or float32.")] = "uint8",
    uplink_budget: Annotated[str, typer.Option(help="Uplink bytes per batch (16kB), a link rate (8Mbit/s, with --frame-rate), or unlimited; a comma list sweeps.")] = "unlimited",
    downlink_budget: Annotated[str, typer.Option(help="Downlink bytes per batch, or unlimited; a comma list sweeps.")] = "unlimited",
    uplink_delay: Annotated[int, typer.Option(help="Uplink delay in batches.")] = 0,
    downlink_delay: Annotated[int, typer.Option(help="Downlink delay in batches.")] = 0,
    sync_period: Annotated[int, typer.Option(help="Send parameters to the edge every K batches.")] = 1,
    overflow: Annotated[str, typer.Option(help="When the budget is exhausted: drop or queue.")] = "drop",
    frame_rate: Annotated[Optional[float], typer.Option(help="Stream images per second, to read budgets given as link rates (8Mbit/s).")] = None,
    rtt: Annotated[Optional[float], typer.Option(help="Modelled link round-trip time in ms (cost columns; see README).")] = None,
    uplink_rate: Annotated[Optional[str], typer.Option(help="Modelled uplink rate, e.g. 10Mbit (upload time, staleness in seconds).")] = None,
    downlink_rate: Annotated[Optional[str], typer.Option(help="Modelled downlink rate, e.g. 50Mbit.")] = None,
    batch_interval: Annotated[Optional[float], typer.Option(help="Seconds between two edge batches (the stream's clock, for --cloud-throughput).")] = None,
    cloud_price: Annotated[Optional[float], typer.Option(help="Price of one cloud GPU-hour: adds cloud_cost per domain.")] = None,
    cloud_throughput: Annotated[Optional[float], typer.Option(help="Cloud GFLOP/s: the parameter delay follows from compute (with --batch-interval), not --downlink-delay.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Method option METHOD.NAME=VALUE (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML run configuration; flags given here win.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder, new or empty (default: cema-runs/<time>-<methods>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the run files of an --out that already holds a run.")] = False,
    min_accuracy: Annotated[Optional[float], typer.Option(help="Exit 1 when a method's mean accuracy is below this, in percent (90 = 90%; values 0-1 are refused as ambiguous).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Several seeds: a count (5 = seeds 0-4) or a list (0,1,2); adds mean ± 95% tables.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per run (default: idle cores / workers; see README).")] = None,
    executor: Annotated[Optional[str], typer.Option(help="Run as resumable cells: serial, process or ray (default with --seeds: process).")] = None,
    collapse_share: Annotated[float, typer.Option(help="Exit 3 when this share of a domain's predictions falls in 2 classes and the labels' does not (see README).")] = COLLAPSE_SHARE,
    edges: Annotated[Optional[int], typer.Option(help="A fleet of N edges sharing one cloud, edge i's corruption order rotated by i (protocol continual by default; see README).")] = None,
    cloud_batching: Annotated[str, typer.Option(help="Fleet cloud batches: per-edge (one edge's uploads) or pooled (their union).")] = "per-edge",
    student: Annotated[Optional[str], typer.Option(help="Fleet students: per-edge (one cloud copy per edge) or shared (default with pooled).")] = None,
    foundation: Annotated[str, typer.Option(help="Fleet foundation model (CEMA): shared or per-edge.")] = "shared",
    cloud_capacity: Annotated[Optional[int], typer.Option(help="Fleet cloud steps per tick (default: unlimited).")] = None,
    cloud_gflops_per_tick: Annotated[Optional[float], typer.Option(help="Fleet cloud compute budget, counted GFLOPs per tick (default: unlimited; --edges 1 for one edge).")] = None,
    scheduler: Annotated[str, typer.Option(help="Fleet cloud queue order: round-robin, fifo or lowest-entropy-first.")] = "round-robin",
    independent: Annotated[bool, typer.Option("--independent/--no-independent", help="Fleet: also run each edge alone, for the collaboration gain.")] = True,
    link: Annotated[str, typer.Option(help="simulated (one process), live (the cloud in a `cema serve` process), or simulated,live (both, side by side).")] = "simulated",
    cloud_url: Annotated[Optional[str], typer.Option(help="Live link: HOST:PORT of a running `cema serve` (default: start one on loopback).")] = None,
    link_token: Annotated[Optional[str], typer.Option(help="Live link: the server's token (default: $CEMA_LINK_TOKEN).")] = None,
    timing: Annotated[str, typer.Option(help="Live link: lockstep (rows equal the simulated ones) or realtime (paced at --frame-rate, never waits).")] = "lockstep",
    shape: Annotated[Optional[str], typer.Option(help="Live link rate, e.g. 2Mbit (both ways) or 2Mbit,50Mbit (up,down): tc tbf as root, else an application token bucket.")] = None,
    shape_rtt: Annotated[float, typer.Option(help="Live link: round-trip time in ms, added in the application layer.")] = 0.0,
    shape_loss: Annotated[float, typer.Option(help="Live link: share of uplink messages lost, in the application layer (0-1).")] = 0.0,
    shaper: Annotated[str, typer.Option(help="Live link shaping: auto (tc as root, else app), tc or app.")] = "auto",
    tls_ca: Annotated[Optional[Path], typer.Option(help="Live link: verify the server's TLS certificate with this PEM file.")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="Live link: the local server speaks TLS with this PEM certificate (and --tls-key).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="Live link: the private key of --tls-cert.")] = None,
    edge_id: Annotated[Optional[str], typer.Option(help="Live link: this edge's name on the server (default: edge-<host>-<pid>).")] = None,
    link_timeout: Annotated[float, typer.Option(help="Live link: seconds a lockstep batch waits for the cloud before the cloud counts as gone.")] = 300.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    """Template: its signature is shared by ``bench`` and ``compare``."""


def with_run_options(first: inspect.Parameter) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``first`` plus every option of ``_run_options``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        shared = inspect.signature(_run_options, eval_str=True)
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        command.__signature__ = shared.replace(parameters=[context, first, *shared.parameters.values()])  # type: ignore[attr-defined]
        # evaluated here: the command's own module need not import the names the options use
        command.__annotations__ = {"ctx": typer.Context, first.name: first.annotation,
                                   **inspect.get_annotations(_run_options, eval_str=True)}
        return command

    return decorate


def build_config(methods: list[str], opts: dict[str, Any]) -> RunConfig:
    """The run the flags describe, with unlimited budgets (``build_configs`` sets the points)."""
    channel = ChannelConfig(
        uplink_encoding=opts["uplink_encoding"], uplink_delay_batches=opts["uplink_delay"],
        downlink_delay_batches=opts["downlink_delay"], sync_period_batches=opts["sync_period"], overflow=opts["overflow"],
    )
    return RunConfig(
        methods=tuple(methods), dataset=opts["dataset"], corruptions=parse_corruptions(opts["corruption"]),
        severities=parse_severities(opts["severity"]), samples=opts["samples"], batch_size=opts["batch_size"],
        seed=opts["seed"], edge=opts["edge"], cloud=opts["cloud"], device=opts["device"], protocol=opts["protocol"],
        constants=opts["constants"], preset=opts["preset"], data_root=opts["data_root"], channel=channel,
        order=opts["order"], dirichlet=opts["dirichlet"], label_sampler=opts["label_sampler"], gradual=opts["gradual"], window=opts["window"],
        subset=opts["subset"], clean_root=opts["clean_root"], workers=opts["workers"],
        edge_checkpoint=opts["edge_checkpoint"], cloud_checkpoint=opts["cloud_checkpoint"], random_init=opts["random_init"],
        input_size=opts["input_size"], amp=opts["amp"], channels_last=opts["channels_last"],
        collapse_share=opts["collapse_share"], costs=cost_model(opts),
        method_options=parse_options(opts["option"] or []),
    )


def cost_model(opts: dict[str, Any]) -> CostModel:
    """The modelled cost columns' assumptions (README, "Cost columns"); a shaped live link's
    rates and round trip stand in for the ones not given, so the model predicts that link."""
    shaped = dict(zip(("up", "down"), shape_rates(opts.get("shape"))))
    rates = {f"{d}link_rate_bps": parse_bit_rate(opts[f"{d}link_rate"], f"--{d}link-rate") if opts[f"{d}link_rate"] is not None else shaped[d]
             for d in ("up", "down")}
    rtt = opts["rtt"] if opts["rtt"] is not None or not opts.get("shape_rtt") else opts["shape_rtt"]
    return CostModel(rtt_ms=rtt, batch_interval_s=opts["batch_interval"], cloud_price_per_hour=opts["cloud_price"],
                     cloud_throughput_gflops=opts["cloud_throughput"], **rates)


def build_configs(methods: list[str], opts: dict[str, Any]) -> list[RunConfig]:
    """One validated configuration per budget point: ``--uplink-budget 0,16kB,unlimited`` sweeps.
    A ``--config`` file fills in what the flags did not set."""
    from dataclasses import replace

    base = build_config(methods, opts)
    explicit = explicit_flags(opts["ctx"])
    if opts["config"] is not None:
        from cema_cli.toml_config import apply_toml

        base = apply_toml(base, opts["config"], explicit)
    base = without_repeats(base)
    checked_options(parse_options(opts["option"] or []), list(base.methods))
    rate = (opts["frame_rate"], base.batch_size)
    ups, downs = (
        budget_list(opts[flag], *rate) if flag in explicit or opts["config"] is None else [getattr(base.channel, field)]
        for flag, field in (("uplink_budget", "uplink_budget_bytes"), ("downlink_budget", "downlink_budget_bytes"))
    )
    return [replace(base, channel=replace(base.channel, uplink_budget_bytes=up, downlink_budget_bytes=down)).validate()
            for up in ups for down in downs]


def without_repeats(config: RunConfig) -> RunConfig:
    """``--severity 5,5`` or ``--methods bn,bn`` runs each once: a results.csv holds one row per
    method and domain (``cema report`` refuses repeats)."""
    from dataclasses import replace

    return replace(config, **{name: tuple(dict.fromkeys(getattr(config, name))) for name in ("methods", "corruptions", "severities")})


def explicit_flags(context: typer.Context) -> set[str]:
    """Names of the options the user typed (not defaults), so they win over a TOML file."""
    return {name for name in context.params if getattr(context.get_parameter_source(name), "name", "") == "COMMANDLINE"}


def budget_list(text: str, frame_rate: float | None, batch_size: int) -> list[int | None]:
    points = list(dict.fromkeys(parse_rate(part, frame_rate, batch_size) for part in split_list(text)))
    if not points:
        raise CemaError("a budget option is empty; give e.g. 16kB, a comma list, or unlimited.")
    return points


def resolve_methods(text: str) -> list[str]:
    from cema_cli.strategies import STRATEGIES

    methods = STRATEGIES.names() if text.strip() == "all" else split_list(text)
    if not methods:
        raise CemaError("no method given; pass e.g. --methods cema,tent,source or all.")
    return methods


def default_out_dir(methods: list[str]) -> Path:
    from cema_cli.results.run_folder import unique_dir

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return unique_dir(Path("cema-runs") / f"{stamp}-{'-'.join(methods)[:60]}")



def link_options(opts: dict[str, Any], server_dir: Path | None = None) -> list[Any]:
    """The links of the run, in the order run: ``--link simulated,live`` runs both (the validation
    report). Every option of a real link is checked here, before anything loads."""
    from dataclasses import replace

    from cema_cli.link.options import LINKS, LinkOptions

    modes = list(dict.fromkeys(split_list(opts["link"])))
    for mode in modes:
        if mode not in LINKS:
            from cema_cli.errors import unknown_name

            raise unknown_name("--link", mode, LINKS)
    up, down = shape_rates(opts["shape"])
    live = LinkOptions(mode="live", cloud_url=opts["cloud_url"], timing=opts["timing"], frame_rate=opts["frame_rate"],
                       shape_up_bps=up, shape_down_bps=down, shape_rtt_ms=opts["shape_rtt"], shape_loss=opts["shape_loss"],
                       shaper=opts["shaper"], token=opts["link_token"], tls_ca=path_text(opts["tls_ca"]),
                       tls_cert=path_text(opts["tls_cert"]), tls_key=path_text(opts["tls_key"]), edge_id=opts["edge_id"],
                       timeout_s=opts["link_timeout"], server_dir=str(server_dir) if server_dir else None)
    if "live" not in modes:
        replace(live, mode="simulated").validate()  # a real link's options without --link live are refused
    return [live.validate() if mode == "live" else None for mode in modes or ["simulated"]]


def shape_rates(text: str | None) -> tuple[float | None, float | None]:
    """--shape UP or UP,DOWN in bits per second (one rate: both ways)."""
    if text is None:
        return None, None
    parts = split_list(text)
    if len(parts) not in (1, 2):
        raise CemaError(f"--shape {text!r}: give a rate (2Mbit, both ways) or two (2Mbit,50Mbit: up, down).")
    rates = [parse_bit_rate(part, "--shape") for part in parts]
    return rates[0], rates[-1]


def path_text(path: Path | None) -> str | None:
    return str(path) if path is not None else None
