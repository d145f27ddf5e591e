"""docker, podman and skopeo against a node serving HTTPS with a private CA.

Each client is pointed at the CA the way its users do it (docker: a
`certs.d` folder; podman and skopeo: a cert dir), pushes and pulls through the
node, and refuses the node with an x509 error without the CA.

docker treats 127.0.0.0/8 as an insecure registry by default: there it skips
certificate checks, so it would never refuse. Its test reaches the node at
this machine's own non-loopback address instead, which the certificate names
too, and installs the CA under that HOST:PORT; podman and skopeo use 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from tests.certificates import NodeCertificate
from tests.conftest import NodeProcess, free_port
from tests.e2e.clients import Docker, Skopeo, run
from tests.e2e.images import ImageLayout, rootfs_tar

pytestmark = pytest.mark.e2e

DOCKER_CERTS = Path("/etc/docker/certs.d")


def own_address() -> str:
    """This machine's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.fail("no non-loopback address to reach the node at (docker skips TLS checks "
                    "on 127.0.0.0/8)", pytrace=False)
    return address


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> NodeCertificate:
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", own_address(), "localhost")
    cert, key, ca_file = folder / "node.crt", folder / "node.key", folder / "ca.crt"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    ca_file.write_bytes(ca.cert_pem.bytes())
    return NodeCertificate(ca, cert, key, ca_file)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory,
             certificate: NodeCertificate) -> Iterator[NodeProcess]:
    port = free_port()
    node = NodeProcess(
        tmp_path_factory.mktemp("tls-node") / "node", port,
        # Every address, so docker can reach it at this machine's own; the later
        # --listen wins over the loopback one NodeProcess gives.
        ["--listen", f"0.0.0.0:{port}", "--advertise-host", "127.0.0.1", "--auth", "none",
         *certificate.args],
        scheme="https", verify=certificate.trusting_context(),
    ).start()
    yield node
    node.stop()


@pytest.fixture
def cert_dir(tmp_path: Path, certificate: NodeCertificate) -> Path:
    """A folder holding the CA as `ca.crt`, as podman's --cert-dir and skopeo's want it."""
    folder = tmp_path / "cert-dir"
    folder.mkdir()
    shutil.copy(certificate.ca_file, folder / "ca.crt")
    return folder


@contextmanager
def docker_trusts(host_port: str, certificate: NodeCertificate) -> Iterator[None]:
    """The CA installed where dockerd looks for a registry's CA; removed afterwards."""
    folder = DOCKER_CERTS / host_port
    folder.mkdir(parents=True, exist_ok=False)
    try:
        shutil.copy(certificate.ca_file, folder / "ca.crt")
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_docker_pushes_and_pulls_once_the_ca_is_in_certs_d_and_refuses_without(
    docker: Docker, tls_node: NodeProcess, certificate: NodeCertificate, repo: str,
    local_images: list[str],
) -> None:
    registry = f"{own_address()}:{tls_node.port}"
    reference = f"{registry}/{repo}:v1"
    local_images.append(reference)
    image_id = docker.import_rootfs(rootfs_tar({"etc/tls": b"docker\n"}), reference)

    refused = docker("push", reference, check=False)
    assert refused.returncode != 0
    assert "x509" in refused.stderr + refused.stdout

    with docker_trusts(registry, certificate):
        docker("push", reference)
        docker.remove(reference)
        assert not docker.exists(reference)
        docker("pull", reference)
        assert docker.image_id(reference) == image_id
    assert not (DOCKER_CERTS / registry).exists()


def _busybox_layout(root: Path) -> ImageLayout:
    layout = ImageLayout.create(root)
    layout.add_image("v1", [layout.add_layer(busybox=True), layout.add_layer({"etc/tls": b"1"})])
    return layout


def test_skopeo_copies_through_the_node_with_its_cert_dirs_and_refuses_without(
    skopeo: Skopeo, tls_node: NodeProcess, cert_dir: Path, repo: str, tmp_path: Path,
) -> None:
    source = _busybox_layout(tmp_path / "source")
    target = f"docker://{tls_node.address}/{repo}:v1"

    refused = skopeo("copy", "--retry-times", "0", f"oci:{source.root}:v1", target, check=False)
    assert refused.returncode != 0 and "x509" in refused.stderr

    skopeo("copy", "--retry-times", "0", "--dest-cert-dir", str(cert_dir),
           f"oci:{source.root}:v1", target)
    skopeo("copy", "--retry-times", "0", "--src-cert-dir", str(cert_dir),
           target, f"oci:{tmp_path / 'back'}:v1")
    back = ImageLayout(tmp_path / "back")
    assert back.manifest_digest("v1") == source.manifest_digest("v1")
    assert back.blob_digests() == source.blob_digests()
    back.verify_blobs()

    unverified = skopeo("copy", "--retry-times", "0", target,
                        f"oci:{tmp_path / 'again'}:v1", check=False)
    assert unverified.returncode != 0 and "x509" in unverified.stderr


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        pytest.fail("podman not found", pytrace=False)
    return run("podman", *args, check=check)


def test_podman_pulls_and_pushes_with_its_cert_dir_and_refuses_without(
    skopeo: Skopeo, tls_node: NodeProcess, cert_dir: Path, repo: str, tmp_path: Path,
) -> None:
    source = _busybox_layout(tmp_path / "source")
    first = f"{tls_node.address}/{repo}:v1"
    second = f"{tls_node.address}/{repo}:v2"
    skopeo("copy", "--retry-times", "0", "--dest-cert-dir", str(cert_dir),
           f"oci:{source.root}:v1", f"docker://{first}")
    try:
        refused = podman("pull", first, check=False)
        assert refused.returncode != 0 and "x509" in refused.stderr

        podman("pull", "--cert-dir", str(cert_dir), first)
        podman("tag", first, second)
        podman("push", "--cert-dir", str(cert_dir), second)
        podman("rmi", "--force", first, second)
        podman("pull", "--cert-dir", str(cert_dir), second)
        pushed = skopeo("inspect", "--cert-dir", str(cert_dir), "--raw",
                        f"docker://{second}").stdout
        assert '"layers"' in pushed
        refused_push = podman("push", second, check=False)
        assert refused_push.returncode != 0 and "x509" in refused_push.stderr
    finally:
        podman("rmi", "--force", first, second, check=False)
