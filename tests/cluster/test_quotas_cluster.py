"""Quotas on a 3-node cluster: set with `flotilla quota`, enforced whichever node a push
arrives through, and shown by `flotilla quota list` on every node."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx

from tests.cluster.conftest import Cluster, image_manifest, push_blob, put_manifest
from tests.conftest import ROOT

KIB = 1024


def cli(cluster: Cluster, node: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """`flotilla ARGS --url NODE --secret-file S`, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", *args, "--url", cluster.nodes[node].url,
         "--secret-file", str(cluster.secret_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_quota_refusal(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == "DENIED"
    assert error["message"].startswith("quota team:") and "used" in error["message"]


def test_quota_holds_for_every_way_a_push_arrives_through_any_node(cluster_factory) -> None:
    cluster: Cluster = cluster_factory(3)
    url = {n: p.url for n, p in cluster.nodes.items()}
    out = cli(cluster, "n1", "quota", "set", "team", "--bytes", "100KiB", "--repos", "2").stdout
    assert out.strip() == "team: 0 B of 100.0 KiB, 0 of 2 repositories"

    layer = os.urandom(60 * KIB)
    push_blob(url["n1"], "team/app", layer)
    config = json.dumps({"os": "linux"}).encode()
    push_blob(url["n2"], "team/app", config)
    manifest = image_manifest(digest_of(config), len(config), [(digest_of(layer), len(layer))])
    assert put_manifest(url["n3"], "team/app", "v1", manifest).status_code == 201

    big = os.urandom(60 * KIB)
    # Monolithic, through a follower.
    assert_quota_refusal(httpx.post(f"{url['n2']}/v2/team/app/blobs/uploads/",
                                    params={"digest": digest_of(big)}, content=big))
    # POST on one node, the closing PUT (with the bytes) through another.
    started = httpx.post(f"{url['n3']}/v2/team/app/blobs/uploads/")
    assert started.status_code == 202, started.text
    assert_quota_refusal(httpx.put(url["n1"] + started.headers["Location"],
                                   params={"digest": digest_of(big)}, content=big))
    # Chunked PATCHes relayed to the session's node.
    started = httpx.post(f"{url['n1']}/v2/team/app/blobs/uploads/")
    assert_quota_refusal(httpx.patch(url["n2"] + started.headers["Location"], content=big,
                                     headers={"Content-Range": f"0-{len(big) - 1}"}))
    # A mount from another namespace.
    source = push_blob(url["n3"], "other/app", big)
    assert_quota_refusal(httpx.post(f"{url['n2']}/v2/team/app/blobs/uploads/",
                                    params={"mount": source, "from": "other/app"}))
    # A second repository fits the repository cap; a blob it shares with the first is free.
    mounted = httpx.post(f"{url['n3']}/v2/team/web/blobs/uploads/",
                         params={"mount": digest_of(layer), "from": "team/app"})
    assert mounted.status_code == 201, mounted.text
    # A manifest, by tag and by digest, that would pass the quota.
    padded = json.loads(manifest)
    padded["annotations"] = {"pad": "x" * (40 * KIB)}
    body = json.dumps(padded).encode()
    assert_quota_refusal(put_manifest(url["n1"], "team/app", "v2", body))
    assert_quota_refusal(put_manifest(url["n2"], "team/app", digest_of(body), body))
    # A third repository passes the repository cap.
    assert_quota_refusal(httpx.post(f"{url['n1']}/v2/team/third/blobs/uploads/",
                                    params={"digest": digest_of(b"x")}, content=b"x"))

    # What was stored before is intact, on every node.
    for node in url.values():
        pulled = httpx.get(f"{node}/v2/team/app/manifests/v1",
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert pulled.content == manifest
        assert httpx.get(f"{node}/v2/team/app/blobs/{digest_of(layer)}").content == layer
        assert httpx.get(f"{node}/v2/team/app/manifests/v2").status_code == 404
    used = 60 * KIB + len(config) + len(manifest)
    for node in cluster.nodes:
        listed = json.loads(cli(cluster, node, "quota", "list", "--json").stdout)["quotas"]
        assert listed == [{"pattern": "team", "max_bytes": 100 * KIB, "max_repos": 2,
                           "used_bytes": used, "used_repos": 2}]
    assert "team: " in cli(cluster, "n2", "quota", "list").stdout

    refused = cli(cluster, "n3", "quota", "remove", "nobody", ok=False)
    assert refused.returncode == 1 and "404" in refused.stderr
    assert "quota on team removed" in cli(cluster, "n3", "quota", "remove", "team").stdout
    push_blob(url["n2"], "team/app", big)
    assert json.loads(cli(cluster, "n1", "quota", "list", "--json").stdout) == {"quotas": []}
