"""A push whose chunk copies fail unexpectedly fails alone: a 5xx for it, the node serves on."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cluster.placement import Placed
from tests.api.content import CHUNK, assert_error, digest_of, push_blob, random_bytes
from tests.conftest import Registry

NAME = "team/app"
DATA = random_bytes(3 * CHUNK + 123, seed=5)


def place_beside_a_peer_that_explodes(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk gets a second owner, and sending it one raises a bug, not a PeerError."""
    services = registry.node.services
    me = services.config.node_id
    monkeypatch.setattr(services.peers, "placed", lambda: [Placed(me), Placed("n9")])

    async def put_chunk_file(node_id: str, cid: str, path: Path) -> None:
        raise RuntimeError("a bug in the copy path")

    monkeypatch.setattr(services.peers, "put_chunk_file", put_chunk_file)


async def test_an_unexpected_error_in_a_copy_fails_that_upload_and_the_node_serves_on(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    place_beside_a_peer_that_explodes(registry, monkeypatch)
    digest = digest_of(DATA)
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"digest": digest}, content=DATA
    )
    assert_error(response, 503, "UNAVAILABLE")
    assert (await registry.client.head(f"/v2/{NAME}/blobs/{digest}")).status_code == 404
    assert not any((registry.data / "uploads").iterdir())

    monkeypatch.undo()
    assert (await registry.client.get("/v2/")).status_code == 200
    other = random_bytes(2 * CHUNK + 7, seed=6)
    other_digest = await push_blob(registry.client, NAME, other)
    pulled = await registry.client.get(f"/v2/{NAME}/blobs/{other_digest}")
    assert pulled.status_code == 200 and pulled.content == other


async def test_a_session_whose_copies_failed_answers_its_closing_put_with_503(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    place_beside_a_peer_that_explodes(registry, monkeypatch)
    started = await registry.client.post(f"/v2/{NAME}/blobs/uploads/")
    location = started.headers["Location"]
    monkeypatch.undo()  # the upload keeps the membership it started with
    # Its first chunks fill (and their copies fail) during the PATCH or the PUT;
    # either way the request that finds the upload failed gets the 503.
    patched = await registry.client.patch(location, content=DATA[: 2 * CHUNK])
    if patched.status_code == 202:
        closed = await registry.client.put(
            location, params={"digest": digest_of(DATA)}, content=DATA[2 * CHUNK :]
        )
        assert_error(closed, 503, "UNAVAILABLE")
    else:
        assert_error(patched, 503, "UNAVAILABLE")
    assert not any((registry.data / "uploads").iterdir())
    assert (await registry.client.get("/v2/")).status_code == 200
