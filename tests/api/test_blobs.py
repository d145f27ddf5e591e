"""`/v2/<name>/blobs/<digest>`: whole and ranged reads, HEAD, delete, and the chunked store beneath.

The `registry` fixture cuts blobs into 64 KiB chunks, so the boundary cases
of range reads cost a few hundred KiB.
"""

from __future__ import annotations

import pytest

from tests.api.content import (
    CHUNK,
    assert_error,
    digest_of,
    push_blob,
    random_bytes,
)
from tests.conftest import Registry

NAME = "team/app"
BIG = random_bytes(3 * CHUNK + 1234, seed=7)  # four chunks, the last one short


def chunk_files(registry: Registry) -> list[str]:
    return sorted(p.name for p in (registry.data / "chunks").glob("*/*") if p.is_file())


async def test_blob_get_returns_exact_bytes_and_headers(registry: Registry) -> None:
    data = b"hello, flotilla"
    digest = await push_blob(registry.client, NAME, data)
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Accept-Ranges"] == "bytes"


async def test_blob_head_has_length_digest_and_no_body(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    response = await registry.client.head(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == str(len(BIG))
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 1234])
async def test_blobs_at_and_around_chunk_boundaries_round_trip(
    registry: Registry, size: int
) -> None:
    data = random_bytes(size, seed=size)
    digest = await push_blob(registry.client, NAME, data)
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data


async def test_empty_blob_round_trips(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, b"")
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),
        (f"bytes={CHUNK - 1}-{CHUNK}", CHUNK - 1, CHUNK),  # the two bytes around a boundary
        (f"bytes={CHUNK}-{2 * CHUNK - 1}", CHUNK, 2 * CHUNK - 1),  # exactly one whole chunk
        (f"bytes={CHUNK - 5}-{3 * CHUNK + 5}", CHUNK - 5, 3 * CHUNK + 5),  # four chunks touched
        (f"bytes=100-{len(BIG) - 1}", 100, len(BIG) - 1),
        (f"bytes={2 * CHUNK + 17}-", 2 * CHUNK + 17, len(BIG) - 1),  # open-ended
        (f"bytes={len(BIG) - 1}-", len(BIG) - 1, len(BIG) - 1),  # the last byte
        ("bytes=-1", len(BIG) - 1, len(BIG) - 1),  # suffix of one byte
        (f"bytes=-{CHUNK + 1300}", len(BIG) - CHUNK - 1300, len(BIG) - 1),  # suffix over a boundary
        (f"bytes=-{len(BIG) + 50}", 0, len(BIG) - 1),  # suffix longer than the blob
        (f"bytes=5-{len(BIG) + 1000}", 5, len(BIG) - 1),  # end past the blob is clamped
    ],
)
async def test_single_byte_range_returns_206_with_content_range(
    registry: Registry, header: str, first: int, last: int
) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == BIG[first : last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(BIG)}"
    assert response.headers["Content-Length"] == str(last - first + 1)


async def test_range_head_announces_partial_length_without_body(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    response = await registry.client.head(
        f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=10-19"}
    )
    assert response.status_code == 206
    assert response.content == b""
    assert response.headers["Content-Length"] == "10"
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(BIG)}"


@pytest.mark.parametrize(
    "header",
    [f"bytes={len(BIG)}-", f"bytes={len(BIG) + 10}-{len(BIG) + 20}", "bytes=-0",
     "bytes=" + "9" * 5000 + "-"],
)
async def test_unsatisfiable_range_is_416_with_the_blob_size(
    registry: Registry, header: str
) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": header})
    assert_error(response, 416, "RANGE_INVALID")
    assert response.headers["Content-Range"] == f"bytes */{len(BIG)}"


async def test_any_range_of_an_empty_blob_is_416(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, b"")
    response = await registry.client.get(
        f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=0-"}
    )
    assert_error(response, 416, "RANGE_INVALID")


@pytest.mark.parametrize(
    "header", ["bytes=abc", "items=0-5", "bytes=0-1,5-6", "bytes=9-3", "bytes=-", "0-5", ""]
)
async def test_range_header_that_is_not_one_valid_range_is_ignored(
    registry: Registry, header: str
) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == BIG


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_unknown_blob_is_404_blob_unknown(registry: Registry, method: str) -> None:
    await push_blob(registry.client, NAME, b"something else")
    response = await registry.client.request(
        method, f"/v2/{NAME}/blobs/{digest_of(b'never pushed')}"
    )
    assert response.status_code == 404
    if method == "GET":
        assert_error(response, 404, "BLOB_UNKNOWN")


async def test_blob_of_another_repository_is_unknown_here(registry: Registry) -> None:
    digest = await push_blob(registry.client, "team/other", b"private bytes")
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert_error(response, 404, "BLOB_UNKNOWN")


async def test_delete_blob_answers_202_then_the_blob_is_gone(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    response = await registry.client.delete(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 202
    assert_error(await registry.client.get(f"/v2/{NAME}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert (await registry.client.head(f"/v2/{NAME}/blobs/{digest}")).status_code == 404
    ranged = await registry.client.get(
        f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=0-10"}
    )
    assert_error(ranged, 404, "BLOB_UNKNOWN")


async def test_deleting_a_blob_twice_is_404_the_second_time(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, b"once")
    assert (await registry.client.delete(f"/v2/{NAME}/blobs/{digest}")).status_code == 202
    assert_error(
        await registry.client.delete(f"/v2/{NAME}/blobs/{digest}"), 404, "BLOB_UNKNOWN"
    )


async def test_deleting_a_blob_leaves_other_repositories_serving_it(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    await push_blob(registry.client, "team/other", BIG)
    assert (await registry.client.delete(f"/v2/{NAME}/blobs/{digest}")).status_code == 202
    response = await registry.client.get(f"/v2/team/other/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == BIG


async def test_a_deleted_blob_can_be_pushed_again(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    await registry.client.delete(f"/v2/{NAME}/blobs/{digest}")
    await push_blob(registry.client, NAME, BIG)
    assert (await registry.client.get(f"/v2/{NAME}/blobs/{digest}")).content == BIG


async def test_sha512_blob_round_trips_whole_and_ranged(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, BIG, algorithm="sha512")
    assert digest.startswith("sha512:") and len(digest) == len("sha512:") + 128
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == BIG
    assert response.headers["Docker-Content-Digest"] == digest
    ranged = await registry.client.get(
        f"/v2/{NAME}/blobs/{digest}", headers={"Range": f"bytes={CHUNK - 3}-{CHUNK + 3}"}
    )
    assert ranged.status_code == 206
    assert ranged.content == BIG[CHUNK - 3 : CHUNK + 4]


async def test_a_chunk_shared_by_two_blobs_is_stored_once(registry: Registry) -> None:
    shared = random_bytes(CHUNK, seed=1)
    first = shared + random_bytes(CHUNK, seed=2)
    second = shared + random_bytes(CHUNK // 2, seed=3)
    await push_blob(registry.client, NAME, first)
    await push_blob(registry.client, NAME, second)
    assert len(chunk_files(registry)) == 3


async def test_a_blob_pushed_to_two_repositories_is_stored_once(registry: Registry) -> None:
    await push_blob(registry.client, NAME, BIG)
    await push_blob(registry.client, "team/other", BIG)
    assert len(chunk_files(registry)) == 4


def corrupt_chunk(registry: Registry, data: bytes) -> None:
    """Flip one byte of the stored chunk whose content is `data`."""
    import blake3

    cid = blake3.blake3(data).hexdigest()
    path = registry.data / "chunks" / cid[:2] / cid
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


async def test_corrupt_first_chunk_fails_the_request_cleanly_and_is_reported(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    corrupt_chunk(registry, BIG[:CHUNK])
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert_error(response, 500, "CONTENT_CORRUPT")
    assert BIG[:100] not in response.content
    assert registry.node.services.counters["chunk_corrupt"] == 1
    assert any(
        record.levelname == "ERROR" and "BLAKE3" in record.getMessage()
        for record in caplog.records
    )


async def test_corrupt_later_chunk_never_serves_wrong_bytes_and_logs_one_line(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    digest = await push_blob(registry.client, NAME, BIG)
    corrupt_chunk(registry, BIG[2 * CHUNK : 3 * CHUNK])
    try:
        response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    except httpx.HTTPError:
        pass  # the body was cut short: the client learns the transfer failed
    else:
        assert response.content != BIG
        assert len(response.content) < len(BIG)
    assert registry.node.services.counters["chunk_corrupt"] == 1
    cut = [r for r in caplog.records if "cut short after the headers" in r.getMessage()]
    assert len(cut) == 1 and cut[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_range_read_touches_only_the_chunks_it_needs(registry: Registry) -> None:
    digest = await push_blob(registry.client, NAME, BIG)
    corrupt_chunk(registry, BIG[:CHUNK])
    response = await registry.client.get(
        f"/v2/{NAME}/blobs/{digest}", headers={"Range": f"bytes={CHUNK}-{3 * CHUNK - 1}"}
    )
    assert response.status_code == 206
    assert response.content == BIG[CHUNK : 3 * CHUNK]
    assert registry.node.services.counters["chunk_corrupt"] == 0


async def test_missing_chunk_file_fails_the_request_cleanly(registry: Registry) -> None:
    import blake3

    digest = await push_blob(registry.client, NAME, BIG)
    cid = blake3.blake3(BIG[:CHUNK]).hexdigest()
    (registry.data / "chunks" / cid[:2] / cid).unlink()
    response = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert_error(response, 500, "CONTENT_CORRUPT")
