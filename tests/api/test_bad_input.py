"""Malformed names, digests, tags, paths and headers: always a 4xx with the error envelope.

No request, however malformed, may get a 5xx or a traceback. The fixed cases
pin the codes the spec names; the Hypothesis test throws generated paths,
queries, headers and bodies at the live server and checks only that promise.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.content import (
    OCI_MANIFEST,
    assert_envelope,
    assert_error,
    descriptor,
    digest_of,
    make_manifest,
    push_blob,
    push_image,
    start_upload,
)
from tests.conftest import NodeProcess, Registry

GOOD_DIGEST = digest_of(b"x")

BAD_NAMES = [
    "Team/App",  # uppercase
    "team/App",
    "team/../app",
    "..",
    "team/..",
    "./team",
    "team//app",  # empty component
    "/team/app",
    "team/app/",
    "-team",
    "team-",
    "team_",
    "team___app",  # three underscores are not a separator
    "team..app",
    "team/.app",
    "t" * 256,  # over 255 characters
    "a/" * 127 + "bc",  # 256 characters in components
    "team app",
    "team%app",
    "tëam",
    "team:app",
]


def endpoints_for(name: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/{GOOD_DIGEST}"),
        ("GET", f"/v2/{name}/blobs/{GOOD_DIGEST}"),
        ("DELETE", f"/v2/{name}/blobs/{GOOD_DIGEST}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("PATCH", f"/v2/{name}/blobs/uploads/n1.abc"),
        ("GET", f"/v2/{name}/referrers/{GOOD_DIGEST}"),
    ]


def raw(path: str) -> dict:
    """Send `path` as written: httpx would otherwise normalise `..` and `//`.

    Only what may not appear in a request line at all (spaces, non-ASCII) is
    percent-encoded; existing escapes are kept.
    """
    return {"extensions": {"target": quote(path, safe="/:%@!$&'()*+,;=-._~").encode()}}


async def test_malformed_repository_names_are_name_invalid(registry: Registry) -> None:
    for name in BAD_NAMES:
        for method, path in endpoints_for(name):
            response = await registry.client.request(method, "/v2/", **raw(path))
            assert 400 <= response.status_code < 500, (method, path[:80], response.status_code)
            assert_envelope(response)
            if name not in ("team//app", "/team/app", "team/app/", "team%app", "tëam"):
                # Those fail URL matching before the name grammar; any 4xx is right.
                assert_error(response, 400, "NAME_INVALID")


async def test_name_of_exactly_255_characters_is_accepted(registry: Registry) -> None:
    name = "a" * 100 + "/" + "b" * 100 + "/" + "c" * 53
    assert len(name) == 255
    digest = await push_blob(registry.client, name, b"long name")
    assert (await registry.client.get(f"/v2/{name}/blobs/{digest}")).status_code == 200


async def test_names_using_every_separator_are_accepted(registry: Registry) -> None:
    for name in ("a", "a/b/c/d", "a.b", "a_b", "a__b", "a-b", "a---b", "0/9", "blobs/manifests"):
        digest = await push_blob(registry.client, name, name.encode())
        assert (await registry.client.head(f"/v2/{name}/blobs/{digest}")).status_code == 200


BAD_DIGESTS = [
    "sha256:" + "0" * 63,  # too short
    "sha256:" + "0" * 65,  # too long
    "sha256:" + "A" * 64,  # uppercase hex
    "sha256:" + "g" * 64,  # not hex
    "sha512:" + "0" * 64,  # sha512 with a sha256 length
    "md5:" + "0" * 32,  # unknown algorithm
    "sha1:" + "0" * 40,
    "SHA256:" + "0" * 64,
    "sha256:",
    ":" + "0" * 64,
    "sha256::" + "0" * 64,
    "sha256:" + "0" * 64 + ":",
]


async def test_malformed_digests_are_digest_invalid(registry: Registry) -> None:
    name = "team/app"
    location = await start_upload(registry.client, name)
    for digest in BAD_DIGESTS:
        requests = [
            ("GET", f"/v2/{name}/blobs/{digest}", {}),
            ("DELETE", f"/v2/{name}/blobs/{digest}", {}),
            ("GET", f"/v2/{name}/manifests/{digest}", {}),
            ("DELETE", f"/v2/{name}/manifests/{digest}", {}),
            ("PUT", f"/v2/{name}/manifests/{digest}", {"content": b"{}"}),
            ("GET", f"/v2/{name}/referrers/{digest}", {}),
            ("POST", f"/v2/{name}/blobs/uploads/", {"params": {"digest": digest}}),
            ("POST", f"/v2/{name}/blobs/uploads/", {"params": {"mount": digest, "from": "a"}}),
            ("PUT", location, {"params": {"digest": digest}}),
        ]
        for method, url, kwargs in requests:
            response = await registry.client.request(method, url, **kwargs)
            assert response.status_code == 400, (method, url, digest, response.status_code)
            assert_error(response, 400, "DIGEST_INVALID")


async def test_malformed_digest_in_head_is_400_without_body(registry: Registry) -> None:
    response = await registry.client.head("/v2/team/app/blobs/sha256:" + "A" * 64)
    assert response.status_code == 400
    assert response.content == b""


BAD_TAGS = ["t" * 129, ".hidden", "-dash", "a+b", "a@b", "tag with space", "ta%g", "é"]


async def test_malformed_tags_are_refused(registry: Registry) -> None:
    pushed = await push_image(registry.client, "team/app")
    for tag in BAD_TAGS:
        put = await registry.client.put(
            f"/v2/team/app/manifests/{tag}",
            content=pushed.body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert put.status_code == 400, (tag, put.status_code)
        assert_error(put, 400, "TAG_INVALID")
        for method in ("GET", "DELETE"):
            response = await registry.client.request(method, f"/v2/team/app/manifests/{tag}")
            assert 400 <= response.status_code < 500, (method, tag)
            assert_envelope(response)
    listing = await registry.client.get("/v2/team/app/tags/list")
    assert listing.json()["tags"] == []


PATH_TRICKS = [
    "/v2/%2e%2e/%2e%2e/etc/passwd",
    "/v2/team/%2e%2e/tags/list",
    "/v2/team/%2E%2E/app/tags/list",
    "/v2/team/../../tags/list",
    "/v2/team/./app/tags/list",
    "/v2//team/app/tags/list",
    "/v2/team//app/tags/list",
    "/v2/team/app//tags/list",
    "/v2/team%2Fapp%2F..%2Fx/tags/list",
    "/v2/team%2f..%2f..%2fapp/blobs/" + GOOD_DIGEST,
    "/v2/team/app/blobs/..%2f..%2f" + GOOD_DIGEST,
    "/v2/team/app/blobs/uploads/..%2F..%2Fsecret",
    "/v2/team/app/manifests/..%2f..%2flatest",
    "/v2/team/app%00/tags/list",
    "/v2/team/app/tags/list%00",
    "/v2/%00/tags/list",
    "/v2/team/app/manifests/%ff%fe",
    "/v2/team/app/manifests/latest%0d%0aX-Injected:%201",
    "/v2/team\\app/tags/list",
    "/v2/../../../../etc/passwd",
]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_path_tricks_get_a_4xx_envelope_and_never_reach_the_store(
    registry: Registry, method: str
) -> None:
    await push_image(registry.client, "team/app", "latest")
    for path in PATH_TRICKS:
        response = await registry.client.request(method, "/v2/", content=b"{}", **raw(path))
        assert 400 <= response.status_code < 500, (method, path, response.status_code)
        assert_envelope(response)
        assert "X-Injected" not in response.headers
    # Nothing was deleted or overwritten along the way.
    assert (await registry.client.get("/v2/team/app/manifests/latest")).status_code == 200
    assert not (registry.data.parent / "etc").exists()


async def test_unusual_methods_are_405_or_404_never_5xx(registry: Registry) -> None:
    for method in ("OPTIONS", "TRACE", "PROPFIND", "CONNECT-ISH"):
        for path in ("/v2/team/app/tags/list", "/v2/_catalog", "/v2/x/blobs/" + GOOD_DIGEST):
            response = await registry.client.request(method, path)
            assert 400 <= response.status_code < 500, (method, path, response.status_code)


async def test_garbage_request_bodies_never_cause_a_5xx(registry: Registry) -> None:
    location = await start_upload(registry.client, "team/app")
    garbage = bytes(range(256)) * 64
    for method, url, headers in [
        ("PUT", "/v2/team/app/manifests/v1", {"Content-Type": OCI_MANIFEST}),
        ("PUT", "/v2/team/app/manifests/v1", {"Content-Type": "\x01\x02"}),
        ("PUT", "/v2/team/app/manifests/v1", {}),
        ("PATCH", location, {"Content-Range": "garbage"}),
        ("PUT", location, {}),
        ("POST", "/v2/team/app/blobs/uploads/?digest=" + GOOD_DIGEST, {}),
        ("GET", "/v2/team/app/tags/list", {"Content-Type": "multipart/form-data"}),
    ]:
        response = await registry.client.request(method, url, content=garbage, headers=headers)
        assert 400 <= response.status_code < 500, (method, url, headers, response.status_code)
        assert_envelope(response)


# Generated requests

SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "team", "app", "a", "blobs", "uploads", "manifests", "tags", "list", "_catalog",
            "referrers", "..", ".", "", "%2e%2e", "%2F", "%00", "%ff", "latest", "n1.x",
            GOOD_DIGEST, "sha256:", "sha512:" + "0" * 128, "sha256:" + "F" * 64, "A" * 300,
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?"),
        max_size=20,
    ),
)
QUERY_KEYS = st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType", "x"])
QUERY_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "10", "9" * 40, "²", "", GOOD_DIGEST, "team/app", "a b"]),
    st.text(max_size=15),
)
HEADER_VALUE = st.one_of(
    st.sampled_from(
        [
            "bytes=0-0", "bytes=-0", "bytes=5-1", "bytes=0-" + "9" * 400, "bytes=0-1,2-3",
            "0-9", "9-0", "0-" + "9" * 400, "bytes */5", OCI_MANIFEST, "application/json",
            "application/vnd.oci.image.index.v1+json; charset=utf-8", "",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
    ),
)
HEADER_NAMES = st.sampled_from(
    ["Range", "Content-Range", "Content-Type", "Accept", "If-None-Match", "Expect"]
)
BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.sampled_from([b"{}", b'{"schemaVersion": 2}', b"[" * 5000, b'{"manifests": 1}']),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], dict[str, str], bytes]:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]))
    path = "/v2/" + "/".join(draw(st.lists(SEGMENTS, min_size=1, max_size=6)))
    query = draw(st.dictionaries(QUERY_KEYS, QUERY_VALUES, max_size=3))
    headers = draw(st.dictionaries(HEADER_NAMES, HEADER_VALUE, max_size=3))
    headers.pop("Expect", None) if headers.get("Expect", "").lower() == "100-continue" else None
    body = draw(BODIES) if method in ("PUT", "POST", "PATCH") else b""
    return method, path, query, headers, body


def seed_content(client: httpx.Client) -> None:
    """A tagged image, so generated requests can also hit things that exist."""
    if client.get("/v2/team/app/manifests/latest").status_code == 200:
        return
    blobs = [b"{}", b"layer"]
    for blob in blobs:
        client.post("/v2/team/app/blobs/uploads/", params={"digest": digest_of(blob)}, content=blob)
    manifest = make_manifest(
        descriptor(blobs[0], "application/vnd.oci.image.config.v1+json"),
        [descriptor(blobs[1], "application/vnd.oci.image.layer.v1.tar")],
    )
    response = client.put(
        "/v2/team/app/manifests/latest", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(requests(), min_size=1, max_size=15))
def test_generated_requests_never_get_a_5xx(
    node_process: NodeProcess,
    batch: list[tuple[str, str, dict[str, str], dict[str, str], bytes]],
) -> None:
    # One `flotilla serve` process answers every example, so state accumulates
    # the way it does on a real registry. (A trio fixture cannot outlive one
    # example: pytest-trio gives each its own trio run.)
    with httpx.Client(base_url=node_process.url, timeout=10) as client:
        seed_content(client)
        for method, path, query, headers, body in batch:
            try:
                request = client.build_request(
                    method, "/v2/", params=query, headers=headers, content=body
                )
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
                continue  # the client refuses to build it; nothing to learn
            query_bytes = request.url.query
            request.extensions["target"] = quote(
                path, safe="/:%@!$&'()*+,;=-._~"
            ).encode() + (b"?" + query_bytes if query_bytes else b"")
            try:
                response = client.send(request)
            except httpx.LocalProtocolError:
                continue  # e.g. a header value h11 will not put on the wire
            assert response.status_code < 500, (method, path, query, headers, response.text[:300])
            if response.status_code >= 400 and method != "HEAD":
                assert_envelope(response)
        assert client.get("/v2/").status_code == 200
    assert node_process.log is not None
    assert "unhandled error" not in node_process.log.read_text()
