"""`/v2/<name>/blobs/uploads/…`: sessions, monolithic pushes, mounts, streamed and chunked PATCH."""

from __future__ import annotations

import re

import pytest
import trio

from tests.api.content import (
    CHUNK,
    assert_error,
    digest_of,
    push_blob,
    random_bytes,
    start_upload,
)
from tests.conftest import Registry

NAME = "team/app"
DATA = random_bytes(2 * CHUNK + 777, seed=11)


def spool_is_empty(registry: Registry) -> bool:
    return not any((registry.data / "uploads").iterdir())


def no_chunks_stored(registry: Registry) -> bool:
    return not any(p.is_file() for p in (registry.data / "chunks").glob("*/*"))


async def assert_blob(registry: Registry, name: str, data: bytes, digest: str) -> None:
    response = await registry.client.get(f"/v2/{name}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data


# Starting a session


async def test_post_starts_a_session_with_location_uuid_and_empty_range(
    registry: Registry,
) -> None:
    response = await registry.client.post(f"/v2/{NAME}/blobs/uploads/")
    assert response.status_code == 202
    uuid = response.headers["Docker-Upload-UUID"]
    assert response.headers["Location"] == f"/v2/{NAME}/blobs/uploads/{uuid}"
    assert response.headers["Range"] == "0-0"


async def test_post_without_trailing_slash_starts_a_session_too(registry: Registry) -> None:
    response = await registry.client.post(f"/v2/{NAME}/blobs/uploads")
    assert response.status_code == 202
    assert response.headers["Location"].startswith(f"/v2/{NAME}/blobs/uploads/")


async def test_session_ids_are_distinct_and_unguessable(registry: Registry) -> None:
    ids = set()
    for _ in range(5):
        response = await registry.client.post(f"/v2/{NAME}/blobs/uploads/")
        ids.add(response.headers["Docker-Upload-UUID"])
    assert len(ids) == 5
    for session_id in ids:
        # At least 128 bits of randomness in URL-safe characters.
        random_part = session_id.rsplit(".", 1)[-1]
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", random_part), session_id


# Monolithic push


async def test_monolithic_post_with_digest_creates_the_blob(registry: Registry) -> None:
    digest = digest_of(DATA)
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"digest": digest}, content=DATA
    )
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/{NAME}/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest
    await assert_blob(registry, NAME, DATA, digest)
    assert spool_is_empty(registry)


async def test_monolithic_post_with_wrong_digest_is_refused_and_stores_nothing(
    registry: Registry,
) -> None:
    wrong = digest_of(b"something else")
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"digest": wrong}, content=DATA
    )
    assert_error(response, 400, "DIGEST_INVALID")
    assert (await registry.client.head(f"/v2/{NAME}/blobs/{wrong}")).status_code == 404
    assert (await registry.client.head(f"/v2/{NAME}/blobs/{digest_of(DATA)}")).status_code == 404
    assert no_chunks_stored(registry)
    assert spool_is_empty(registry)


async def test_monolithic_post_with_malformed_digest_is_400(registry: Registry) -> None:
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"digest": "sha256:nothex"}, content=DATA
    )
    assert_error(response, 400, "DIGEST_INVALID")
    assert spool_is_empty(registry)


async def test_monolithic_sha512_push_creates_the_blob(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, DATA, algorithm="sha512")
    await assert_blob(registry, NAME, DATA, digest)


async def test_monolithic_empty_blob(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, b"")
    await assert_blob(registry, NAME, b"", digest)


async def test_pushing_an_existing_blob_again_succeeds(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, DATA)
    assert await push_blob(registry.client, NAME, DATA) == digest
    await assert_blob(registry, NAME, DATA, digest)


# Cross-repository mount


async def test_mount_from_another_repository_links_the_blob(registry: Registry) -> None:
    digest = await push_blob(registry.client, "team/base", DATA)
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"mount": digest, "from": "team/base"}
    )
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/{NAME}/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest
    await assert_blob(registry, NAME, DATA, digest)
    assert spool_is_empty(registry)


async def test_mount_of_a_blob_the_source_lacks_falls_back_to_a_session(
    registry: Registry,
) -> None:
    # The blob exists in the registry, but not in the repository named by `from`.
    digest = await push_blob(registry.client, "team/secret", DATA)
    await push_blob(registry.client, "team/base", b"unrelated")
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"mount": digest, "from": "team/base"}
    )
    assert response.status_code == 202
    assert response.headers["Location"].startswith(f"/v2/{NAME}/blobs/uploads/")
    assert response.headers["Range"] == "0-0"
    assert (await registry.client.head(f"/v2/{NAME}/blobs/{digest}")).status_code == 404
    # The fallback session is a real one.
    location = response.headers["Location"]
    closed = await registry.client.put(location, params={"digest": digest}, content=DATA)
    assert closed.status_code == 201
    await assert_blob(registry, NAME, DATA, digest)


async def test_mount_of_an_unknown_blob_falls_back_to_a_session(registry: Registry) -> None:
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/",
        params={"mount": digest_of(b"nowhere"), "from": "team/base"},
    )
    assert response.status_code == 202
    assert "Docker-Upload-UUID" in response.headers


async def test_mount_without_from_falls_back_to_a_session(registry: Registry) -> None:
    digest = await push_blob(registry.client, "team/base", DATA)
    response = await registry.client.post(f"/v2/{NAME}/blobs/uploads/", params={"mount": digest})
    assert response.status_code == 202


async def test_mount_of_a_blob_already_in_the_repository_is_201(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, DATA)
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"mount": digest, "from": NAME}
    )
    assert response.status_code == 201
    assert response.headers["Docker-Content-Digest"] == digest


async def test_mount_with_malformed_digest_is_400(registry: Registry) -> None:
    response = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"mount": "sha256:XYZ", "from": "team/base"}
    )
    assert_error(response, 400, "DIGEST_INVALID")


# Streamed and chunked PATCH


async def test_streamed_patches_then_put_without_body_create_the_blob(
    registry: Registry,
) -> None:
    location = await start_upload(registry.client, NAME)
    sent = 0
    for piece in (DATA[:1000], DATA[1000 : CHUNK + 5], DATA[CHUNK + 5 :]):
        response = await registry.client.patch(location, content=piece)
        assert response.status_code == 202
        sent += len(piece)
        assert response.headers["Range"] == f"0-{sent - 1}"
        assert response.headers["Location"] == location
        assert "Docker-Upload-UUID" in response.headers
    digest = digest_of(DATA)
    closed = await registry.client.put(location, params={"digest": digest})
    assert closed.status_code == 201
    assert closed.headers["Location"] == f"/v2/{NAME}/blobs/{digest}"
    assert closed.headers["Docker-Content-Digest"] == digest
    await assert_blob(registry, NAME, DATA, digest)
    assert spool_is_empty(registry)


async def test_streamed_patch_of_a_generator_body(registry: Registry) -> None:
    async def pieces():  # sent with Transfer-Encoding: chunked, no Content-Length
        for start in range(0, len(DATA), 10_000):
            yield DATA[start : start + 10_000]

    location = await start_upload(registry.client, NAME)
    response = await registry.client.patch(location, content=pieces())
    assert response.status_code == 202
    assert response.headers["Range"] == f"0-{len(DATA) - 1}"
    closed = await registry.client.put(location, params={"digest": digest_of(DATA)})
    assert closed.status_code == 201
    await assert_blob(registry, NAME, DATA, digest_of(DATA))


@pytest.mark.parametrize(
    "cuts", [[CHUNK], [1, CHUNK - 1, CHUNK, CHUNK + 1], [5000, 70_000, 2 * CHUNK + 1]]
)
async def test_chunked_patches_with_content_range_then_put(
    registry: Registry, cuts: list[int]
) -> None:
    location = await start_upload(registry.client, NAME)
    bounds = [0, *cuts, len(DATA)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        response = await registry.client.patch(
            location,
            content=DATA[start:end],
            headers={"Content-Range": f"{start}-{end - 1}"},
        )
        assert response.status_code == 202, response.text
        assert response.headers["Range"] == f"0-{end - 1}"
        location = response.headers["Location"]
    closed = await registry.client.put(location, params={"digest": digest_of(DATA)})
    assert closed.status_code == 201
    await assert_blob(registry, NAME, DATA, digest_of(DATA))


async def test_put_with_a_final_body_completes_the_upload(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.patch(location, content=DATA[:CHUNK + 3])
    closed = await registry.client.put(
        location, params={"digest": digest_of(DATA)}, content=DATA[CHUNK + 3 :]
    )
    assert closed.status_code == 201
    await assert_blob(registry, NAME, DATA, digest_of(DATA))


async def test_put_with_the_whole_body_and_no_patch(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    closed = await registry.client.put(location, params={"digest": digest_of(DATA)}, content=DATA)
    assert closed.status_code == 201
    await assert_blob(registry, NAME, DATA, digest_of(DATA))


async def test_session_upload_with_sha512_digest(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.patch(location, content=DATA[:CHUNK + 9])
    digest = digest_of(DATA, "sha512")
    closed = await registry.client.put(
        location, params={"digest": digest}, content=DATA[CHUNK + 9 :]
    )
    assert closed.status_code == 201
    assert closed.headers["Docker-Content-Digest"] == digest
    await assert_blob(registry, NAME, DATA, digest)


async def test_empty_session_closed_with_the_empty_digest(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    closed = await registry.client.put(location, params={"digest": digest_of(b"")})
    assert closed.status_code == 201
    await assert_blob(registry, NAME, b"", digest_of(b""))


async def test_chunk_out_of_order_is_refused_and_session_survives(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    first = await registry.client.patch(
        location, content=DATA[:1000], headers={"Content-Range": "0-999"}
    )
    assert first.status_code == 202
    skipped = await registry.client.patch(
        location, content=DATA[2000:3000], headers={"Content-Range": "2000-2999"}
    )
    assert_error(skipped, 416, "RANGE_INVALID")
    status = await registry.client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-999"
    assert status.headers["Location"] == location
    rest = await registry.client.patch(
        location, content=DATA[1000:], headers={"Content-Range": f"1000-{len(DATA) - 1}"}
    )
    assert rest.status_code == 202
    closed = await registry.client.put(location, params={"digest": digest_of(DATA)})
    assert closed.status_code == 201
    await assert_blob(registry, NAME, DATA, digest_of(DATA))


@pytest.mark.parametrize(
    ("already_sent", "content_range"),
    [
        (0, "1-1000"),  # the first chunk must start at 0
        (1000, "500-1499"),  # overlaps what is in
        (1000, "0-999"),  # repeats what is in
        (1000, "1001-2000"),  # leaves a gap
    ],
)
async def test_chunk_that_does_not_start_at_the_current_end_is_416(
    registry: Registry, already_sent: int, content_range: str
) -> None:
    location = await start_upload(registry.client, NAME)
    if already_sent:
        first = await registry.client.patch(
            location,
            content=DATA[:already_sent],
            headers={"Content-Range": f"0-{already_sent - 1}"},
        )
        assert first.status_code == 202
    response = await registry.client.patch(
        location, content=DATA[:1000], headers={"Content-Range": content_range}
    )
    assert_error(response, 416, "RANGE_INVALID")
    status = await registry.client.get(location)
    assert status.headers["Range"] == f"0-{max(already_sent - 1, 0)}"


async def test_refused_large_chunk_leaves_the_connection_usable(registry: Registry) -> None:
    # The refused body is bigger than the server's receive buffer: it must
    # neither wedge the connection nor the session.
    location = await start_upload(registry.client, NAME)
    big = random_bytes(6 << 20, seed=3)
    response = await registry.client.patch(
        location, content=big, headers={"Content-Range": f"7-{len(big) + 6}"}
    )
    assert_error(response, 416, "RANGE_INVALID")
    status = await registry.client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"


@pytest.mark.parametrize("content_range", ["bytes", "a-b", "10-5", "-5", "0-" + "9" * 3000])
async def test_malformed_content_range_is_refused_and_session_survives(
    registry: Registry, content_range: str
) -> None:
    location = await start_upload(registry.client, NAME)
    response = await registry.client.patch(
        location, content=b"abc", headers={"Content-Range": content_range}
    )
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code, response.json()["errors"][0]["code"])
    assert (await registry.client.get(location)).status_code == 204


async def test_content_length_disagreeing_with_content_range_is_refused(
    registry: Registry,
) -> None:
    location = await start_upload(registry.client, NAME)
    response = await registry.client.patch(
        location, content=b"abc", headers={"Content-Range": "0-9"}
    )
    assert 400 <= response.status_code < 500
    status = await registry.client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"


async def test_parallel_uploads_of_the_same_blob_both_succeed(registry: Registry) -> None:
    # Clients push layers in parallel, and two may carry the same chunks.
    results: list[int] = []

    async def upload() -> None:
        location = await start_upload(registry.client, NAME)
        for start in range(0, len(DATA), 50_000):
            await registry.client.patch(location, content=DATA[start : start + 50_000])
        closed = await registry.client.put(location, params={"digest": digest_of(DATA)})
        results.append(closed.status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(upload)
    assert results == [201, 201, 201]
    await assert_blob(registry, NAME, DATA, digest_of(DATA))
    assert spool_is_empty(registry)


# Closing PUT


async def test_put_with_wrong_digest_is_refused_and_stores_nothing(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.patch(location, content=DATA)
    wrong = digest_of(b"not this")
    response = await registry.client.put(location, params={"digest": wrong})
    assert_error(response, 400, "DIGEST_INVALID")
    for digest in (wrong, digest_of(DATA)):
        assert (await registry.client.head(f"/v2/{NAME}/blobs/{digest}")).status_code == 404
    assert no_chunks_stored(registry)
    assert spool_is_empty(registry)


async def test_closing_digest_is_of_the_whole_blob_not_the_last_chunk(
    registry: Registry,
) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.patch(location, content=DATA[:CHUNK])
    last = DATA[CHUNK:]
    response = await registry.client.put(location, params={"digest": digest_of(last)}, content=last)
    assert_error(response, 400, "DIGEST_INVALID")
    assert no_chunks_stored(registry)


async def test_put_without_digest_is_refused(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.patch(location, content=DATA[:100])
    response = await registry.client.put(location)
    assert 400 <= response.status_code < 500
    assert response.json()["errors"][0]["code"] in ("DIGEST_INVALID", "BLOB_UPLOAD_INVALID")


async def test_put_with_malformed_digest_is_400_and_session_survives(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.patch(location, content=DATA[:100])
    response = await registry.client.put(location, params={"digest": "sha256:" + "A" * 64})
    assert_error(response, 400, "DIGEST_INVALID")
    status = await registry.client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-99"


async def test_a_finished_session_is_unknown_afterwards(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.put(location, params={"digest": digest_of(DATA)}, content=DATA)
    assert_error(await registry.client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await registry.client.patch(location, content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")


# Inspecting and cancelling


async def test_get_session_reports_progress_with_204(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    empty = await registry.client.get(location)
    assert empty.status_code == 204
    assert empty.headers["Range"] == "0-0"
    assert empty.headers["Location"] == location
    await registry.client.patch(location, content=DATA[:CHUNK + 1])
    status = await registry.client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{CHUNK}"
    assert status.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]
    assert status.content == b""


async def test_delete_cancels_the_session(registry: Registry) -> None:
    location = await start_upload(registry.client, NAME)
    await registry.client.patch(location, content=DATA)
    response = await registry.client.delete(location)
    assert response.status_code == 204
    assert_error(await registry.client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    put = await registry.client.put(location, params={"digest": digest_of(DATA)})
    assert_error(put, 404, "BLOB_UPLOAD_UNKNOWN")
    assert spool_is_empty(registry)
    assert no_chunks_stored(registry)


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
async def test_unknown_session_is_404_blob_upload_unknown(registry: Registry, method: str) -> None:
    url = f"/v2/{NAME}/blobs/uploads/n1.no-such-session"
    response = await registry.client.request(
        method, url, params={"digest": digest_of(b"x")} if method == "PUT" else None,
        content=b"x" if method in ("PATCH", "PUT") else None,
    )
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
async def test_a_session_is_unknown_under_another_repository_name(
    registry: Registry, method: str
) -> None:
    location = await start_upload(registry.client, NAME)
    session_id = location.rsplit("/", 1)[1]
    response = await registry.client.request(
        method,
        f"/v2/team/other/blobs/uploads/{session_id}",
        params={"digest": digest_of(b"x")} if method == "PUT" else None,
        content=b"x" if method in ("PATCH", "PUT") else None,
    )
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    # …and untouched under its own.
    status = await registry.client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"
