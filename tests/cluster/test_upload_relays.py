"""Client upload relays never starve the traffic that keeps the cluster working."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.cluster.conftest import Cluster, image_manifest, push_blob, put_manifest
from tests.cluster.test_upload_sessions import write_config

SLOW_RELAYS = 70
SLOW_BODY = 64  # bytes each slow PATCH declares and trickles


def open_sessions(url: str, repo: str, count: int) -> list[str]:
    locations = []
    for _ in range(count):
        response = httpx.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=10)
        assert response.status_code == 202, response.text
        locations.append(response.headers["Location"])
    return locations


def start_slow_patch(address: str, location: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.sendall(
        f"PATCH {location} HTTP/1.1\r\nHost: {address}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {SLOW_BODY}\r\n\r\n".encode()
    )
    return sock


def status_code_of(sock: socket.socket) -> tuple[int, bytes]:
    """The status of the answer on `sock` and its head, or 0 when the node hung up."""
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            piece = sock.recv(4096)
            if not piece:
                break
            head += piece
    except OSError:
        return 0, head
    return (int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0), head


def trickle(socks: list[socket.socket], sent: list[int], stop: threading.Event) -> None:
    """One byte per PATCH every 0.2 s, keeping each short of its end until told to stop."""
    while not stop.wait(0.2):
        for index, sock in enumerate(socks):
            if sent[index] < SLOW_BODY - 1:
                try:
                    sock.sendall(b"x")
                    sent[index] += 1
                except OSError:
                    sent[index] = SLOW_BODY  # refused: the node answered and hung up


def test_slow_relayed_patches_leave_health_and_a_push_through_the_relaying_node_alone(
    cluster_factory,
) -> None:
    cluster: Cluster = cluster_factory(3, "--chunk-size", str(64 * 1024))
    owner, relay = cluster.nodes["n1"], cluster.nodes["n2"]
    locations = open_sessions(owner.url, "slow", SLOW_RELAYS)
    socks = [start_slow_patch(relay.address, location) for location in locations]
    sent = [0] * len(socks)
    stop = threading.Event()
    trickler = threading.Thread(target=trickle, args=(socks, sent, stop))
    trickler.start()
    try:
        time.sleep(3)  # several health rounds while every relay is open
        peers = cluster.status("n2")["peers"]
        assert [p["up"] for p in peers] == [True, True], peers

        layer = os.urandom(1 << 20)
        config = b'{"architecture":"amd64","os":"linux"}'
        layer_digest = push_blob(relay.url, "fast", layer)
        config_digest = push_blob(relay.url, "fast", config)
        manifest = image_manifest(config_digest, len(config), [(layer_digest, len(layer))])
        put = put_manifest(relay.url, "fast", "v1", manifest, timeout=20)
        assert put.status_code == 201, put.text
        pulled = httpx.get(f"{cluster.nodes['n3'].url}/v2/fast/blobs/{layer_digest}", timeout=20)
        assert pulled.content == layer
        peers = cluster.status("n2")["peers"]
        assert [p["up"] for p in peers] == [True, True], peers
    finally:
        stop.set()
        trickler.join()
    answers = []
    for index, sock in enumerate(socks):
        if sent[index] < SLOW_BODY:
            try:
                sock.sendall(b"x" * (SLOW_BODY - sent[index]))
            except OSError:
                pass
        answers.append(status_code_of(sock))
        sock.close()
    codes = sorted(code for code, _ in answers)
    assert set(codes) <= {202, 503}, codes
    assert codes.count(202) >= 1, codes
    assert codes.count(503) >= 1, "more relays than one peer may take at once are refused"
    for code, head in answers:
        if code == 503:
            assert b"retry-after:" in head.lower(), head


def test_a_relay_to_a_node_that_stopped_answering_ends_at_its_idle_deadline(
    cluster_factory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_idle_seconds=2.0)
    cluster: Cluster = cluster_factory(3, "--config", str(config))
    owner, relay = cluster.nodes["n1"], cluster.nodes["n2"]
    [location] = open_sessions(owner.url, "frozen", 1)
    assert owner.proc is not None
    owner.proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        response = httpx.patch(f"{relay.url}{location}", content=b"x" * 1000, timeout=20)
    finally:
        owner.proc.send_signal(signal.SIGCONT)
    assert response.status_code == 404, response.text
    assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert httpx.get(f"{relay.url}/v2/", timeout=10).status_code == 200
