"""How the edge reaches its cloud: the simulated channel, or a real link to ``cema serve``.

No torch import: the CLI builds and checks these options before anything heavy loads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cema_cli.errors import CemaError, unknown_name

LINKS = ("simulated", "live")
TIMINGS = ("lockstep", "realtime")
SHAPERS = ("auto", "tc", "app")
TOKEN_ENV = "CEMA_LINK_TOKEN"
EDGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MESSAGE_LIMIT = 256 * 2**20  # bytes of one message after the handshake (a ResNet-50's every parameter is 100 MB)


@dataclass(frozen=True)
class LinkOptions:
    """The link of a run. ``live`` without ``cloud_url`` starts a local ``cema serve`` on loopback.

    - ``timing``: ``lockstep`` (the edge waits at every batch for the cloud's turn: rows equal the
      simulated run's) or ``realtime`` (batches paced at ``frame_rate`` images per second; the
      edge never waits, parameters arrive when they arrive);
    - shaping: ``shape_up_bps``/``shape_down_bps`` limit the rates (a tc token bucket in a network
      namespace as root, else an application-level token bucket; ``shaper`` forces one);
      ``shape_rtt_ms`` and ``shape_loss`` (share of uplink messages dropped) act in the
      application layer, this kernel having no netem;
    - security: ``token`` authenticates the edge (else $CEMA_LINK_TOKEN); ``tls_ca`` verifies a
      TLS server; ``tls_cert``/``tls_key`` make the local server speak TLS.
    """

    mode: str = "simulated"
    cloud_url: str | None = None
    timing: str = "lockstep"
    frame_rate: float | None = None
    shape_up_bps: float | None = None
    shape_down_bps: float | None = None
    shape_rtt_ms: float = 0.0
    shape_loss: float = 0.0
    shaper: str = "auto"
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_pinned: bool = False  # tls_ca is the server's own certificate: no host name check
    edge_id: str | None = None
    timeout_s: float = 300.0  # one lockstep turn; generous: a loaded machine is slow, not dead
    retry_s: float = 1.0  # while offline, try to reconnect at most this often
    max_message_bytes: int = MESSAGE_LIMIT
    server_dir: str | None = None  # where a local server writes server.log and server.json

    @property
    def live(self) -> bool:
        return self.mode == "live"

    @property
    def shaped(self) -> bool:
        return bool(self.shape_up_bps or self.shape_down_bps or self.shape_rtt_ms or self.shape_loss)

    def resolved_token(self) -> str | None:
        return self.token or os.environ.get(TOKEN_ENV) or None

    def validate(self) -> "LinkOptions":
        if self.mode not in LINKS:
            raise unknown_name("--link", self.mode, LINKS)
        if self.timing not in TIMINGS:
            raise unknown_name("--timing", self.timing, TIMINGS)
        if self.shaper not in SHAPERS:
            raise unknown_name("--shaper", self.shaper, SHAPERS)
        if not self.live:
            self.refuse_live_only()
            return self
        if self.cloud_url is not None:
            parse_url(self.cloud_url)
        self.check_numbers()
        self.check_security()
        return self

    def refuse_live_only(self) -> None:
        """Options of a real link given to the simulated one would be ignored: refuse them."""
        given = [flag for flag, value in (("--cloud-url", self.cloud_url), ("--timing realtime", self.timing == "realtime"),
                                          ("--shape", self.shaped), ("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert))
                 if value]
        if given:
            raise CemaError(f"{', '.join(given)} configure a real link; add --link live (or drop them).")

    def check_numbers(self) -> None:
        if self.timing == "realtime" and not (self.frame_rate and self.frame_rate > 0):
            raise CemaError("--timing realtime paces the stream: give --frame-rate IMAGES_PER_SECOND (e.g. 256).")
        if self.shape_loss < 0 or self.shape_loss >= 1:
            raise CemaError(f"--shape-loss {self.shape_loss}: a share of uplink messages in [0, 1), e.g. 0.01.")
        if self.shape_rtt_ms < 0:
            raise CemaError(f"--shape-rtt {self.shape_rtt_ms}: a round-trip time in ms, 0 or more.")
        if self.timeout_s <= 0 or self.retry_s <= 0:
            raise CemaError("--link-timeout must be above 0 seconds.")
        if self.edge_id is not None and not EDGE_ID.fullmatch(self.edge_id):
            raise CemaError(f"--edge-id {self.edge_id!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.")

    def check_security(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise CemaError("--tls-cert and --tls-key go together (the certificate and its private key).")
        if self.tls_cert and self.cloud_url:
            raise CemaError("--tls-cert/--tls-key are the local server's; with --cloud-url give --tls-ca (the certificate that signs the server's).")
        for flag, path in (("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not Path(path).expanduser().is_file():
                raise CemaError(f"{flag} {path}: no such file; give a PEM file.")
        if self.cloud_url and not self.resolved_token():
            raise CemaError(f"--cloud-url needs the server's token: pass --link-token or set ${TOKEN_ENV} (`cema serve` prints it).")

    def check_run(self, config: Any) -> None:
        """Realtime measures the link's timing: the simulated delays and compute delay would
        stack on it, so they are refused (lockstep keeps them: its rows are the simulated ones)."""
        if self.timing != "realtime":
            return
        channel, costs = config.channel, config.costs
        given = [flag for flag, value in (("--uplink-delay", channel.uplink_delay_batches), ("--downlink-delay", channel.downlink_delay_batches),
                                          ("--downlink-budget", channel.downlink_budget_bytes is not None),
                                          ("--cloud-throughput", costs.cloud_throughput_gflops)) if value]
        if given:
            raise CemaError(f"{', '.join(given)} simulate the link's timing, which --timing realtime measures; drop them, "
                            "or use --timing lockstep (--shape-rtt adds a real round trip).")

    def with_local_server(self, url: str, token: str, tls_ca: str | None) -> "LinkOptions":
        """The options an edge uses to reach the local server just started."""
        return replace(self, cloud_url=url, token=token, tls_ca=tls_ca, tls_pinned=tls_ca is not None)


def parse_url(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port); anything else is refused with an example."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", text.strip())
    port = int(match.group(2) or match.group(4)) if match else 0
    if not match or not 0 < port < 65536:
        raise CemaError(f"--cloud-url {text!r} is not HOST:PORT; use e.g. 127.0.0.1:7741 or cloud.example.org:7741.")
    return match.group(1) or match.group(3), port
