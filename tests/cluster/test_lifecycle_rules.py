"""Retention policies and immutable tags across three real nodes, driven by the CLI.

A rule set through one node holds on every node; an immutable tag cannot be
moved through any node, however the pushes race; `flotilla policy apply`
through one node leaves all three with the same tags; and a maintainer
manages the rules of its own namespace only.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import trio

from node.access.passwords import hash_password
from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync
from tests.cluster.conftest import MANIFEST_TYPE, Cluster, image_manifest
from tests.conftest import ROOT

PASSWORD = "lifecycle-admin-pw"
MAINTAINER_PASSWORD = "lifecycle-maint-pw"


def cli(cluster: Cluster, node: str, *args: str, ok: bool = True,
        auth: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`flotilla ARGS --url NODE` with the cluster secret, or as an account."""
    who = ["--secret-file", str(cluster.secret_file)]
    if auth is not None:
        password_file = cluster.root / f"{auth[0]}.pw"
        password_file.write_text(auth[1])
        who = ["--as", auth[0], "--as-password-file", str(password_file)]
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", *args, "--url", cluster.nodes[node].url, *who],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def admin(cluster: Cluster, method: str, path: str, payload: dict | None = None) -> None:
    response = call_sync(cluster.secret, method, f"{cluster.nodes['n1'].url}/admin/{path}",
                         payload, timeout=30)
    assert response.status_code < 300, response.text


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("lifecycle")
    made = Cluster(root, root / "secret", env_extra=["--auth", "basic"])
    load_or_create_secret(made.secret_file)
    try:
        made.start(3)
        admin(made, "POST", "accounts", {"name": "root", "password_hash":
                                         hash_password(PASSWORD), "role": "admin"})
        admin(made, "POST", "accounts", {"name": "mia", "password_hash":
                                         hash_password(MAINTAINER_PASSWORD)})
        admin(made, "POST", "grants", {"principal": "mia", "role": "maintainer",
                                       "pattern": "team/*"})
        yield made
    finally:
        made.stop_all()


AUTH = ("root", PASSWORD)


def push_image(url: str, repo: str, seed: str) -> bytes:
    """Blobs of an image and its manifest body (not yet pushed)."""
    config = json.dumps({"seed": seed}).encode()
    layer = f"layer {seed}".encode()
    for data in (config, layer):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = httpx.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest},
                              content=data, auth=AUTH, timeout=30)
        assert response.status_code == 201, response.text
    return image_manifest("sha256:" + hashlib.sha256(config).hexdigest(), len(config),
                          [("sha256:" + hashlib.sha256(layer).hexdigest(), len(layer))])


def put(url: str, repo: str, reference: str, body: bytes) -> httpx.Response:
    return httpx.put(f"{url}/v2/{repo}/manifests/{reference}", content=body, auth=AUTH,
                     headers={"Content-Type": MANIFEST_TYPE}, timeout=30)


def tags(url: str, repo: str) -> list[str]:
    response = httpx.get(f"{url}/v2/{repo}/tags/list", auth=AUTH, timeout=30)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return response.json()["tags"] or []


def test_an_immutable_tag_set_through_one_node_holds_through_every_node(
    cluster: Cluster,
) -> None:
    out = cli(cluster, "n1", "tags", "immutable", "set", "prod/*", "--except", "^latest$")
    assert "tags of prod/* are immutable except ^latest$" in out.stdout
    assert "prod/*" in cli(cluster, "n3", "tags", "immutable", "list").stdout
    urls = {n: cluster.nodes[n].url for n in ("n1", "n2", "n3")}
    first = push_image(urls["n1"], "prod/app", "a")
    assert put(urls["n1"], "prod/app", "1.0", first).status_code == 201
    second = push_image(urls["n2"], "prod/app", "b")
    for node, url in urls.items():
        by_tag = put(url, "prod/app", "1.0", second)
        assert by_tag.status_code == 403, (node, by_tag.text)
        assert "prod/*" in by_tag.json()["errors"][0]["message"]
        assert put(url, "prod/app", "1.0", first).status_code == 201  # the same digest
        assert put(url, "prod/app", "latest", second if node != "n2" else first).status_code \
            == 201
    digest = "sha256:" + hashlib.sha256(first).hexdigest()
    for url in urls.values():
        got = httpx.get(f"{url}/v2/prod/app/manifests/1.0", auth=AUTH, timeout=30)
        assert got.headers["Docker-Content-Digest"] == digest


async def test_two_pushes_racing_for_a_new_immutable_tag_through_two_nodes_one_wins(
    cluster: Cluster,
) -> None:
    cli(cluster, "n1", "tags", "immutable", "set", "race/app")
    n1, n2 = cluster.nodes["n1"].url, cluster.nodes["n2"].url
    bodies = {n1: push_image(n1, "race/app", "r1"), n2: push_image(n2, "race/app", "r2")}
    for round_ in range(5):
        tag = f"t{round_}"
        statuses: dict[str, int] = {}

        async def push(url: str, tag: str = tag, statuses: dict[str, int] = statuses) -> None:
            async with httpx.AsyncClient(auth=AUTH, timeout=30) as client:
                response = await client.put(f"{url}/v2/race/app/manifests/{tag}",
                                            content=bodies[url],
                                            headers={"Content-Type": MANIFEST_TYPE})
                statuses[url] = response.status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(push, n1)
            nursery.start_soon(push, n2)
        assert sorted(statuses.values()) == [201, 403], statuses
        winner = next(u for u, s in statuses.items() if s == 201)
        expected = "sha256:" + hashlib.sha256(bodies[winner]).hexdigest()
        for node in cluster.nodes.values():
            got = httpx.get(f"{node.url}/v2/race/app/manifests/{tag}", auth=AUTH, timeout=30)
            assert got.headers["Docker-Content-Digest"] == expected


def test_a_policy_applied_through_one_node_leaves_every_node_the_same_tags(
    cluster: Cluster,
) -> None:
    n1 = cluster.nodes["n1"].url
    for i in range(6):
        body = push_image(n1, "team/svc", f"s{i}")
        assert put(cluster.nodes[f"n{1 + i % 3}"].url, "team/svc", f"build-{i}",
                   body).status_code == 201
    assert put(n1, "team/svc", "v1.2.3", push_image(n1, "team/svc", "rel")).status_code == 201
    out = cli(cluster, "n2", "policy", "set", "team/*", "--keep-last", "2",
              "--keep", r"^v\d+\.\d+\.\d+$", "--untagged-older-than", "30d")
    assert "team/*: keep last 2; untagged older than 30d; always keep" in out.stdout
    assert "team/*" in cli(cluster, "n3", "policy", "list").stdout
    test = cli(cluster, "n3", "policy", "test", "team/*").stdout
    assert "4 tags, 0 untagged manifests" in test
    assert len(tags(n1, "team/svc")) == 7  # a test deletes nothing

    applied = cli(cluster, "n1", "policy", "apply", "--json").stdout
    deleted = sorted(t["tag"] for t in json.loads(applied)["tags"])
    assert deleted == sorted(line.split(":", 1)[1] for line in test.splitlines()
                             if line.startswith("tag "))
    left = [tags(node.url, "team/svc") for node in cluster.nodes.values()]
    assert left[0] == left[1] == left[2]
    assert "v1.2.3" in left[0] and len(left[0]) == 3
    audit = (cluster.nodes["n1"].data / "audit.log").read_text()
    assert all(f'"tag": "{t}"' in audit for t in deleted)
    cli(cluster, "n1", "policy", "remove", "team/*")
    assert "team/*" not in cli(cluster, "n2", "policy", "list").stdout


def test_a_maintainer_manages_the_rules_of_its_namespace_only(cluster: Cluster) -> None:
    mia = ("mia", MAINTAINER_PASSWORD)
    cli(cluster, "n2", "policy", "set", "team/web", "--keep-last", "5", auth=mia)
    cli(cluster, "n2", "tags", "immutable", "set", "team/*", auth=mia)
    listed = cli(cluster, "n1", "policy", "list", auth=mia).stdout
    assert "team/web" in listed
    for args in (("policy", "set", "*", "--keep-last", "1"),
                 ("policy", "set", "other/app", "--keep-last", "1"),
                 ("tags", "immutable", "remove", "prod/*"),
                 ("policy", "apply")):
        refused = cli(cluster, "n3", *args, auth=mia, ok=False)
        assert refused.returncode == 1 and "403" in refused.stderr, refused.stderr
    assert "prod/*" in cli(cluster, "n1", "tags", "immutable", "list").stdout
    assert "prod/*" not in cli(cluster, "n1", "tags", "immutable", "list", auth=mia).stdout
    cli(cluster, "n1", "tags", "immutable", "remove", "team/*", auth=mia)
    cli(cluster, "n1", "policy", "remove", "team/web", auth=mia)
