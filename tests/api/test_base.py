"""`/v2/` and what every response shares: the API version header and, on errors, the envelope."""

from __future__ import annotations

import pytest

from tests.api.content import assert_error
from tests.conftest import Registry


async def test_base_endpoint_answers_with_api_version(registry: Registry) -> None:
    response = await registry.client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_base_endpoint_without_trailing_slash_answers_too(registry: Registry) -> None:
    response = await registry.client.get("/v2")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_base_endpoint_head_has_headers_and_no_body(registry: Registry) -> None:
    response = await registry.client.head("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.content == b""


async def test_error_responses_carry_api_version_too(registry: Registry) -> None:
    response = await registry.client.get("/v2/team/app/manifests/missing")
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("path", ["/", "/v1/", "/v3/_catalog", "/favicon.ico"])
async def test_paths_outside_the_api_are_404_with_the_error_envelope(
    registry: Registry, path: str
) -> None:
    assert_error(await registry.client.get(path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "path", ["/v2/team/app", "/v2/team/app/blobs", "/v2/team/app/unknown/thing"]
)
async def test_unknown_endpoints_under_v2_are_404_with_the_error_envelope(
    registry: Registry, path: str
) -> None:
    assert_error(await registry.client.get(path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v2/team/app/tags/list", "GET"),
        ("DELETE", "/v2/_catalog", "GET"),
        ("PATCH", "/v2/team/app/manifests/latest", "DELETE, GET, HEAD, PUT"),
        ("GET", "/v2/team/app/blobs/uploads/", "POST"),
        ("PUT", "/v2/team/app/referrers/sha256:" + "0" * 64, "GET"),
    ],
)
async def test_wrong_method_is_405_unsupported_with_allow(
    registry: Registry, method: str, path: str, allowed: str
) -> None:
    response = await registry.client.request(method, path)
    assert_error(response, 405, "UNSUPPORTED")
    assert response.headers["Allow"] == allowed


async def test_head_of_an_error_has_no_body(registry: Registry) -> None:
    response = await registry.client.head("/v2/team/app/manifests/missing")
    assert response.status_code == 404
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"
