"""Real shaping of the edge-cloud link.

- As root on Linux (``ip`` and ``tc`` present): the cloud runs in its own network namespace,
  joined to the edge by a veth pair, and each direction leaves through a ``tc`` token bucket
  filter (``tbf``): the kernel paces every TCP segment, headers included.
- Otherwise: an application-level token bucket paces the bytes each side hands to its socket
  (the TCP/IP headers are not counted), and the row says so.

This kernel has no ``netem``, so a round-trip time and message loss are always emulated in the
application layer (half the round trip before each message, each way; a lost message is an
uplink message dropped whole, as a datagram would be), and the row says that too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cema_cli.errors import CemaError
from cema_cli.link.options import LinkOptions

BURST_BYTES = 16 * 1024  # tbf and the application bucket alike: 65 ms at 2 Mbit/s, 16 ms at 8 Mbit/s
CHUNK_BYTES = 16 * 1024
_names = itertools.count()


class TokenBucket:
    """``rate_bps`` bits per second with bursts of at most ``burst`` bytes. ``reserve(n)`` takes n
    bytes' worth of tokens (going into debt when short) and returns how long to wait before
    sending them. Thread-safe."""

    def __init__(self, rate_bps: float, burst: int = BURST_BYTES) -> None:
        self.rate, self.burst = rate_bps / 8.0, burst
        self.tokens, self.stamp = float(burst), time.monotonic()
        self.lock = threading.Lock()

    def reserve(self, nbytes: int) -> float:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - nbytes
            self.stamp = now
            return max(0.0, -self.tokens / self.rate)


@dataclass
class Pacer:
    """How one direction of a connection sends: an optional application-level token bucket, a
    one-way delay and a loss share (both application layer); ``seed`` fixes which messages are lost."""

    bucket: TokenBucket | None = None
    delay_s: float = 0.0
    loss: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def lost(self) -> bool:
        return self.loss > 0 and self.rng.random() < self.loss

    async def write(self, writer: Any, buffers: list[Any], queued_at: float) -> None:
        """Write one message: not before ``queued_at`` + the delay, then at the bucket's rate."""
        wait = queued_at + self.delay_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.bucket is None:
            writer.writelines(buffers)
        else:
            for chunk in chunks(buffers, CHUNK_BYTES):
                pause = self.bucket.reserve(len(chunk))
                if pause:
                    await asyncio.sleep(pause)
                writer.write(chunk)
                await writer.drain()
        await writer.drain()


def chunks(buffers: list[Any], size: int) -> Iterator[memoryview]:
    """The bytes of ``buffers`` in slices of at most ``size`` (views, no copies)."""
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        for start in range(0, len(view), size):
            yield view[start:start + size]


def app_pacers(up_bps: float | None, down_bps: float | None, rtt_ms: float, loss: float, seed: int) -> tuple[Pacer, Pacer]:
    """(uplink, downlink) pacers of the application layer: buckets only for the given rates."""
    half = rtt_ms / 2000.0
    return (Pacer(TokenBucket(up_bps) if up_bps else None, half, loss, seed),
            Pacer(TokenBucket(down_bps) if down_bps else None, half))


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



# --- the kernel's token bucket: a veth pair into a network namespace --------------------------

def tc_unavailable() -> str | None:
    """Why the tc shaper cannot run here, or None when it can."""
    if sys.platform != "linux":
        return f"tc shaping needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "tc shaping needs root (network namespaces, veth pairs and qdiscs)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    return f"tc shaping needs the {' and '.join(missing)} command(s) (iproute2)" if missing else None


@dataclass(frozen=True)
class ShapedNamespace:
    """A network namespace holding the cloud's end of a veth pair; the edge's end stays here."""

    name: str
    edge_dev: str
    cloud_dev: str
    edge_ip: str
    cloud_ip: str

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a process inside the namespace."""
        return ["ip", "netns", "exec", self.name]


def describe_rates(up_bps: float | None, down_bps: float | None) -> str:
    return f"{rate_text(up_bps)} up, {rate_text(down_bps)} down"


def rate_text(bps: float | None) -> str:
    if not bps:
        return "unshaped"
    for unit, size in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if bps >= size:
            return f"{bps / size:g}{unit}"
    return f"{bps:g}bit"


@contextlib.contextmanager
def shaped_namespace(up_bps: float | None, down_bps: float | None) -> Iterator[ShapedNamespace]:
    """A namespace and veth pair with a tbf qdisc on each shaped direction's egress; removed on
    exit, whatever happened (deleting the namespace deletes both veth ends)."""
    reason = tc_unavailable()
    if reason:
        raise CemaError(f"--shaper tc: {reason}; use --shaper app (an application-level token bucket) or run as root.")
    serial = f"{os.getpid() % 10**7}{next(_names)}"[-9:]
    names = ShapedNamespace(f"cema{serial}", f"ce{serial}", f"cc{serial}", *free_pair())
    try:
        build(names, up_bps, down_bps)
        yield names
    finally:
        run_quietly(["ip", "netns", "del", names.name])
        run_quietly(["ip", "link", "del", names.edge_dev])


def build(ns: ShapedNamespace, up_bps: float | None, down_bps: float | None) -> None:
    inside = ["ip", "-n", ns.name]
    for command in (
        ["ip", "netns", "add", ns.name],
        ["ip", "link", "add", ns.edge_dev, "type", "veth", "peer", "name", ns.cloud_dev],
        ["ip", "link", "set", ns.cloud_dev, "netns", ns.name],
        ["ip", "addr", "add", f"{ns.edge_ip}/30", "dev", ns.edge_dev],
        [*inside, "addr", "add", f"{ns.cloud_ip}/30", "dev", ns.cloud_dev],
        ["ip", "link", "set", ns.edge_dev, "up"],
        [*inside, "link", "set", ns.cloud_dev, "up"],
        [*inside, "link", "set", "lo", "up"],
    ):
        run_checked(command)
    if up_bps:
        run_checked(tbf(["tc"], ns.edge_dev, up_bps))  # edge -> cloud leaves through the edge's end
    if down_bps:
        run_checked(tbf(["ip", "netns", "exec", ns.name, "tc"], ns.cloud_dev, down_bps))


def tbf(prefix: list[str], device: str, bps: float) -> list[str]:
    # latency 2 s: a queue deep enough that TCP is paced, not dropped, at any of these rates.
    return [*prefix, "qdisc", "add", "dev", device, "root", "tbf", "rate", f"{int(bps)}bit",
            "burst", str(BURST_BYTES), "latency", "2s"]


def free_pair() -> tuple[str, str]:
    """(edge, cloud) addresses of a 10.x.y.z/30 that no interface here uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
    rng = random.Random(f"{os.getpid()}/{time.time_ns()}")
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(64, 250)}.{rng.randrange(256)}.{rng.randrange(64) * 4}/30")
        edge, cloud = (str(h) for h in net.hosts())
        if f"inet 10.{net.network_address.packed[1]}.{net.network_address.packed[2]}." not in used:
            return edge, cloud
    raise CemaError("no free 10.x.y.0/30 subnet for the shaped link; remove stale cema network namespaces (`ip netns list`).")


def run_checked(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise CemaError(f"shaping the link failed: `{' '.join(command)}`: {done.stderr.strip() or done.returncode}; "
                        "run as root with iproute2's tbf, or use --shaper app.")


def run_quietly(command: list[str]) -> None:
    subprocess.run(command, capture_output=True, check=False)
