"""A cluster whose nodes serve TLS to clients and encrypt what they say to each other.

Three real `flotilla serve` processes with a trustme certificate for
127.0.0.1: a blob pushed through one and pulled through another crosses the
data plane (placement, then fetches) and Raft inside TLS; someone speaking the
plaintext protocols to those ports learns nothing; the admin CLI reaches the
nodes over HTTPS with nothing but the secret; and with `--internal-tls off`
the same cluster still works, clients on TLS, nodes in the clear.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consensus.raft.transport import MAGIC
from node.cluster.auth import load_or_create_secret
from node.cluster.data_frames import GREETING as DATA_GREETING
from tests.certificates import NodeCertificate, issue_certificate
from tests.cluster.conftest import Cluster
from tests.conftest import ROOT

KiB = 1 << 10
CHUNK = 64 * KiB


def start_cluster(root: Path, certificate: NodeCertificate, *extra: str) -> Cluster:
    cluster = Cluster(
        root, root / "secret", env_extra=[*certificate.args, "--chunk-size", str(CHUNK), *extra],
        scheme="https", verify=certificate.trusting_context(),
    )
    load_or_create_secret(cluster.secret_file)
    return cluster.start(3)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> NodeCertificate:
    return issue_certificate(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory,
                certificate: NodeCertificate) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("tls-cluster"), certificate)
    yield cluster
    cluster.stop_all()


def push_and_pull(cluster: Cluster, certificate: NodeCertificate, repo: str) -> None:
    """Push a blob of many chunks through n1, pull it through n3: the same bytes."""
    data = os.urandom(40 * CHUNK + 123)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(verify=certificate.trusting_context(), timeout=60) as client:
        pushed = client.post(f"{cluster.nodes['n1'].url}/v2/{repo}/blobs/uploads/",
                             params={"digest": digest}, content=data)
        assert pushed.status_code == 201, pushed.text
        pulled = client.get(f"{cluster.nodes['n3'].url}/v2/{repo}/blobs/{digest}")
    assert pulled.status_code == 200, pulled.text[:300]
    assert pulled.content == data


def fetched_chunks(cluster: Cluster, node_id: str) -> int:
    return len(list((cluster.nodes[node_id].data / "cache").glob("??/*")))


def test_a_blob_pushed_through_one_tls_node_pulls_byte_identical_through_another(
    tls_cluster: Cluster, certificate: NodeCertificate,
) -> None:
    push_and_pull(tls_cluster, certificate, "secure")
    # n3 holds only its share of the 41 chunks: the rest came over the encrypted data plane.
    assert fetched_chunks(tls_cluster, "n3") > 0


def test_the_client_port_refuses_plain_http(tls_cluster: Cluster) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_cluster.nodes['n1'].port}/v2/", timeout=5)


def _plaintext_dialler(address: str, magic: bytes) -> bytes:
    """Dial `address` as a node without TLS would: wait for the listener's greeting,
    then send a dialler's plaintext handshake anyway; everything that came back."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.settimeout(1.0)
        received = b""
        try:
            received += sock.recv(4096)  # a plain listener opens with its magic and nonce
        except TimeoutError:
            pass
        ident = b"n9@127.0.0.1:1"
        sock.sendall(len(ident).to_bytes(4, "big") + ident + os.urandom(32) + os.urandom(32))
        sock.settimeout(5.0)
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert magic not in received
    return received


def test_plaintext_handshakes_to_raft_and_data_plane_get_nothing_back(
    tls_cluster: Cluster, certificate: NodeCertificate,
) -> None:
    raft = tls_cluster.nodes["n2"].raft  # type: ignore[attr-defined]
    data = tls_cluster.data_address("n2")
    for address, magic in ((raft, MAGIC), (data, DATA_GREETING.magic)):
        answer = _plaintext_dialler(address, magic)
        # At most a TLS alert record (content type 21), never a protocol greeting or proof.
        assert answer == b"" or answer[0] == 21, answer[:16]
    # The node serves on: the cluster agrees on a leader and n2 takes a push.
    tls_cluster.wait_for_leader()
    with httpx.Client(verify=certificate.trusting_context(), timeout=30) as client:
        data_bytes = os.urandom(3 * CHUNK)
        digest = "sha256:" + hashlib.sha256(data_bytes).hexdigest()
        pushed = client.post(f"{tls_cluster.nodes['n2'].url}/v2/after/blobs/uploads/",
                             params={"digest": digest}, content=data_bytes)
        assert pushed.status_code == 201, pushed.text
    log = tls_cluster.nodes["n2"].log
    assert log is not None
    assert "Traceback" not in log.read_text()


def test_cluster_status_reaches_every_tls_node_with_only_the_secret(
    tls_cluster: Cluster,
) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", "status", "--json",
         "--url", tls_cluster.nodes["n1"].url, "--secret-file", str(tls_cluster.secret_file)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert status.returncode == 0, status.stderr
    assert '"reachable": false' not in status.stdout
    assert status.stdout.count('"reachable": true') == len(tls_cluster.alive())


def test_a_node_joins_through_an_https_url_and_serves_what_was_pushed_before(
    tls_cluster: Cluster, certificate: NodeCertificate,
) -> None:
    data = os.urandom(5 * CHUNK)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(verify=certificate.trusting_context(), timeout=60) as client:
        pushed = client.post(f"{tls_cluster.nodes['n1'].url}/v2/before-join/blobs/uploads/",
                             params={"digest": digest}, content=data)
        assert pushed.status_code == 201, pushed.text
        joined = tls_cluster.add_process("n4", join_via=tls_cluster.nodes["n1"].url)
        tls_cluster.wait_for_addresses()  # n4 is a member, its address known to all
        pulled = client.get(f"{joined.url}/v2/before-join/blobs/{digest}")
    assert pulled.status_code == 200 and pulled.content == data


def test_a_cluster_with_internal_tls_off_still_serves_clients_over_tls(
    tmp_path: Path, certificate: NodeCertificate,
) -> None:
    cluster = start_cluster(tmp_path, certificate, "--internal-tls", "off")
    try:
        push_and_pull(cluster, certificate, "clear-inside")
        assert fetched_chunks(cluster, "n3") > 0
        # Inside, the data plane speaks in the clear: its greeting comes first, unasked.
        host, _, port = cluster.data_address("n1").rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            assert sock.recv(4).startswith(DATA_GREETING.magic[:4])
    finally:
        cluster.stop_all()
