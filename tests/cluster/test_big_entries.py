"""Three real nodes and manifests close to the 4 MiB limit: a follower that
missed many of them catches up, so losing another node later costs nothing.

Each such manifest is one Raft entry of about 8 MiB (the body, plus its big
annotation once more in the command). Before appends were capped in bytes, a
leader sent a returning follower everything it missed in one frame, larger
than the frame limit; the follower dropped the connection every time and
never caught up, and the cluster lost its majority with the next failure.
"""

from __future__ import annotations

import json
import time

import httpx

from node.cluster.client import call_sync
from tests.cluster.conftest import MANIFEST_TYPE, Cluster, push_blob, put_manifest

MANIFESTS = 20
MANIFEST_BYTES = 4 * (1 << 20) - 4096  # just under the default max_manifest_bytes


def padded_manifest(config: str, config_size: int, n: int, size: int) -> bytes:
    """A valid image manifest of exactly `size` bytes, padded with an annotation."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [],
        "annotations": {"padding": ""},
    }
    bare = len(json.dumps(doc).encode())
    doc["annotations"]["padding"] = f"{n}-" + "x" * (size - bare - len(f"{n}-"))
    body = json.dumps(doc).encode()
    assert len(body) == size
    return body


def applied(cluster: Cluster, node_id: str) -> int:
    return cluster.status(node_id)["applied_index"]


def wait_caught_up(cluster: Cluster, follower: str, leader: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    target = applied(cluster, leader)
    while time.monotonic() < deadline:
        try:
            if applied(cluster, follower) >= target:
                return
        except httpx.HTTPError:
            pass  # busy writing 8 MiB entries, or still starting
        time.sleep(0.2)
    raise AssertionError(
        f"{follower} applied {applied(cluster, follower)}, leader {leader} is at {target}"
    )


def test_follower_missing_many_large_manifests_catches_up_and_keeps_the_majority(
    cluster_factory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    lagging, other = [n for n in sorted(cluster.nodes) if n != leader]
    cluster.nodes[lagging].kill()

    url = cluster.nodes[leader].url
    config = b'{"architecture":"amd64","os":"linux"}'
    config_digest = push_blob(url, "big/app", config)
    for n in range(MANIFESTS):
        body = padded_manifest(config_digest, len(config), n, MANIFEST_BYTES)
        response = put_manifest(url, "big/app", f"v{n}", body, timeout=60)
        assert response.status_code == 201, response.text

    # A new leader starts with no idea what the returning follower holds.
    response = call_sync(cluster.secret, "POST", f"{url}/_cluster/leader", {"to": other})
    assert response.status_code == 200, response.text
    leader = cluster.wait_for_leader(not_=lagging)
    assert leader == other

    cluster.nodes[lagging].start()
    wait_caught_up(cluster, lagging, leader, timeout=30)

    cluster.nodes[leader].kill()
    survivors = [lagging, next(n for n in cluster.nodes if n not in (lagging, leader))]
    cluster.wait_for_leader(among=survivors)
    small = padded_manifest(config_digest, len(config), MANIFESTS, 2048)
    response = put_manifest(cluster.nodes[lagging].url, "big/app", "small", small)
    assert response.status_code == 201, response.text
