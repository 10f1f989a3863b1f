"""Servers and probes for the real-link tests: every server is a `cema serve` process on a free
port (port 0, read back from its ready file), stopped by pid when the test ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cema_cli.link.client import LinkClient
from cema_cli.link.options import LinkOptions
from cema_cli.link.shaping import Pacer
from cema_cli.run.sweep import TIMING_COLUMNS  # measured: never equal between two runs

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240.0  # a loaded 2-core CI machine imports torch slowly


@dataclass
class Server:
    folder: Path
    token: str
    args: tuple[str, ...]
    port: int = 0
    process: subprocess.Popen | None = None
    log: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Server":
        """Start (or restart, on the same port once it has one) and wait until it listens."""
        ready = self.folder / f"ready-{len(self.log)}"
        log = self.folder / f"server-{len(self.log)}.log"
        self.log.append(log)
        command = [sys.executable, "-m", "cema_cli", "serve", "--port", str(self.port), "--ready-file", str(ready),
                   "--out", str(self.folder), "--threads", str(torch.get_num_threads()), *self.args]  # the edge's count
        env = {**os.environ, "CEMA_LINK_TOKEN": self.token, "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.exists():
            assert self.process.poll() is None, f"server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"server did not listen in time: {log.read_text()[-2000:]}"
            time.sleep(0.05)
        self.port = json.loads(ready.read_text())["port"]
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)

    def options(self, **changes: Any) -> LinkOptions:
        return LinkOptions(mode="live", cloud_url=self.url, token=self.token, **changes)

    def status(self) -> dict[str, Any]:
        """The server's statistics, asked over the link by a probe edge."""
        client = LinkClient(self.options(), f"probe-{os.getpid()}-{time.monotonic_ns()}", Pacer(), {"bps": 0, "delay_s": 0})
        try:
            client.connect()
            return client.request("status", {}, timeout=60).fields
        finally:
            client.close()

    def wait_for(self, predicate: Any, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.status()
            if predicate(stats):
                return stats
            assert time.monotonic() < deadline, f"server never reached the state: {stats}"
            time.sleep(0.2)


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without what a run measures (times) and the link's own columns."""
    link = {"link", "link_timing", "link_shaping", "link_status", "cloud_url", "cloud_device", "offline_seconds", "uploads_lost",
            "reconnects", "wire_uplink_bytes", "wire_downlink_bytes", "wire_overhead", "measured_upload_seconds",
            "measured_staleness_seconds", "upload_messages", "reproducible"}
    return {k: v for k, v in row.items() if k not in set(TIMING_COLUMNS) | link}
