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
from dataclasses import replace
from pathlib import Path

from cema_cli.errors import CemaError
from cema_cli.link.options import TOKEN_ENV, LinkOptions
from cema_cli.link.shaping import ShapedNamespace, shaped_namespace, shaper_for, shaping_text

START_TIMEOUT_S = 600.0  # a loaded 2-core machine imports torch slowly (105 s seen); an exit is noticed at once


class LocalServer:
    """A local server being started: ``options()`` waits until it listens and returns the
    options an edge uses to reach it; ``shaping`` says how the link is shaped."""

    def __init__(self, options: LinkOptions, shaper: str, folder: Path, namespace: ShapedNamespace | None,
                 token: str, process: subprocess.Popen) -> None:
        self.base, self.shaper, self.folder, self.namespace, self.token, self.process = options, shaper, folder, namespace, token, process
        self.shaping = shaping_text(options, shaper)
        self._options: LinkOptions | None = None

    def options(self) -> LinkOptions:
        if self._options is None:
            port = wait_until_listening(self.process, self.folder)
            host = self.namespace.cloud_ip if self.namespace else "127.0.0.1"
            edge = self.base.with_local_server(f"{host}:{port}", self.token, self.base.tls_cert)
            # tc paces in the kernel: the application layer keeps only the round trip and the loss
            self._options = replace(edge, shaper="tc") if self.shaper == "tc" else edge
        return self._options


@contextlib.contextmanager
def local_server(options: LinkOptions, threads: int, device: str, extra: list[str] | None = None) -> Iterator[LocalServer]:
    """Start ``cema serve`` for this run (not waiting for it: the edge loads its data meanwhile);
    stop it, and remove its namespace, on exit."""
    shaper = shaper_for(options)
    folder = Path(options.server_dir) if options.server_dir else Path(tempfile.mkdtemp(prefix="cema-serve-"))
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        namespace = stack.enter_context(shaped_namespace(options.shape_up_bps, options.shape_down_bps)) if shaper == "tc" else None
        token = secrets.token_hex(16)
        process = start(folder, token, [*server_command(options, folder, threads, device, namespace), *(extra or [])], namespace)
        stack.callback(Path.unlink, folder / "server.ready", missing_ok=True)
        stack.callback(stop, process)
        yield LocalServer(options, shaper, folder, namespace, token, process)


def server_command(options: LinkOptions, folder: Path, threads: int, device: str, namespace: ShapedNamespace | None) -> list[str]:
    host = namespace.cloud_ip if namespace else "127.0.0.1"
    command = [sys.executable, "-m", "cema_cli", "serve", "--host", host, "--port", "0", "--threads", str(threads),
               "--device", device, "--ready-file", str(folder / "server.ready"), "--out", str(folder)]
    if options.tls_cert:
        command += ["--tls-cert", options.tls_cert, "--tls-key", options.tls_key or ""]
    return command


def start(folder: Path, token: str, command: list[str], namespace: ShapedNamespace | None) -> subprocess.Popen:
    (folder / "server.ready").unlink(missing_ok=True)
    command = [*(namespace.exec_prefix() if namespace else []), *command]
    env = {**os.environ, TOKEN_ENV: token, "PYTHONPATH": os.pathsep.join(filter(None, [package_root(), os.environ.get("PYTHONPATH")]))}
    with open(folder / "server.log", "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_until_listening(process: subprocess.Popen, folder: Path) -> int:
    """The server's port once it listens (its log says why when it does not)."""
    ready = folder / "server.ready"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready.exists():
            return int(json.loads(ready.read_text())["port"])
        if process.poll() is not None:
            raise CemaError(f"the local cloud server exited with code {process.returncode} before listening: "
                            f"{log_tail(folder / 'server.log')}")
        time.sleep(0.05)
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
