"""The largest manifest a node accepts becomes a Raft entry that fits in one
transport frame, alone and in a full append: otherwise a follower that needs
that entry could never receive it and would never catch up."""

from __future__ import annotations

import json

from consensus.commands import PutManifest
from consensus.raft.core import MAX_APPEND_BYTES
from consensus.raft.messages import Message, MessageType
from consensus.raft.transport import MAX_FRAME, encode_frame
from consensus.raft.types import Entry, EntryKind
from node.api.manifest_format import parse_manifest
from node.config import MAX_MANIFEST_LIMIT

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def largest_manifest(size: int) -> bytes:
    """A valid manifest of `size` bytes that is nearly all annotation, which the
    command carries twice (in the body and parsed out of it)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha512:" + "c" * 128, "size": 2},
        "subject": {"mediaType": MANIFEST_TYPE, "digest": "sha512:" + "d" * 128, "size": 2},
        "layers": [],
        "annotations": {"pad": ""},
    }
    doc["annotations"]["pad"] = "x" * (size - len(json.dumps(doc).encode()))
    body = json.dumps(doc).encode()
    assert len(body) == size
    return body


def test_append_of_the_largest_manifest_entry_fits_in_one_frame() -> None:
    body = largest_manifest(MAX_MANIFEST_LIMIT)
    parsed = parse_manifest(body, MANIFEST_TYPE)
    command = PutManifest(
        repo="r" * 255, digest="sha512:" + "e" * 128, media_type=parsed.media_type, body=body,
        tag="t" * 128, subject=parsed.subject, artifact_type=parsed.artifact_type,
        annotations=parsed.annotations, blobs=parsed.blobs, manifests=parsed.manifests,
    )
    entry = Entry(2**40, 2**40, EntryKind.NORMAL, command.encode())
    assert len(entry.data) > 2 * MAX_MANIFEST_LIMIT - 4096  # the body really travels twice
    append = Message(
        MessageType.APPEND, "n" * 64, "m" * 64, term=2**40, log_term=2**40, index=2**40,
        entries=(entry,), commit=2**40,
    )
    frame = encode_frame({"t": "raft", "m": append.to_wire()})
    assert len(frame) < MAX_FRAME
    # A full append of small entries stays under the frame limit as well.
    assert MAX_APPEND_BYTES + 256 * 64 < MAX_FRAME
