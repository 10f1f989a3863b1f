"""``cema serve``: the cloud half of real edge-cloud links (cema_cli/link/server.py). Edges reach
it with ``cema bench|compare --link live --cloud-url HOST:PORT``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cema_cli.config import parse_bit_rate, parse_bytes
from cema_cli.errors import CemaError, unknown_name

SCHEDULERS = ("round-robin", "fifo", "lowest-entropy-first")
FOUNDATIONS = ("shared", "per-edge")


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface; then use TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port; --ready-file says which).")] = 7741,
    link_token: Annotated[Optional[str], typer.Option("--link-token", help="Shared token edges must present (default: $CEMA_LINK_TOKEN, else a new one, printed).")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="PEM certificate: the link speaks TLS.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="PEM private key of --tls-cert.")] = None,
    max_edges: Annotated[int, typer.Option(help="Edges connected at once; more are refused.")] = 64,
    cloud_capacity: Annotated[int, typer.Option(help="Cloud steps running at once (worker threads).")] = 1,
    scheduler: Annotated[str, typer.Option(help="Next session served: round-robin (over edges), fifo or lowest-entropy-first.")] = "round-robin",
    foundation: Annotated[str, typer.Option(help="CEMA's foundation model: shared by the edges of a run, or per-edge.")] = "shared",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[int, typer.Option(help="Torch threads of the cloud's steps.")] = 1,
    max_message: Annotated[str, typer.Option(help="Largest message after the handshake, e.g. 256MB.")] = "256MB",
    shape: Annotated[Optional[str], typer.Option(help="Pace every answer at this rate (application token bucket), e.g. 8Mbit.")] = None,
    ready_file: Annotated[Optional[Path], typer.Option(help="Write {host, port, pid} here once listening.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for server.json (statistics, rewritten atomically).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    """Serve the cloud halves of edges' runs until SIGTERM or Ctrl-C."""
    from cema_cli.cli.common import user_errors

    with user_errors(verbose):
        options = serve_options(host, port, link_token, tls_cert, tls_key, max_edges, cloud_capacity, scheduler, foundation, device,
                                threads, max_message, shape, ready_file, out)
        from cema_cli.link.server import serve

        serve(options)


def serve_options(host: str, port: int, token: str | None, tls_cert: Path | None, tls_key: Path | None, max_edges: int, capacity: int,
                  scheduler: str, foundation: str, device: str, threads: int, max_message: str, shape: str | None,
                  ready_file: Path | None, out: Path | None):  # noqa: ANN201 - ServeOptions, imported late (torch)
    """The server's options, every one checked before anything loads."""
    if scheduler not in SCHEDULERS:
        raise unknown_name("--scheduler", scheduler, SCHEDULERS)
    if foundation not in FOUNDATIONS:
        raise unknown_name("--foundation", foundation, FOUNDATIONS)
    for flag, value, low in (("--port", port, 0), ("--max-edges", max_edges, 1), ("--cloud-capacity", capacity, 1), ("--threads", threads, 1)):
        if value < low or (flag == "--port" and value > 65535):
            raise CemaError(f"{flag} {value} is out of range; give a whole number of at least {low}" + (" and at most 65535." if flag == "--port" else "."))
    if bool(tls_cert) != bool(tls_key):
        raise CemaError("--tls-cert and --tls-key go together (the certificate and its private key).")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path is not None and not path.is_file():
            raise CemaError(f"{flag} {path}: no such file; give a PEM file.")
    limit = parse_bytes(max_message)
    if not limit or limit < 2**16:
        raise CemaError(f"--max-message {max_message!r}: give a size of at least 64kB, e.g. 256MB.")
    from cema_cli.link.server import ServeOptions

    return ServeOptions(host=host, port=port, token=token, tls_cert=str(tls_cert) if tls_cert else None, tls_key=str(tls_key) if tls_key else None,
                        max_edges=max_edges, capacity=capacity, scheduler=scheduler, foundation=foundation, device=resolve(device),
                        threads=threads, max_message_bytes=limit, shape_down_bps=parse_bit_rate(shape, "--shape") if shape else None,
                        ready_file=str(ready_file) if ready_file else None, out=str(out) if out else None)


def resolve(device: str) -> str:
    from cema_cli.run.api import resolve_device

    return resolve_device(device).type
