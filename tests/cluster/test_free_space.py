"""A node keeps a free-space floor: a push that would go below it is refused whole."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import blake3
import httpx
import pytest

from node.cluster.errors import PeerError
from tests.cluster.conftest import Cluster, push_blob
from tests.cluster.test_upload_sessions import write_config
from tests.conftest import tmpfs

MiB = 1 << 20
FLOOR = 8 * MiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """n1's data directory on a 64 MiB tmpfs of its own (unmounted after the node stops)."""
    with tmpfs(tmp_path / "n1", "64m") as root:
        yield root


def write_ballast(ballast: Path, free: int) -> None:
    ballast.unlink(missing_ok=True)
    size = shutil.disk_usage(ballast.parent).free - free
    with open(ballast, "wb") as f:
        f.write(b"\0" * size)  # tmpfs: written pages are what counts against its size


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_insufficient_storage(response: httpx.Response) -> None:
    assert response.status_code == 507, (response.status_code, response.text)
    error = response.json()["errors"][0]
    assert error["code"] == "INSUFFICIENT_STORAGE", error
    assert "free" in error["message"]


def test_a_push_below_the_floor_is_refused_whole_and_works_again_once_space_is_freed(
    small_disk: Path, cluster_factory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "floor.toml", min_free_bytes=FLOOR)
    cluster: Cluster = cluster_factory(1, "--config", str(config), "--chunk-size", str(256 * 1024))
    url = cluster.nodes["n1"].url
    ballast = small_disk / "ballast"
    write_ballast(ballast, FLOOR + 3 * MiB)
    kept = os.urandom(512 * 1024)
    kept_digest = push_blob(url, "disk", kept)

    write_ballast(ballast, FLOOR + 256 * 1024)
    refused = os.urandom(768 * 1024)
    monolithic = httpx.post(
        f"{url}/v2/disk/blobs/uploads/", params={"digest": sha(refused)}, content=refused,
        timeout=30,
    )
    assert_insufficient_storage(monolithic)
    assert list((small_disk / "uploads").iterdir()) == []
    assert list((small_disk / "tmp").iterdir()) == []
    assert httpx.head(f"{url}/v2/disk/blobs/{sha(refused)}", timeout=10).status_code == 404

    session = httpx.post(f"{url}/v2/disk/blobs/uploads/", timeout=10)
    assert session.status_code == 202
    location = f"{url}{session.headers['Location']}"
    assert_insufficient_storage(httpx.patch(location, content=refused, timeout=30))
    # Nothing of the refused PATCH was kept; the session is still there to resume.
    status = httpx.get(location, timeout=10)
    assert status.status_code == 204 and status.headers["Range"] == "0-0"

    # A chunk a peer places here is refused the same way, and nothing of it is kept.
    chunk = os.urandom(512 * 1024)
    cid = blake3.blake3(chunk).hexdigest()
    with pytest.raises(PeerError, match="no space"):
        cluster.place_chunk("n1", cid, chunk)
    assert not (small_disk / "chunks" / cid[:2] / cid).exists()
    assert list((small_disk / "tmp").iterdir()) == []

    pulled = httpx.get(f"{url}/v2/disk/blobs/{kept_digest}", timeout=30)
    assert pulled.status_code == 200 and pulled.content == kept

    ballast.unlink()
    assert httpx.patch(location, content=refused, timeout=30).status_code == 202
    closed = httpx.put(location, params={"digest": sha(refused)}, timeout=30)
    assert closed.status_code == 201, closed.text
    pulled = httpx.get(f"{url}/v2/disk/blobs/{sha(refused)}", timeout=30)
    assert pulled.status_code == 200 and pulled.content == refused
