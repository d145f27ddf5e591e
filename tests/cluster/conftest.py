"""Clusters of real `flotilla serve` processes on loopback ports."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync
from node.cluster.data_plane import DataPlaneClient
from node.cluster.errors import PeerError
from tests.conftest import NodeProcess, free_port

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Cluster:
    root: Path
    secret_file: Path
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    env_extra: list[str] = field(default_factory=list)
    scheme: str = "http"  # of every node's URL: "https" when they are given --tls-cert
    verify: Any = True  # what clients check the nodes' certificate against

    @property
    def secret(self) -> bytes:
        return load_or_create_secret(self.secret_file)

    def node_args(self, node_id: str, raft_port: int, peers: str | None) -> list[str]:
        args = ["--node-id", node_id, "--raft", f"127.0.0.1:{raft_port}",
                "--data-listen", f"127.0.0.1:{free_port()}",
                "--secret-file", str(self.secret_file), *self.env_extra]
        if peers:
            args += ["--peers", peers]
        return args

    def start(self, count: int, per_node: dict[str, list[str]] | None = None) -> Cluster:
        ports = {f"n{k}": (free_port(), free_port()) for k in range(1, count + 1)}
        peers = ",".join(f"{n}=127.0.0.1:{raft}" for n, (_, raft) in ports.items())
        for node_id, (http, raft) in ports.items():
            args = self.node_args(node_id, raft, peers) + (per_node or {}).get(node_id, [])
            node = NodeProcess(self.root / node_id, http, args, scheme=self.scheme,
                               verify=self.verify)
            node.raft = f"127.0.0.1:{raft}"  # type: ignore[attr-defined]
            self.nodes[node_id] = node
        for node in self.nodes.values():
            node.start()
        self.wait_for_leader()
        self.wait_for_addresses()
        return self

    def wait_for_addresses(self, timeout: float = 20) -> None:
        """Until every node has registered where it can be reached (placement uses it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = self.status(self.alive()[0])["members"]
            if {m["node_id"] for m in members if m.get("http")} >= set(self.alive()):
                return
            time.sleep(0.1)
        raise AssertionError("members did not register their addresses in time")

    def add_process(self, node_id: str, *, join_via: str | None = None) -> NodeProcess:
        """Start a fresh node that is not (yet) a member: with `--join URL`, or with
        `--peers` naming the current members (not itself), waiting to be added."""
        http, raft = free_port(), free_port()
        if join_via:
            args = [*self.node_args(node_id, raft, None), "--join", join_via]
        else:
            members = ",".join(
                f"{n}={p.raft}" for n, p in self.nodes.items() if p.proc and p.proc.poll() is None
            )
            args = self.node_args(node_id, raft, members)
        node = NodeProcess(self.root / node_id, http, args, scheme=self.scheme,
                           verify=self.verify)
        node.raft = f"127.0.0.1:{raft}"  # type: ignore[attr-defined]
        self.nodes[node_id] = node
        return node.start()

    def status(self, node_id: str) -> dict[str, Any]:
        url = f"{self.nodes[node_id].url}/_cluster/status"
        response = call_sync(self.secret, "GET", url, node_id=node_id, timeout=5)
        response.raise_for_status()
        return response.json()

    def data_address(self, node_id: str) -> str:
        """Where the node's chunk data plane listens, as its health answer says."""
        url = f"{self.nodes[node_id].url}/_cluster/health"
        response = call_sync(self.secret, "GET", url, node_id=node_id, timeout=5)
        response.raise_for_status()
        return response.json()["data"]

    def place_chunk(self, node_id: str, cid: str, data: bytes) -> None:
        """Store a chunk on the node over its data plane, as a peer placing it would;
        PeerError when the node refuses it."""
        address = self.data_address(node_id)
        refused: list[PeerError] = []

        async def put() -> None:
            client = DataPlaneClient("test", self.secret)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                try:
                    await client.put(address, cid, data)
                except PeerError as exc:  # raised here, not wrapped in the nursery's group
                    refused.append(exc)
                finally:
                    nursery.cancel_scope.cancel()

        trio.run(put)
        if refused:
            raise refused[0]

    def alive(self) -> list[str]:
        return [n for n, p in self.nodes.items() if p.proc and p.proc.poll() is None]

    def wait_for_leader(
        self, among: list[str] | None = None, timeout: float = 20, not_: str | None = None
    ) -> str:
        """The leader all live nodes (or `among`) agree on (other than `not_`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                leaders = {self.status(n)["leader"] for n in (among or self.alive())}
            except httpx.HTTPError:
                leaders = set()
            if len(leaders) == 1 and None not in leaders and not_ not in leaders:
                return leaders.pop()
            time.sleep(0.1)
        raise AssertionError("no agreed leader in time")

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(
        count: int = 3, *extra: str, per_node: dict[str, list[str]] | None = None
    ) -> Cluster:
        cluster = Cluster(tmp_path, tmp_path / "secret", env_extra=list(extra))
        load_or_create_secret(cluster.secret_file)
        made.append(cluster)
        return cluster.start(count, per_node)

    yield make
    for cluster in made:
        cluster.stop_all()


def push_blob(url: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = httpx.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest},
                          content=data, timeout=30)
    assert response.status_code == 201, response.text
    return digest


def image_manifest(config: str, config_size: int, layers: list[tuple[str, int]]) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                    "size": s} for d, s in layers],
    }).encode()


def put_manifest(url: str, repo: str, tag: str, body: bytes, timeout: float = 30) -> httpx.Response:
    return httpx.put(f"{url}/v2/{repo}/manifests/{tag}", content=body,
                     headers={"Content-Type": MANIFEST_TYPE}, timeout=timeout)
