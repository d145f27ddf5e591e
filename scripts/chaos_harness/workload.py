"""The clients: registry traffic through random nodes, every operation recorded.

A few client threads (each a `process` of the history, its operations one
after another) run inside the clients' namespace until told to stop. Each
picks an operation and a node at random:
- a blob push of a mixed size (a few KiB to a few MiB, so some span several
  1 MiB chunks): monolithic in one POST `?digest=`, POST then one PUT, chunked
  (POST, PATCH×n, PUT), or resumed through another node (POST and the first
  PATCH on one node, the rest on another, which relays to the session's owner);
- a manifest push by tag (a fresh config blob, so every manifest and its
  digest is new, plus up to two acknowledged layers): a write of the digest
  to the key `repo:tag`; a PUT of a tag that exists is a tag move;
- a tag delete: a write of None;
- a tag read: GET by tag, value the Docker-Content-Digest (404: None); the
  body must hash to that digest, or it counts as wrong bytes;
- a blob pull of an acknowledged blob, recorded with the digest of the bytes
  received.
Keys are few (`TAGS`), so writes and reads of one tag contend. Outcomes follow
`outcomes`: only the request that commits (the final PUT, the manifest PUT,
the DELETE) decides a write's outcome; a step before it that fails means
nothing was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from scripts.chaos_harness.history import History
from scripts.chaos_harness.netcluster import ChaosCluster, in_client_ns
from scripts.chaos_harness.outcomes import FAIL, OK, read_outcome, write_outcome

REPO = "chaos/app"
TAGS = tuple(f"t{i}" for i in range(8))
KiB, MiB = 1 << 10, 1 << 20
PIECE = 512 * KiB  # PATCH size of chunked uploads
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
TIMEOUT = httpx.Timeout(10.0)


def tag_key(tag: str) -> str:
    return f"{REPO}:{tag}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Tally:
    """What the byte checks of the workload found, beside the history."""

    wrong_manifest_bytes: int = 0
    acked_blob_404: int = 0  # an acknowledged blob answered 404 during the faults
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


@dataclass
class Shared:
    """Acknowledged blobs (digest, size) the clients may reference and pull."""

    blobs: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, digest: str, size: int) -> None:
        with self.lock:
            self.blobs.append((digest, size))

    def pick(self, rng: random.Random, n: int) -> list[tuple[str, int]]:
        with self.lock:
            return rng.sample(self.blobs, min(n, len(self.blobs)))


def blob_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(4 * KiB, 64 * KiB)
    if roll < 0.88:
        return rng.randint(100 * KiB, 900 * KiB)
    return rng.randint(1200 * KiB, 3 * MiB + 512 * KiB)


class Client:
    """One process of the history: one httpx client, one random generator."""

    def __init__(self, process: int, cluster: ChaosCluster, history: History, shared: Shared,
                 tally: Tally, rng: random.Random) -> None:
        self.process = process
        self.urls = {n.node_id: n.url for n in cluster.nodes.values()}
        self.history = history
        self.shared = shared
        self.tally = tally
        self.rng = rng
        self.http = httpx.Client(trust_env=False, timeout=TIMEOUT)

    def node(self) -> str:
        return self.rng.choice(sorted(self.urls))

    def _send(self, method: str, url: str, **kwargs: object) -> tuple[int | None, bool,
                                                                     httpx.Response | None]:
        """(status, sent, response); status None when no answer came."""
        try:
            response = self.http.request(method, url, **kwargs)  # type: ignore[arg-type]
            return response.status_code, True, response
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return None, False, None
        except httpx.HTTPError:
            return None, True, None

    def _session(self, node: str) -> str | None:
        status, _, response = self._send(
            "POST", f"{self.urls[node]}/v2/{REPO}/blobs/uploads/",
            headers={"Content-Length": "0"})
        if status != 202 or response is None:
            return None
        return response.headers.get("Location")

    def _absolute(self, node: str, location: str) -> str:
        return location if location.startswith("http") else self.urls[node] + location

    # -- writes ---------------------------------------------------------------------

    def push_blob(self, data: bytes, mode: str) -> bool:
        """Push `data` one of the four ways; True once acknowledged."""
        digest = sha256(data)
        node = self.node()
        op = self.history.invoke(self.process, "blob_push", digest, digest, node=node)
        status, sent = self._upload(data, digest, mode, node)
        outcome = write_outcome(status, sent)
        if outcome == OK:
            self.history.ok(op, digest)
            self.shared.add(digest, len(data))
            return True
        if outcome == FAIL:
            self.history.fail(op)
        else:
            self.history.unknown(op)
        return False

    def _upload(self, data: bytes, digest: str, mode: str, node: str) -> tuple[int | None, bool]:
        """The status of the request that commits the blob, and whether it was sent."""
        headers = {"Content-Type": "application/octet-stream"}
        if mode == "post":
            status, sent, _ = self._send(
                "POST", f"{self.urls[node]}/v2/{REPO}/blobs/uploads/",
                params={"digest": digest}, content=data, headers=headers)
            return status, sent
        location = self._session(node)
        if location is None:
            return None, False
        if mode == "put":
            status, sent, _ = self._send("PUT", self._absolute(node, location),
                                         params={"digest": digest}, content=data,
                                         headers=headers)
            return status, sent
        pieces = [(i, data[i:i + PIECE]) for i in range(0, len(data), PIECE)]
        other = self.rng.choice([n for n in sorted(self.urls) if n != node]) \
            if mode == "resumed" else node
        via = node
        for index, (start, piece) in enumerate(pieces):
            if index == max(1, len(pieces) // 2):
                via = other  # the rest through another node, relayed to the owner
            status, _, response = self._send(
                "PATCH", self._absolute(via, location), content=piece,
                headers={**headers, "Content-Range": f"{start}-{start + len(piece) - 1}"})
            if status != 202 or response is None:
                return None, False  # the blob cannot be complete without this part
            location = response.headers.get("Location", location)
        if mode == "resumed":
            via = other
        status, sent, _ = self._send("PUT", self._absolute(via, location),
                                     params={"digest": digest}, headers={"Content-Length": "0"})
        return status, sent

    def push_manifest(self) -> None:
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "chaos": os.urandom(8).hex()}).encode()
        if not self.push_blob(config, "post"):
            return
        layers = self.shared.pick(self.rng, self.rng.randint(0, 2))
        body = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": sha256(config),
                       "size": len(config)},
            "layers": [{"mediaType": LAYER_TYPE, "digest": d, "size": s} for d, s in layers],
        }).encode()
        tag, node = self.rng.choice(TAGS), self.node()
        op = self.history.invoke(self.process, "write", tag_key(tag), sha256(body), node=node)
        status, sent, _ = self._send("PUT", f"{self.urls[node]}/v2/{REPO}/manifests/{tag}",
                                     content=body, headers={"Content-Type": MANIFEST_TYPE})
        self._finish_write(op, write_outcome(status, sent))

    def delete_tag(self) -> None:
        tag, node = self.rng.choice(TAGS), self.node()
        op = self.history.invoke(self.process, "write", tag_key(tag), None, node=node)
        status, sent, _ = self._send("DELETE", f"{self.urls[node]}/v2/{REPO}/manifests/{tag}")
        self._finish_write(op, write_outcome(status, sent))

    def _finish_write(self, op: int, outcome: str) -> None:
        if outcome == OK:
            self.history.ok(op)
        elif outcome == FAIL:
            self.history.fail(op)
        else:
            self.history.unknown(op)

    # -- reads ----------------------------------------------------------------------

    def read_tag(self, tag: str, node: str) -> tuple[bool, str | None]:
        """(answered, digest read); the answer is recorded in the history."""
        op = self.history.invoke(self.process, "read", tag_key(tag), None, node=node)
        status, _, response = self._send(
            "GET", f"{self.urls[node]}/v2/{REPO}/manifests/{tag}",
            headers={"Accept": MANIFEST_TYPE})
        if read_outcome(status) != OK or response is None:
            self.history.fail(op)  # no value: dropped by the checker either way
            return False, None
        if status == 404:
            self.history.ok(op, None)
            return True, None
        value = response.headers.get("Docker-Content-Digest")
        if value != sha256(response.content):
            self.tally.add("wrong_manifest_bytes")
        self.history.ok(op, value)
        return True, value

    def pull_blob(self, digest: str, node: str) -> bool:
        """GET `digest` through `node`; True if the bytes hash to it."""
        op = self.history.invoke(self.process, "blob_pull", digest, None, node=node)
        status, _, response = self._send("GET", f"{self.urls[node]}/v2/{REPO}/blobs/{digest}")
        if status != 200 or response is None:
            if status == 404:
                self.tally.add("acked_blob_404")
            self.history.fail(op)
            return False
        got = sha256(response.content)
        self.history.ok(op, got)
        return got == digest

    # -- the mix --------------------------------------------------------------------

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.2:
            mode = self.rng.choice(("post", "put", "chunked", "chunked", "resumed"))
            self.push_blob(os.urandom(blob_size(self.rng)), mode)
        elif roll < 0.45:
            self.push_manifest()
        elif roll < 0.52:
            self.delete_tag()
        elif roll < 0.85:
            self.read_tag(self.rng.choice(TAGS), self.node())
        else:
            picked = self.shared.pick(self.rng, 1)
            if picked:
                self.pull_blob(picked[0][0], self.node())

    def close(self) -> None:
        self.http.close()


def run_clients(count: int, seed: int, cluster: ChaosCluster, history: History,
                shared: Shared, tally: Tally, stop: threading.Event,
                pause: Callable[[random.Random], float] = lambda rng: rng.uniform(0.02, 0.15),
                ) -> list[threading.Thread]:
    """`count` client threads in the clients' namespace, running until `stop` is set."""

    def body(process: int) -> None:
        rng = random.Random(f"{seed}/{process}")
        client = Client(process, cluster, history, shared, tally, rng)
        try:
            while not stop.is_set():
                client.step()
                stop.wait(pause(rng))
        finally:
            client.close()

    threads = [threading.Thread(target=lambda p=p: in_client_ns(lambda: body(p)),
                                name=f"chaos client {p}", daemon=True) for p in range(count)]
    for thread in threads:
        thread.start()
    return threads
