"""`/v2/<name>/manifests/<reference>`: store, fetch and delete manifests by tag or digest."""

from __future__ import annotations

import json
import time

from quart import Response, request

from consensus.engine import DeleteManifest, DeleteTag, ManifestRecord, PutManifest, Queries
from node.api.errors import DigestInvalid, ManifestUnknown, TagImmutable
from node.api.grammar import Digest, is_digest, is_tag, parse_digest, parse_tag
from node.api.manifest_format import parse_manifest
from node.api.request_bodies import read_body_bounded
from node.services import NodeServices


async def find_manifest(rt: NodeServices, name: str, reference: str) -> ManifestRecord:
    """The manifest a tag or digest names; a miss is confirmed after a read barrier.

    A reference that is neither a digest nor a valid tag names nothing that
    could ever be stored, so a read answers MANIFEST_UNKNOWN (what the OCI
    conformance suite asks of `.INVALID_MANIFEST_NAME`); only writes call a
    malformed tag TAG_INVALID.
    """
    if is_digest(reference):
        digest = str(parse_digest(reference))

        def query(q: Queries) -> ManifestRecord | None:
            return q.manifest(name, digest)
    else:
        if not is_tag(reference):
            raise ManifestUnknown(detail={"reference": reference[:200]})
        tag = reference

        def query(q: Queries) -> ManifestRecord | None:
            tagged = q.tag(name, tag)
            return q.manifest(name, tagged) if tagged else None

    record = await rt.engine.lookup(query)
    if record is None:
        raise ManifestUnknown(detail={"reference": reference[:200]})
    return record


async def get_manifest(rt: NodeServices, name: str, reference: str) -> Response:
    record = await find_manifest(rt, name, reference)
    headers = {"Content-Type": record.media_type, "Docker-Content-Digest": record.digest}
    if request.method == "HEAD":
        response = Response(b"", status=200, headers=headers)
        response.headers["Content-Length"] = str(len(record.body))
        return response
    return Response(record.body, status=200, headers=headers)


async def put_manifest(rt: NodeServices, name: str, reference: str) -> Response:
    tag = None
    if is_digest(reference):
        claimed: Digest | None = parse_digest(reference)
    else:
        claimed, tag = None, parse_tag(reference)
    body = await read_body_bounded(rt.config.max_manifest_bytes, "manifest")
    digest = Digest.of(body, claimed.algorithm if claimed else "sha256")
    if claimed is not None and claimed != digest:
        raise DigestInvalid(
            "manifest body does not match the digest in the URL",
            detail={"expected": str(claimed), "actual": str(digest)},
        )
    parsed = parse_manifest(body, request.headers.get("Content-Type"))
    if tag is not None:
        refuse_moving_immutable_tag(rt.engine.queries, name, tag, str(digest))
    await rt.engine.propose(
        PutManifest(
            repo=name,
            digest=str(digest),
            media_type=parsed.media_type,
            body=body,
            tag=tag,
            subject=parsed.subject,
            artifact_type=parsed.artifact_type,
            annotations=parsed.annotations,
            blobs=parsed.blobs,
            manifests=parsed.manifests,
            now=int(time.time()),
        )
    )
    headers = {
        "Location": f"/v2/{name}/manifests/{digest}",
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    }
    if parsed.subject:
        headers["OCI-Subject"] = parsed.subject
    return Response(b"", status=201, headers=headers)


def refuse_moving_immutable_tag(queries: Queries, repo: str, tag: str, digest: str) -> None:
    """TagImmutable if the local state already shows that this push would move an
    immutable tag: a quick answer before the body goes through Raft. The state
    machine checks again when it applies the push, which is what decides a race."""
    current = queries.tag(repo, tag)
    if current is None or current == digest:
        return
    rule = queries.immutable_rule_for(repo, tag)
    if rule is not None:
        raise TagImmutable(detail=json.dumps({
            "tag": tag, "digest": current, "rule": rule.pattern, "exclude": list(rule.exclude),
        }))


async def delete_manifest(rt: NodeServices, name: str, reference: str) -> Response:
    if is_digest(reference):
        command: DeleteManifest | DeleteTag = DeleteManifest(
            repo=name, digest=str(parse_digest(reference))
        )
    else:
        command = DeleteTag(repo=name, tag=parse_tag(reference))
    await rt.engine.propose(command)
    return Response(b"", status=202, headers={"Content-Length": "0"})
