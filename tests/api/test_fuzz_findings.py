"""Inputs the fuzzer (scripts/fuzz) found answered with a 500, pinned as 4xx.

Each test is one finding: the smallest request that showed it, and the
answer the spec asks for instead.
"""

from __future__ import annotations

import json

import pytest

from tests.api.content import (
    OCI_CONFIG,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    push_blob,
    put_manifest,
)
from tests.conftest import Registry

CONFIG = b'{"architecture": "amd64", "os": "linux"}'

# JSON may spell a lone UTF-16 surrogate ("\ud800"): the body is valid UTF-8
# and valid JSON, but the string it decodes to is not text and cannot be
# stored or sent on.
LONE_SURROGATE = "\ud800"


def _manifest_with(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(CONFIG, OCI_CONFIG),
        "layers": [],
        **fields,
    }
    return json.dumps(doc).encode()  # ensure_ascii: the surrogate goes as "\ud800"


@pytest.mark.parametrize(
    "fields",
    [
        {"annotations": {"note": LONE_SURROGATE}},
        {"annotations": {LONE_SURROGATE: "note"}},
        {"artifactType": "application/x" + LONE_SURROGATE},
        {"config": descriptor(CONFIG, "application/x" + LONE_SURROGATE)},
    ],
    ids=["annotation-value", "annotation-key", "artifactType", "config-mediaType"],
)
async def test_manifest_with_a_lone_surrogate_in_a_stored_string_is_manifest_invalid(
    registry: Registry, fields: dict[str, object]
) -> None:
    await push_blob(registry.client, "team/app", CONFIG)
    body = _manifest_with(**fields)
    assert b"\\ud800" in body
    response = await put_manifest(registry.client, "team/app", "v1", body, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")
    missing = await registry.client.get("/v2/team/app/manifests/v1")
    assert missing.status_code == 404
