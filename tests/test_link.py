"""The edge and the cloud as two processes over a real socket (issue 24): lockstep rows equal the
simulated ones, realtime rows are measured, faults are survived, bad messages are refused.

The edge is this test process (cema_cli.api.run_benchmark with a live link); each cloud is a
`cema serve` process on a free loopback port. Timeouts are generous: a loaded 2-core machine is
slow, not broken."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import torch

from cema_cli.run.api import Events, run_benchmark
from cema_cli.config import RunConfig
from cema_cli.errors import CemaError
from cema_cli.link import wire
from link_helpers import ROOT, Server, comparable

SIX = ("source", "bn", "tent", "eata", "cema", "cotta")
THREE = ("gaussian_noise", "snow", "contrast")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Both ends compute with one thread (the server gets the edge's count): same sums, same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_thread):
    served = Server(tmp_path_factory.mktemp("cloud"), "module-token", ()).start()
    yield served
    served.kill(signal.SIGTERM)


# Small and fast: few samples, CoTTA with 4 augmentations, EATA's Fisher from 128 clean images,
# CEMA's cloud steps on 8 uploads (replay from 16), so that two batches of 16 make it learn.
QUICK = {"cotta": {"augmentations": 4}, "eata": {"fisher_samples": 128},
         "cema": {"cloud_batch": 8, "replay_min": 16, "replay_batch": 8, "replay_only_batch": 16}}


def config(**changes) -> RunConfig:
    methods = changes.get("methods", ("tent",))
    options = {m: o for m, o in QUICK.items() if m in methods}
    base = RunConfig(methods=("tent",), corruptions=("gaussian_noise",), samples=32, batch_size=16, device="cpu", method_options=options)
    return replace(base, **changes)


def assert_same_rows(simulated, live) -> None:
    assert [comparable(r) for r in live] == [comparable(r) for r in simulated]
    assert all(r["link"] == "live" and r["reproducible"] for r in live)


def test_lockstep_rows_equal_the_simulated_rows(server) -> None:
    """Six methods, three corruptions: every row the same, bit for bit, as in one process."""
    run = config(methods=SIX, corruptions=THREE)
    simulated = run_benchmark(run)
    live = run_benchmark(run, link=server.options())
    assert_same_rows(simulated, live)
    cloud = [r for r in live if r["method"] in ("tent", "eata", "cema", "cotta")]
    learnt = {(r["method"], r["corruption"]): (r["cloud_backward_samples"], r["downlink_bytes"], r["sync_events"]) for r in cloud}
    assert all(min(counts) > 0 for counts in learnt.values()), learnt
    assert all(r["wire_uplink_bytes"] > r["uplink_bytes"] and r["link_status"] == "ok" for r in cloud)
    edge_only = [r for r in live if r["method"] in ("source", "bn")]
    assert all(r["wire_uplink_bytes"] == 0 and r["uplink_bytes"] == 0 for r in edge_only)
    assert {r["accuracy"] for r in live if r["method"] == "cotta"} != {r["accuracy"] for r in live if r["method"] == "bn"}


def test_lockstep_continual_delays_budgets_and_edge_placement(server) -> None:
    """One cloud session across legs, a budgeted uplink that drops, a delayed downlink that
    syncs every other batch, and Tent placed on the edge: still the simulated rows."""
    from cema_cli.config import ChannelConfig

    channel = ChannelConfig(uplink_budget_bytes=30_000, downlink_delay_batches=1, sync_period_batches=2)
    run = config(methods=("cema", "tent", "eata"), corruptions=THREE[:2], protocol="continual", channel=channel, samples=48)
    run = replace(run, method_options={**run.method_options, "eata": {**run.method_options["eata"], "placement": "edge"}})
    simulated = run_benchmark(run)
    live = run_benchmark(run, link=server.options())
    assert_same_rows(simulated, live)
    assert any(r["dropped_uploads"] > 0 for r in live) and all(r["param_delay_batches"] > 0 for r in live if r["method"] != "eata")


def test_lockstep_uploads_cross_in_their_encoding(server) -> None:
    """JPEG uploads cross as their JPEG files and float32 ones as float32 values; the cloud
    decodes them to the simulator's pixels, so the rows stay equal."""
    from cema_cli.config import ChannelConfig

    for encoding in ("jpeg", "float32"):
        run = config(channel=ChannelConfig(uplink_encoding=encoding))
        simulated, live = run_benchmark(run), run_benchmark(run, link=server.options())
        assert_same_rows(simulated, live)
        row, = live
        assert row["uploads"] == 32 and 1 < row["wire_uplink_bytes"] / row["uplink_bytes"] < 1.5, (encoding, row["wire_overhead"])
    assert row["uplink_bytes"] == 32 * 4 * 3072  # float32: 4 bytes a value, on the wire too


def test_realtime_rows_are_measured_and_not_reproducible(server) -> None:
    rows = run_benchmark(config(samples=96), link=server.options(timing="realtime", frame_rate=200.0))
    row, = rows
    assert row["link_timing"] == "realtime" and row["reproducible"] is False
    assert row["measured_staleness_seconds"] > 0 and row["measured_upload_seconds"] >= 0
    assert row["param_delay_batches"] >= 0 and 0 <= row["accuracy"] <= 1 and row["uploads"] == 96


def test_application_shaping_paces_uploads_at_the_rate(server) -> None:
    """At 2 Mbit/s a message of B bytes cannot arrive in less than 8 B / 2e6 seconds."""
    row, = run_benchmark(config(samples=64, batch_size=32), link=server.options(shape_up_bps=2e6, shaper="app"))
    per_message = row["uplink_bytes"] / row["upload_messages"]  # payload only: a lower bound of what crossed
    assert row["measured_upload_seconds"] >= 0.8 * 8 * per_message / 2e6
    assert "application token bucket 2Mbit up" in row["link_shaping"]


def raw_connection(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=60)


def send(sock: socket.socket, kind: str, fields: dict, edge: str) -> None:
    sock.sendall(b"".join(bytes(b) for b in wire.encode(kind, fields, edge)))


def answer(sock: socket.socket) -> tuple[str, dict]:
    """The next message, or ('closed', {}) once the server closed the connection."""
    data = b""
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return "closed", {}
        data += chunk
        if len(data) >= wire.PREFIX.size:
            header_len, body_len = wire.read_prefix(data[:wire.PREFIX.size], 1 << 30)
            end = wire.PREFIX.size + header_len + body_len
            if len(data) >= end:
                message = wire.decode(data[wire.PREFIX.size:wire.PREFIX.size + header_len], bytearray(data[wire.PREFIX.size + header_len:end]))
                return message.kind, message.fields


def hello(server: Server, edge: str, token: str | None = None) -> socket.socket:
    sock = raw_connection(server)
    send(sock, "hello", {"token": token or server.token, "downlink": {}}, edge)
    return sock


def attacks(server: Server) -> dict[str, tuple[str, dict]]:
    """A bad token, a wrong version, an oversized and a truncated message, another edge's
    session, a message signed by another edge: what the server answered to each."""
    seen = {}
    sock = hello(server, "intruder", token="wrong")
    seen["bad token"] = answer(sock)
    sock = raw_connection(server)
    raw = b"".join(bytes(b) for b in wire.encode("hello", {"token": server.token, "downlink": {}}, "old-version"))
    sock.sendall(raw[:4] + bytes([wire.VERSION + 1]) + raw[5:])
    seen["wrong version"] = answer(sock)
    sock = hello(server, "big")
    assert answer(sock)[0] == "welcome"
    sock.sendall(struct.pack(">4sB3xII", wire.MAGIC, wire.VERSION, 100, 2**31))
    seen["oversized message"] = answer(sock)
    sock = hello(server, "cut")
    assert answer(sock)[0] == "welcome"
    sock.sendall(struct.pack(">4sB3xII", wire.MAGIC, wire.VERSION, 100, 5000) + b"{" * 40)
    sock.shutdown(socket.SHUT_WR)
    seen["truncated message"] = answer(sock)
    sock = hello(server, "snoop")
    assert answer(sock)[0] == "welcome"
    send(sock, "tick", {"session": "0123456789abcdef", "tick": 0, "packets": [], "rid": 1}, "snoop")
    seen["unknown session"] = answer(sock)
    send(sock, "status", {"rid": 2}, "someone-else")
    seen["identity mismatch"] = answer(sock)
    return seen


def test_bad_messages_are_refused_while_another_edge_is_served(server) -> None:
    run = config(methods=("cema",), samples=64)
    simulated = run_benchmark(run)
    done: dict = {}
    edge = threading.Thread(target=lambda: done.update(rows=run_benchmark(run, link=server.options(edge_id="good-edge"))))
    edge.start()
    before = server.status()["refused"]
    seen = attacks(server)
    edge.join(600)
    assert not edge.is_alive()
    assert_same_rows(simulated, done["rows"])
    assert seen["bad token"] == ("refused", {"error": "bad token"})
    assert seen["wrong version"][0] == "refused" and "protocol version" in seen["wrong version"][1]["error"]
    assert seen["oversized message"][0] == "error" and "over the limit" in seen["oversized message"][1]["error"]
    assert seen["truncated message"][0] == "error" and "truncated" in seen["truncated message"][1]["error"]
    assert seen["unknown session"][0] == "error" and "no session" in seen["unknown session"][1]["error"]
    assert seen["identity mismatch"][0] == "error"
    refused = server.status()["refused"]
    for category in seen:
        assert refused.get(category, 0) > before.get(category, 0), category
    assert server.process.poll() is None


def test_sigkill_of_an_edge_frees_its_session(server) -> None:
    script = ("import torch; torch.set_num_threads(1)\n"
              "from cema_cli.run.api import run_benchmark\nfrom cema_cli.config import RunConfig\nfrom cema_cli.link.options import LinkOptions\n"
              f"run_benchmark(RunConfig(methods=('tent',), samples=2000, batch_size=16, device='cpu'), link=LinkOptions("
              f"mode='live', cloud_url='{server.url}', token='{server.token}', edge_id='doomed', timing='realtime', frame_rate=16.0))\n")
    edge = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        held = server.wait_for(lambda s: s["edges"].get("doomed", {}).get("ticks", 0) >= 2, timeout=300)
        assert held["sessions_held"] >= 1
        freed_before = held["sessions_freed"]
        edge.kill()
        edge.wait(60)
        after = server.wait_for(lambda s: "doomed" not in {e for e, r in s["edges"].items() if r["connected"]}, timeout=120)
        assert after["sessions_freed"] == freed_before + 1 and after["edges"]["doomed"]["connected"] is False
        assert any(s["edge"] == "doomed" and s["ended"].startswith("edge gone") for s in after["sessions"])
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait(60)


def test_sigkill_of_the_server_mid_run_is_an_outage_the_edge_survives(tmp_path) -> None:
    """The edge keeps predicting while the cloud is gone, records the outage, and reconnects to
    the restarted server, which then serves it again. The edge is held at a batch while the
    server restarts (however long that takes on a loaded machine), after two batches offline."""
    cloud = Server(tmp_path, "outage-token", ()).start()
    batches, gate = [], threading.Event()
    gate.set()

    def on_batch(record: dict) -> None:
        batches.append(record)
        assert gate.wait(600)

    run = config(methods=("tent",), samples=480, batch_size=16)
    done: dict = {}

    def edge() -> None:
        try:
            done["rows"] = run_benchmark(run, Events(on_batch=on_batch), link=cloud.options(timing="realtime", frame_rate=64.0, retry_s=0.2))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            done["error"] = error

    thread = threading.Thread(target=edge)
    thread.start()
    try:
        wait_for_batches(batches, 4, thread, done)
        cloud.kill()
        wait_for_batches(batches, 7, thread, done)  # predicting on, with no cloud
        gate.clear()
        cloud.start()  # the same port
        gate.set()
        thread.join(600)
        assert not thread.is_alive() and "error" not in done, done
        row, = done["rows"]
        assert row["samples"] == 480 and len(batches) == 30 and row["status"] == "ok"
        assert row["link_status"].startswith("outage") and row["offline_seconds"] > 0 and row["reconnects"] >= 1
        assert row["uploads_lost"] >= 3 * 16 and row["uploads"] == 480
        served = cloud.status()["edges"]
        assert any(record["ticks"] > 0 for name, record in served.items() if not name.startswith("probe")), served
    finally:
        gate.set()
        thread.join(600)
        cloud.kill(signal.SIGTERM)


def wait_for_batches(batches: list, count: int, thread: threading.Thread, done: dict) -> None:
    deadline = time.monotonic() + 300
    while len(batches) < count:
        assert time.monotonic() < deadline and thread.is_alive(), done
        time.sleep(0.02)


def self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost and its key, made here (no network)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cema test cloud")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).add_extension(names, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cloud.pem", folder / "cloud.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_link_serves_verified_edges_and_refuses_plaintext(tmp_path) -> None:
    cert, key = self_signed(tmp_path)
    cloud = Server(tmp_path, "tls-token", ("--tls-cert", cert, "--tls-key", key)).start()
    try:
        run = config()
        assert_same_rows(run_benchmark(run), run_benchmark(run, link=cloud.options(tls_ca=cert)))
        with pytest.raises(CemaError, match="cannot reach the cloud"):
            run_benchmark(run, link=cloud.options())  # plaintext to a TLS server: no handshake, no admission
        assert_same_rows(run_benchmark(run), run_benchmark(run, link=cloud.options(tls_ca=cert)))  # still serving
    finally:
        cloud.kill(signal.SIGTERM)


def test_tc_shaping_through_a_namespace(tmp_path) -> None:
    """As root with tc: the local server runs in a network namespace behind a tbf qdisc."""
    from cema_cli.link.shaping import tc_unavailable

    reason = tc_unavailable()
    if reason:
        pytest.skip(reason)
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    from cema_cli.link.options import LinkOptions

    row, = run_benchmark(config(samples=64, batch_size=32), link=LinkOptions(mode="live", shape_up_bps=2e6, shaper="tc", server_dir=str(tmp_path)))
    per_message = row["uplink_bytes"] / row["upload_messages"]
    assert row["measured_upload_seconds"] >= 0.8 * 8 * per_message / 2e6
    assert row["link_shaping"].startswith("tc tbf 2Mbit up")
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == before


def test_a_fleet_of_edge_processes_against_one_server(tmp_path) -> None:
    """Two edge processes, one local server with a capacity of one worker: every row arrives
    (with its edge), and the server measured its sessions, utilisation, waits and per-edge bytes."""
    from cema_cli.link.fleet import live_summary, run_live_fleet
    from cema_cli.link.options import LinkOptions
    from cema_cli.run.fleet_config import FleetConfig, rotated_edges

    fleet = FleetConfig(edges=rotated_edges(2), independent=False, cloud_capacity=1, scheduler="fifo")
    base = config(methods=("tent",), corruptions=THREE[:2], protocol="continual")
    result = run_live_fleet(base, fleet, LinkOptions(mode="live"), tmp_path)
    assert not result.failed and sorted((r["edge"], r["corruption"]) for r in result.rows) == [
        (0, "gaussian_noise"), (0, "snow"), (1, "gaussian_noise"), (1, "snow")]
    assert all(r["link_status"] == "ok" and r["uploads"] == 32 for r in result.rows)
    stats = result.server
    assert stats["sessions_opened"] == 2 and stats["ticks"] == 8 and stats["scheduler"] == "fifo" and stats["capacity"] == 1
    assert 0 < stats["utilisation"] <= 1 and stats["queue_wait_s"]["count"] == 8 and stats["request_latency_s"]["p99"] > 0
    assert all(stats["edges"][f"edge-{i}"]["bytes_in"] > 2 * 16 * 3072 for i in (0, 1))
    summary = live_summary("tent", fleet, result.rows, result)
    assert summary["uploads_lost"] == 0 and summary["peak_sessions"] >= 1 and summary["server_peak_rss_bytes"] > 0


def test_compare_prints_the_validation_report_for_both_links(tmp_path) -> None:
    """`cema compare --link simulated,live` on the same stream: one row per link, equal figures,
    both tables of the report, and the local server's statistics kept in the run folder."""
    import pandas as pd
    from typer.testing import CliRunner

    from cema_cli.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["compare", "--methods", "bn,tent", "--link", "simulated,live", "--samples", "32", "--batch-size", "16",
                                      "--threads", "1", "--device", "cpu", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "simulated vs live link: results" in result.output and "the live link: modelled vs measured" in result.output
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["link"]) == ["live", "live", "simulated", "simulated"]
    live, simulated = (frame[frame["link"] == name].set_index("method") for name in ("live", "simulated"))
    assert (live[["accuracy", "uploads", "uplink_bytes", "downlink_bytes"]] == simulated[["accuracy", "uploads", "uplink_bytes", "downlink_bytes"]]).all(axis=None)
    assert live.loc["tent", "wire_uplink_bytes"] > live.loc["tent", "uplink_bytes"] and (out / "cloud" / "server.json").exists()
    assert "token" not in (out / "run.json").read_text().replace('"token": null', "")
