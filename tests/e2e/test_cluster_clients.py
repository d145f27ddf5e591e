"""Real docker and skopeo against a real 3-node cluster (R=2, 1 MiB chunks).

docker pushes through node 1 and pulls and runs through node 3, then through
node 2 once node 1 is killed; skopeo copies an image from node 2 to node 3
under another repository name (the cross-repository mount path) and reads it
back through node 1. Each node is reached by a loopback port, which docker
treats as an insecure registry.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import (
    Cluster,
    cluster_factory,  # noqa: F401  (the fixture, by name)
)
from tests.e2e.clients import Docker, Skopeo
from tests.e2e.images import ImageLayout
from tests.e2e.test_docker import MANIFEST_TYPES, pushed_digest
from tests.e2e.test_skopeo import busybox_layout

pytestmark = pytest.mark.e2e

MiB = 1 << 20
REPLICAS = 2  # the cluster's default replication


def node_ref(cluster: Cluster, node_id: str, name: str) -> str:
    """`name` (repo:tag) as docker sees it on one node."""
    return f"{cluster.nodes[node_id].address}/{name}"


def chunk_files(cluster: Cluster, node_id: str) -> list[str]:
    return [p.name for p in (cluster.nodes[node_id].data / "chunks").glob("??/*")]


def node_logs(cluster: Cluster) -> str:
    """Every node's log, for assertion messages."""
    parts = []
    for node_id, node in cluster.nodes.items():
        text = node.log.read_text(errors="replace") if node.log and node.log.exists() else ""
        parts.append(f"--- {node_id} log (last 3000 chars)\n{text[-3000:]}")
    return "\n".join(parts)


def manifest_blobs(url: str, repo: str, reference: str) -> list[dict]:
    """The config and layer descriptors of a manifest, as `url` serves it."""
    response = httpx.get(f"{url}/v2/{repo}/manifests/{reference}",
                         headers={"Accept": MANIFEST_TYPES}, timeout=30)
    assert response.status_code == 200, response.text
    manifest = response.json()
    return [manifest["config"], *manifest["layers"]]


def assert_blobs_served(url: str, repo: str, blobs: list[dict]) -> None:
    for blob in blobs:
        response = httpx.get(f"{url}/v2/{repo}/blobs/{blob['digest']}", timeout=60)
        assert response.status_code == 200, (url, blob, response.text[:300])
        assert len(response.content) == blob["size"]
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == blob["digest"]


def test_docker_push_to_n1_pull_and_run_from_n3_then_from_n2_after_n1_dies(
    cluster_factory,  # noqa: F811
    docker: Docker, base_image: str, repo: str, local_images: list[str],
) -> None:
    cluster: Cluster = cluster_factory(3, "--chunk-size", str(MiB))
    token = uuid.uuid4().hex
    base, layered = f"{repo}/base:1", f"{repo}/layered:1"
    stage = f"flotilla-e2e/{repo.replace('/', '-')}-stage:1"
    local_images.append(stage)
    for node_id in cluster.nodes:
        local_images.extend([node_ref(cluster, node_id, base), node_ref(cluster, node_id, layered)])

    # The base image as is, and a three-layer image: base, 3 MiB of random bytes
    # (incompressible, so several chunks), and a small file.
    docker("tag", base_image, node_ref(cluster, "n1", base))
    docker.commit_change(base_image, "head -c 3145728 /dev/urandom > /random.bin", into=stage)
    docker.commit_change(stage, f"echo {token} > /token.txt",
                         into=node_ref(cluster, "n1", layered))
    base_id = docker.image_id(base_image)
    layered_id = docker.image_id(node_ref(cluster, "n1", layered))
    layers = docker.layers(node_ref(cluster, "n1", layered))
    assert len(layers) == 3

    base_digest = pushed_digest(docker("push", node_ref(cluster, "n1", base)).stdout)
    layered_digest = pushed_digest(docker("push", node_ref(cluster, "n1", layered)).stdout)

    # Every chunk is stored on exactly R nodes; the nodes' counters agree with their disks.
    copies: Counter[str] = Counter()
    for node_id in cluster.nodes:
        copies.update(chunk_files(cluster, node_id))
    assert len(copies) >= 4, "the random layer alone spans several 1 MiB chunks"
    assert set(copies.values()) == {REPLICAS}, copies
    stored = {node_id: cluster.status(node_id)["chunks"]["stored"] for node_id in cluster.nodes}
    assert sum(stored.values()) == REPLICAS * len(copies), (stored, len(copies))

    # Node 3 serves both manifests and every blob byte for byte.
    n3 = cluster.nodes["n3"].url
    for name, digest in ((base, base_digest), (layered, layered_digest)):
        repo_name, tag = name.rsplit(":", 1)
        blobs = manifest_blobs(n3, repo_name, tag)
        assert_blobs_served(n3, repo_name, blobs)
        by_digest = httpx.head(f"{n3}/v2/{repo_name}/manifests/{digest}",
                               headers={"Accept": MANIFEST_TYPES})
        assert by_digest.status_code == 200

    # docker pull + run through node 3, nothing of the layered image left locally.
    docker.remove(node_ref(cluster, "n1", layered), stage, node_ref(cluster, "n1", base))
    assert not docker.exists(node_ref(cluster, "n1", layered))
    for name, image_id in ((base, base_id), (layered, layered_id)):
        pull = docker("pull", node_ref(cluster, "n3", name)).stdout
        assert docker.image_id(node_ref(cluster, "n3", name)) == image_id, pull
    assert docker.layers(node_ref(cluster, "n3", layered)) == layers
    run = docker("run", "--rm", node_ref(cluster, "n3", layered),
                 "sh", "-c", "echo hello from n3; cat /token.txt; wc -c < /random.bin")
    assert run.stdout.split() == ["hello", "from", "n3", token, "3145728"]
    run = docker("run", "--rm", node_ref(cluster, "n3", base), "sh", "-c", "echo base from n3")
    assert run.stdout == "base from n3\n"
    # Pulls fill caches, never stores.
    assert {n: cluster.status(n)["chunks"]["stored"] for n in cluster.nodes} == stored

    # kill -9 node 1: node 2 still gives the whole image.
    # Node 1 is also the Raft leader as a rule (it starts first): survivors elect anew.
    cluster.nodes["n1"].kill()
    docker.remove(node_ref(cluster, "n3", layered))
    assert not docker.exists(node_ref(cluster, "n3", layered))
    pull = docker("pull", node_ref(cluster, "n2", layered))
    assert docker.image_id(node_ref(cluster, "n2", layered)) == layered_id, (
        f"{pull.stdout}\n{node_logs(cluster)}")
    run = docker("run", "--rm", node_ref(cluster, "n2", layered),
                 "sh", "-c", "echo hello from n2; cat /token.txt")
    assert run.stdout == f"hello from n2\n{token}\n"


def test_skopeo_copy_n2_to_n3_under_another_name_mounts_and_reads_back_through_n1(
    cluster_factory,  # noqa: F811
    skopeo: Skopeo, repo: str, tmp_path: Path,
) -> None:
    cluster: Cluster = cluster_factory(3, "--chunk-size", str(MiB))
    address = {node_id: node.address for node_id, node in cluster.nodes.items()}
    source = busybox_layout(tmp_path / "source", "1")
    own = source.add_layer(random_file_size=3 * MiB)  # several chunks
    source.add_image("big", [own])
    src, dst = f"{repo}/a/src", f"{repo}/b/dst"

    for tag in ("1", "big"):
        skopeo.copy(f"oci:{source.root}:{tag}", f"docker://{address['n2']}/{src}:{tag}")
    # Reading the source through node 3 tells skopeo's blob cache that node 3
    # has these blobs in `src`, so the copy below asks node 3 to mount them.
    skopeo.copy(f"docker://{address['n3']}/{src}:1", f"oci:{tmp_path / 'via-n3'}:1")
    assert ImageLayout(tmp_path / "via-n3").manifest_digest("1") == source.manifest_digest("1")

    copy = skopeo("--debug", "copy", "--retry-times", "0", "--src-tls-verify=false",
                  "--dest-tls-verify=false", f"docker://{address['n2']}/{src}:1",
                  f"docker://{address['n3']}/{dst}:1")
    # Every layer is mounted from `src` on node 3, none is uploaded again (the
    # config is uploaded: skopeo's cache does not record where configs were read).
    layers = [layer["digest"] for layer in source.manifest("1")["layers"]]
    debug = copy.stderr
    for digest in layers:
        mount = (rf"POST \S+/v2/{re.escape(dst)}/blobs/uploads/\?from=\S+"
                 rf"&mount={re.escape(digest.replace(':', '%3A'))}")
        assert re.search(mount, debug), f"no mount of {digest}:\n{debug[-4000:]}"
        assert f"Skipping blob {digest} (already present)" in debug, debug[-4000:]
        assert f"digest={digest.replace(':', '%3A')}" not in debug, f"{digest} was uploaded"
    assert debug.count("... mount OK") == len(layers), debug[-4000:]

    # Node 1 serves the new name with the same manifest digest and every blob.
    summary = skopeo.inspect_json(f"docker://{address['n1']}/{dst}:1")
    assert summary["Digest"] == source.manifest_digest("1")
    skopeo.copy(f"docker://{address['n1']}/{dst}:1", f"oci:{tmp_path / 'back'}:1")
    back = ImageLayout(tmp_path / "back")
    assert back.manifest_digest("1") == source.manifest_digest("1")
    expected = {source.manifest_digest("1")} | {
        d["digest"] for d in [source.manifest("1")["config"], *source.manifest("1")["layers"]]}
    assert back.blob_digests() == expected
    back.verify_blobs()

    # The multi-chunk image crosses too (mounted or not) and reads back whole.
    skopeo.copy(f"docker://{address['n2']}/{src}:big", f"docker://{address['n3']}/{dst}:big")
    skopeo.copy(f"docker://{address['n1']}/{dst}:big", f"oci:{tmp_path / 'back'}:big")
    big = source.manifest("big")
    for descriptor in [big["config"], *big["layers"]]:
        assert back.blob_path(descriptor["digest"]).read_bytes() == (
            source.blob_path(descriptor["digest"]).read_bytes())
    back.verify_blobs()
