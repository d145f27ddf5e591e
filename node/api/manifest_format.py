"""What a manifest must look like before it is stored, without I/O.

Accepts the OCI image manifest and index and the Docker schema 2 manifest
and manifest list (OCI artifacts are image manifests with `artifactType`).
Parsing yields what the registry must know: the blobs and child manifests
the manifest references (they must exist in the repository), its
`subject`, and what the referrers API reports for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from node.api.errors import ManifestInvalid
from node.api.grammar import parse_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

# Layers that live elsewhere (Windows base layers): not required to be in the registry.
FOREIGN_LAYER_PREFIXES = (
    "application/vnd.docker.image.rootfs.foreign.",
    "application/vnd.oci.image.layer.nondistributable.",
)


@dataclass(frozen=True)
class ParsedManifest:
    media_type: str
    blobs: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


def _invalid(reason: str) -> ManifestInvalid:
    return ManifestInvalid(f"manifest invalid: {reason}", detail={"reason": reason})


def _is_text(value: Any) -> bool:
    """A string that is text: JSON can spell a lone surrogate ("\\ud800"), which decodes
    to a str no encoder will write, so it could be neither stored nor sent on."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not a descriptor")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType missing")
    if not _is_text(media_type):
        raise _invalid(f"{where}.mediaType is not text")
    if not isinstance(digest, str):
        raise _invalid(f"{where}.digest missing")
    try:
        parse_digest(digest)
    except Exception:
        raise _invalid(f"{where}.digest {digest[:80]!r} is not a valid digest") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}.size must be a non-negative integer")
    return value


def _annotations(doc: dict[str, Any]) -> dict[str, str] | None:
    value = doc.get("annotations")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        _is_text(k) and _is_text(v) for k, v in value.items()
    ):
        raise _invalid("annotations must map strings to strings")
    return value or None


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a manifest body against its declared media type."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise _invalid("body is not JSON") from None
    except RecursionError:
        # A few MiB of "[[[[…" nest deeper than the parser's stack allows.
        raise _invalid("body nests too deeply") from None
    if not isinstance(doc, dict):
        raise _invalid("body is not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    declared = (content_type or "").split(";")[0].strip().lower()
    inner = doc.get("mediaType")
    if inner is not None and not isinstance(inner, str):
        raise _invalid("mediaType must be a string")
    if inner is not None and inner not in MANIFEST_TYPES:
        # Guessing from the shape would store it under a type its own body denies.
        raise _invalid(f"unsupported manifest media type {inner[:100]!r}")
    if declared in MANIFEST_TYPES:
        media_type = declared
        if inner is not None and inner != declared:
            raise _invalid(f"mediaType {inner!r} does not match Content-Type {declared!r}")
    elif inner in MANIFEST_TYPES:
        media_type = inner
    elif "manifests" in doc:
        media_type = OCI_INDEX
    elif "config" in doc:
        media_type = OCI_MANIFEST
    else:
        raise _invalid(f"unsupported manifest media type {declared or inner!r}")

    artifact_type = doc.get("artifactType")
    if artifact_type is not None and (not _is_text(artifact_type) or not artifact_type):
        raise _invalid("artifactType must be a non-empty string")
    subject = None
    if doc.get("subject") is not None:
        subject = _descriptor(doc["subject"], "subject")["digest"]

    if media_type in IMAGE_TYPES:
        config = _descriptor(doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        blobs = [config["digest"]]
        for i, layer in enumerate(layers):
            layer = _descriptor(layer, f"layers[{i}]")
            if not layer["mediaType"].startswith(FOREIGN_LAYER_PREFIXES):
                blobs.append(layer["digest"])
        reported_type = artifact_type or config["mediaType"]
        return ParsedManifest(
            media_type,
            blobs=list(dict.fromkeys(blobs)),
            subject=subject,
            artifact_type=reported_type,
            annotations=_annotations(doc),
        )

    children = doc.get("manifests")
    if not isinstance(children, list):
        raise _invalid("manifests must be a list")
    digests = [_descriptor(m, f"manifests[{i}]")["digest"] for i, m in enumerate(children)]
    return ParsedManifest(
        media_type,
        manifests=list(dict.fromkeys(digests)),
        subject=subject,
        artifact_type=artifact_type,
        annotations=_annotations(doc),
    )
