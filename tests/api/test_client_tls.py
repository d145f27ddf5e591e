"""HTTPS on the client port of a real `flotilla serve` process, and its reload on SIGHUP.

An operator renews a certificate by replacing the files and sending SIGHUP:
new connections get the new certificate while open ones go on, and a broken
pair is refused with one log line while the node keeps serving the one it had.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.certificates import NodeCertificate, issue_certificate
from tests.conftest import ROOT, NodeProcess, free_port

RELOAD_WAIT = 20.0  # seconds a reload may take to show on a shared machine


def served_certificate(port: int) -> str:
    """The PEM certificate a new connection to the port is shown."""
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=5)


def same_certificate(pem_a: str, pem_b: str) -> bool:
    return ssl.PEM_cert_to_DER_cert(pem_a) == ssl.PEM_cert_to_DER_cert(pem_b)


def leaf_pem(certificate: NodeCertificate) -> str:
    return certificate.pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


TLSNode = tuple[NodeProcess, NodeCertificate]


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[TLSNode]:
    first = issue_certificate(tmp_path / "a", name="node")
    node = NodeProcess(tmp_path / "node", free_port(), first.args, scheme="https",
                       verify=first.trusting_context()).start()
    yield node, first
    node.stop()


def test_sighup_serves_a_renewed_certificate_to_new_connections_and_keeps_open_ones(
    tls_node: TLSNode, tmp_path: Path,
) -> None:
    node, first = tls_node
    assert same_certificate(served_certificate(node.port), leaf_pem(first))
    renewed = issue_certificate(tmp_path / "b", trustme.CA(), name="node")
    trusts_both = first.trusting_context()
    renewed.ca.configure_trust(trusts_both)
    with httpx.Client(verify=trusts_both, timeout=10) as open_client:
        assert open_client.get(f"{node.url}/v2/").status_code == 200
        # The operator replaces the files in place, then signals.
        first.cert.write_bytes(renewed.cert.read_bytes())
        first.key.write_bytes(renewed.key.read_bytes())
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: same_certificate(served_certificate(node.port), leaf_pem(renewed)),
                   "the renewed certificate")
        # The connection opened before the reload is still served.
        assert open_client.get(f"{node.url}/v2/").status_code == 200
    with httpx.Client(verify=renewed.trusting_context(), timeout=10) as fresh:
        assert fresh.get(f"{node.url}/v2/").status_code == 200
    assert node.proc.poll() is None


def test_sighup_with_a_broken_key_keeps_the_certificate_in_use_and_logs_one_line(
    tls_node: TLSNode, tmp_path: Path,
) -> None:
    node, first = tls_node
    renewed = issue_certificate(tmp_path / "b", trustme.CA(), name="node")
    first.cert.write_bytes(renewed.cert.read_bytes())
    first.key.write_bytes(renewed.key.read_bytes())
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: same_certificate(served_certificate(node.port), leaf_pem(renewed)),
               "the renewed certificate")

    first.key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    node.proc.send_signal(signal.SIGHUP)
    assert node.log is not None
    log_file = node.log
    wait_until(lambda: "TLS certificate not reloaded" in log_file.read_text(),
               "the refusal in the log")
    assert same_certificate(served_certificate(node.port), leaf_pem(renewed))
    with httpx.Client(verify=renewed.trusting_context(), timeout=10) as client:
        assert client.get(f"{node.url}/v2/").status_code == 200
    log = node.log.read_text()
    refusals = [line for line in log.splitlines() if "TLS certificate not reloaded" in line]
    assert len(refusals) == 1, refusals
    assert "Traceback" not in log
    assert "not a key" not in log  # the key file's content never reaches the log
    assert node.proc.poll() is None


def test_the_client_port_speaks_tls_1_2_and_1_3(tls_node: TLSNode) -> None:
    node, first = tls_node
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = first.trusting_context()
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == version.name.replace("v1_", "v1.")
            assert tls.selected_alpn_protocol() in (None, "http/1.1")


def serve_exits_with(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "serve", "--data", str(tmp_path / "node"),
         "--listen", f"127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def test_serve_refuses_a_certificate_without_its_key_and_internal_tls_without_a_certificate(
    tmp_path: Path,
) -> None:
    certificate = issue_certificate(tmp_path / "certs")
    alone = serve_exits_with(tmp_path, "--tls-cert", str(certificate.cert))
    assert alone.returncode == 2 and "tls_cert and tls_key go together" in alone.stderr
    forced = serve_exits_with(tmp_path, "--internal-tls", "on")
    assert forced.returncode == 2 and "internal_tls on needs tls_cert" in forced.stderr


def test_serve_refuses_a_key_that_does_not_match_its_certificate(tmp_path: Path) -> None:
    one = issue_certificate(tmp_path / "one")
    other = issue_certificate(tmp_path / "other")
    mismatched = serve_exits_with(tmp_path, "--tls-cert", str(one.cert),
                                  "--tls-key", str(other.key))
    assert mismatched.returncode == 2, mismatched.stderr
    assert "tls_cert" in mismatched.stderr and "Traceback" not in mismatched.stderr
