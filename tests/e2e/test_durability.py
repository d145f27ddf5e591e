"""kill -9 a node during and after pushes; after a restart nothing is ever half there.

What a client was told is stored (a 201) survives the kill byte for byte.
What was in flight is either absent or complete: its tag 404s and each of its
blobs is 404 or whole, never a prefix. The node is restarted over the same
data directory, as an operator would after a crash.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NodeProcess
from tests.e2e.clients import Docker, Skopeo
from tests.e2e.images import OCI_MANIFEST, ImageLayout, MiB, rootfs_tar

pytestmark = pytest.mark.e2e

LARGE = 200 * MiB
KILL_AFTER_SPOOLED = 48 * MiB  # the node has this much of the large upload on disk


def spooled_bytes(node: NodeProcess) -> int:
    """Bytes of uploads in progress on the node's disk (`DATA/uploads/<session>/<n>`)."""
    uploads = node.data / "uploads"
    if not uploads.is_dir():
        return 0
    return sum(f.stat().st_size for f in uploads.glob("*/*") if f.is_file())


def wait_for_spool(node: NodeProcess, at_least: int, *, while_running: subprocess.Popen[bytes]
                   | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while spooled_bytes(node) < at_least:
        if while_running is not None and while_running.poll() is not None:
            pytest.fail(f"the push ended (exit {while_running.returncode}) before it could be "
                        f"interrupted; spooled {spooled_bytes(node)} bytes")
        if time.monotonic() > deadline:
            pytest.fail(f"upload never reached {at_least} spooled bytes")
        time.sleep(0.005)


def assert_blob_whole(node: NodeProcess, repo: str, digest: str, size: int) -> None:
    """GET the blob and check every byte against its digest."""
    sha256 = hashlib.sha256()
    received = 0
    with httpx.stream("GET", f"{node.url}/v2/{repo}/blobs/{digest}", timeout=60) as response:
        assert response.status_code == 200, f"blob {digest}: {response.status_code}"
        assert response.headers["Docker-Content-Digest"] == digest
        for piece in response.iter_bytes():
            sha256.update(piece)
            received += len(piece)
    assert received == size
    assert "sha256:" + sha256.hexdigest() == digest


def assert_blob_absent_or_whole(node: NodeProcess, repo: str, digest: str, size: int) -> None:
    head = httpx.head(f"{node.url}/v2/{repo}/blobs/{digest}")
    assert head.status_code in (200, 404), head
    if head.status_code == 200:
        assert int(head.headers["Content-Length"]) == size
        assert_blob_whole(node, repo, digest, size)


def assert_image_absent_or_whole(node: NodeProcess, repo: str, tag: str,
                                 layout: ImageLayout) -> None:
    manifest = layout.manifest(tag)
    blobs = [manifest["config"], *manifest["layers"]]
    response = httpx.get(f"{node.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert response.status_code in (200, 404), response
    if response.status_code == 200:
        assert response.content == layout.blob_path(layout.manifest_digest(tag)).read_bytes()
        for blob in blobs:
            assert_blob_whole(node, repo, blob["digest"], blob["size"])
    else:
        assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        for blob in blobs:
            assert_blob_absent_or_whole(node, repo, blob["digest"], blob["size"])


def assert_uploads_emptied(node: NodeProcess) -> None:
    """A restart forgets upload sessions and drops their spool (see node/storage/layout.py)."""
    assert spooled_bytes(node) == 0


def test_acknowledged_image_survives_kill_during_next_push(
    skopeo: Skopeo, node_process: NodeProcess, repo: str, tmp_path: Path
) -> None:
    layout = ImageLayout.create(tmp_path / "source")
    layout.add_image("acked", [layout.add_layer(busybox=True)])
    large_layer = layout.add_layer(random_file_size=LARGE)
    layout.add_image("interrupted", [large_layer])
    registry = f"docker://{node_process.address}/{repo}"

    skopeo.copy(f"oci:{layout.root}:acked", f"{registry}:acked")
    push = subprocess.Popen(
        skopeo.copy_command(f"oci:{layout.root}:interrupted", f"{registry}:interrupted"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_spool(node_process, KILL_AFTER_SPOOLED, while_running=push)
        node_process.kill()
        output, _ = push.communicate(timeout=60)
    finally:
        push.kill()
    assert push.returncode != 0, output.decode()

    node_process.start()
    assert_uploads_emptied(node_process)

    back = tmp_path / "back"
    skopeo.copy(f"{registry}:acked", f"oci:{back}:acked")
    pulled = ImageLayout(back)
    assert pulled.manifest_digest("acked") == layout.manifest_digest("acked")
    pulled.verify_blobs()
    assert_image_absent_or_whole(node_process, repo, "interrupted", layout)

    # The interrupted push simply starts over, and then it is all there.
    skopeo.copy(f"oci:{layout.root}:interrupted", f"{registry}:interrupted")
    assert_blob_whole(node_process, repo, large_layer[0].digest, large_layer[0].size)
    assert_image_absent_or_whole(node_process, repo, "interrupted", layout)


def test_docker_push_acknowledged_then_killed_pulls_after_restart(
    docker: Docker, node_process: NodeProcess, repo: str, local_images: list[str]
) -> None:
    reference = f"{node_process.address}/{repo}:acked"
    local_images.append(reference)
    image_id = docker.import_rootfs(rootfs_tar({"etc/acked": b"yes\n"}), reference)
    docker("push", reference)

    node_process.kill()
    node_process.start()

    docker.remove(reference)
    docker("pull", reference)
    assert docker.image_id(reference) == image_id
    assert docker("run", "--rm", reference, "sh", "-c", "cat /etc/acked").stdout == "yes\n"


def seeded_pieces(size: int, seed: int, piece: int = MiB) -> Iterator[bytes]:
    """The same pseudo-random bytes every time for a given seed, one piece at a time."""
    rng = random.Random(seed)
    for offset in range(0, size, piece):
        yield rng.randbytes(min(piece, size - offset))


def seeded_digest(size: int, seed: int) -> str:
    sha256 = hashlib.sha256()
    for piece in seeded_pieces(size, seed):
        sha256.update(piece)
    return "sha256:" + sha256.hexdigest()


@pytest.mark.parametrize("flow", ["streamed-patch", "monolithic-post"])
def test_upload_killed_midstream_leaves_nothing_behind(
    node_process: NodeProcess, repo: str, flow: str
) -> None:
    seed = 7
    digest = seeded_digest(LARGE, seed)

    def body_that_kills_the_node_halfway() -> Iterator[bytes]:
        sent = 0
        for piece in seeded_pieces(LARGE, seed):
            yield piece
            sent += len(piece)
            if sent == LARGE // 2:
                wait_for_spool(node_process, KILL_AFTER_SPOOLED)
                node_process.kill()

    uploads = f"{node_process.url}/v2/{repo}/blobs/uploads/"
    with httpx.Client(timeout=60) as client:
        if flow == "streamed-patch":
            started = client.post(uploads)
            assert started.status_code == 202
            session = started.headers["Location"]
            with pytest.raises(httpx.TransportError):
                client.patch(f"{node_process.url}{session}",
                             content=body_that_kills_the_node_halfway())
        else:
            session = None
            with pytest.raises(httpx.TransportError):
                client.post(uploads, params={"digest": digest},
                            content=body_that_kills_the_node_halfway())

    node_process.start()
    assert_uploads_emptied(node_process)
    head = httpx.head(f"{node_process.url}/v2/{repo}/blobs/{digest}")
    assert head.status_code == 404
    if session is not None:
        resumed = httpx.put(f"{node_process.url}{session}", params={"digest": digest})
        assert resumed.status_code == 404
        assert resumed.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


Upload = Callable[[NodeProcess, str, bytes, str], httpx.Response]


def upload_monolithic(node: NodeProcess, repo: str, data: bytes, digest: str) -> httpx.Response:
    return httpx.post(f"{node.url}/v2/{repo}/blobs/uploads/", params={"digest": digest},
                      content=data, timeout=60)


def upload_in_chunks(node: NodeProcess, repo: str, data: bytes, digest: str) -> httpx.Response:
    started = httpx.post(f"{node.url}/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202
    location = f"{node.url}{started.headers['Location']}"
    piece = 3 * MiB + 17  # pieces that straddle the node's chunk boundaries
    for start in range(0, len(data), piece):
        chunk = data[start:start + piece]
        patched = httpx.patch(location, content=chunk, timeout=60, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(chunk) - 1}",
        })
        assert patched.status_code == 202, patched.text
        location = f"{node.url}{patched.headers['Location']}"
    return httpx.put(location, params={"digest": digest}, timeout=60)


@pytest.mark.parametrize("upload", [upload_monolithic, upload_in_chunks],
                         ids=["monolithic", "chunked"])
def test_blob_acknowledged_with_201_survives_immediate_kill(
    node_process: NodeProcess, repo: str, upload: Upload
) -> None:
    data = random.Random(11).randbytes(20 * MiB + 12345)  # three 8 MiB chunks, the last partial
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    created = upload(node_process, repo, data, digest)
    assert created.status_code == 201, created.text
    node_process.kill()
    node_process.start()

    response = httpx.get(f"{node_process.url}/v2/{repo}/blobs/{digest}", timeout=60)
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.content == data
