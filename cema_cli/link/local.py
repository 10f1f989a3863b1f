"""``--link live`` without ``--cloud-url``: a ``cema serve`` process started for this run on
loopback (or, shaped by tc, in its own network namespace), with a fresh random token, stopped
when the run ends. Its log and statistics go to ``server_dir`` (the run folder)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cema_cli.errors import CemaError
from cema_cli.link.options import TOKEN_ENV, LinkOptions
from cema_cli.link.shaping import ShapedNamespace, describe_rates, shaped_namespace, tc_unavailable

START_TIMEOUT_S = 180.0  # a loaded 2-core machine imports torch slowly


@dataclass(frozen=True)
class LocalServer:
    """A running local server: the options an edge uses to reach it, and how the link is shaped."""

    options: LinkOptions
    shaping: str
    process: subprocess.Popen
    folder: Path


def shaper_for(options: LinkOptions) -> str:
    """'tc' or 'app' (none when nothing is shaped); 'tc' only where it can run."""
    rates = options.shape_up_bps or options.shape_down_bps
    if not rates or options.shaper == "app":
        return "app"
    if options.shaper == "tc":
        return "tc"
    return "app" if tc_unavailable() else "tc"


def shaping_text(options: LinkOptions, shaper: str) -> str:
    """The row's ``link_shaping``: what paced the bytes, and what the application layer added."""
    rates = describe_rates(options.shape_up_bps, options.shape_down_bps)
    if not (options.shape_up_bps or options.shape_down_bps):
        text = "none"
    elif shaper == "tc":
        text = f"tc tbf {rates} (veth pair, network namespace)"
    else:
        text = f"application token bucket {rates} ({tc_unavailable() or 'application shaper chosen'})"
    extras = [f"rtt {options.shape_rtt_ms:g} ms" if options.shape_rtt_ms else "", f"uplink loss {options.shape_loss:g}" if options.shape_loss else ""]
    extras = [e for e in extras if e]
    return text + (f"; {' and '.join(extras)} in the application layer" if extras else "")


@contextlib.contextmanager
def local_server(options: LinkOptions, threads: int, device: str) -> Iterator[LocalServer]:
    """Start ``cema serve`` for this run; stop it (and remove its namespace) on exit."""
    shaper = shaper_for(options)
    folder = Path(options.server_dir) if options.server_dir else Path(tempfile.mkdtemp(prefix="cema-serve-"))
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        namespace = stack.enter_context(shaped_namespace(options.shape_up_bps, options.shape_down_bps)) if shaper == "tc" else None
        token = secrets.token_hex(16)
        process, port = start(options, folder, token, threads, device, namespace)
        stack.callback(stop, process)
        host = namespace.cloud_ip if namespace else "127.0.0.1"
        edge = options.with_local_server(f"{host}:{port}", token, options.tls_cert)
        if shaper == "tc":  # the kernel paces; the application layer keeps only the delay and the loss
            from dataclasses import replace

            edge = replace(edge, shaper="tc")
        yield LocalServer(edge, shaping_text(options, shaper), process, folder)


def server_command(options: LinkOptions, folder: Path, threads: int, device: str, host: str) -> list[str]:
    command = [sys.executable, "-m", "cema_cli", "serve", "--host", host, "--port", "0", "--threads", str(threads),
               "--device", device, "--ready-file", str(folder / "server.ready"), "--out", str(folder)]
    if options.tls_cert:
        command += ["--tls-cert", options.tls_cert, "--tls-key", options.tls_key or ""]
    return command


def start(options: LinkOptions, folder: Path, token: str, threads: int, device: str,
          namespace: ShapedNamespace | None) -> tuple[subprocess.Popen, int]:
    """The server process and its port, once it listens (its log says why when it does not)."""
    ready = folder / "server.ready"
    ready.unlink(missing_ok=True)
    host = namespace.cloud_ip if namespace else "127.0.0.1"
    command = [*(namespace.exec_prefix() if namespace else []), *server_command(options, folder, threads, device, host)]
    env = {**os.environ, TOKEN_ENV: token, "PYTHONPATH": os.pathsep.join(filter(None, [package_root(), os.environ.get("PYTHONPATH")]))}
    log = open(folder / "server.log", "ab")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready.exists():
            return process, int(json.loads(ready.read_text())["port"])
        if process.poll() is not None:
            raise CemaError(f"the local cloud server exited with code {process.returncode} before listening: "
                            f"{log_tail(folder / 'server.log')}")
        time.sleep(0.05)
    stop(process)
    raise CemaError(f"the local cloud server did not listen within {START_TIMEOUT_S:g} s; see {folder / 'server.log'}.")


def package_root() -> str:
    """The folder holding this cema_cli, so that the server runs the same code as the edge."""
    return str(Path(__file__).resolve().parents[2])


def log_tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return "(no log)"


def stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM (the server writes its statistics and exits), then SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def read_stats(folder: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((folder / "server.json").read_text())
    return {}
