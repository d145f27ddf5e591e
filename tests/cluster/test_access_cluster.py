"""Access control across a cluster of real nodes (auth = token).

Accounts, grants and signing keys are replicated state: what an admin changes
through one node holds on every node at once (a node that misses an account
or a key looks again after a read barrier), a node that was down learns it
when it comes back, and a token any node issued is good on all of them.
Client credentials stay on the node the client talked to: an upload relayed
to the node holding its session carries only the relaying node's signature.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from node.access.passwords import hash_password
from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync, signed_headers
from node.cluster.forward import FORWARDED
from tests.cluster.conftest import Cluster
from tests.conftest import ROOT, NodeProcess, free_port
from tests.secret_scan import SecretsSeen

AUTH = ("--auth", "token")
# The host the node holding upload sessions advertises, where a recording proxy listens
# in front of it: every byte another node sends it passes there.
RECORDED_HOST = "127.0.0.3"


def token_scope(repo: str, actions: str = "pull,push") -> dict[str, str]:
    return {"service": "flotilla", "scope": f"repository:{repo}:{actions}"}


def new_password(secrets_seen: SecretsSeen, name: str) -> str:
    return secrets_seen.add_login(name, "pw-" + secrets.token_urlsafe(18))


def cli(cluster: Cluster, node: str, *args: str, stdin: str | None = None) -> str:
    """`flotilla ARGS --url NODE --secret-file S`, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", *args, "--url", cluster.nodes[node].url,
         "--secret-file", str(cluster.secret_file)],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def admin(cluster: Cluster, node: str, method: str, path: str,
          payload: dict[str, Any] | None = None) -> httpx.Response:
    """One admin API request to `node`, signed with the cluster secret."""
    response = call_sync(cluster.secret, method, f"{cluster.nodes[node].url}/admin/{path}",
                         payload, timeout=30)
    assert response.status_code < 300, response.text
    return response


def get_token(node: NodeProcess, secrets_seen: SecretsSeen, auth: tuple[str, str],
              repo: str, actions: str = "pull,push") -> str:
    response = httpx.get(f"{node.url}/token", params=token_scope(repo, actions), auth=auth,
                         timeout=30)
    assert response.status_code == 200, response.text
    doc = response.json()
    secrets_seen.add(doc.get("refresh_token"))
    return secrets_seen.add(doc["token"])


def granted(token: str, repo: str) -> set[str]:
    """The actions a token lists for `repo` (read without checking it: the nodes do)."""
    body = jwt.decode(token, options={"verify_signature": False})
    return {action for entry in body.get("access", []) if entry.get("name") == repo
            for action in entry["actions"]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def push_blob_with(node: NodeProcess, repo: str, data: bytes, headers: dict[str, str]) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = httpx.post(f"{node.url}/v2/{repo}/blobs/uploads/", params={"digest": digest},
                          content=data, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    return digest


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes with auth = token, shared by the tests that only add accounts."""
    root = tmp_path_factory.mktemp("auth-cluster")
    cluster = Cluster(root, root / "secret", env_extra=list(AUTH))
    load_or_create_secret(cluster.secret_file)
    try:
        yield cluster.start(3)
    finally:
        cluster.stop_all()


def test_a_user_made_through_node_1_logs_in_through_node_3_at_once(
    auth_cluster: Cluster, secrets_seen: SecretsSeen
) -> None:
    cluster = auth_cluster
    password = new_password(secrets_seen, "alice")
    assert "user alice added" in cli(cluster, "n1", "user", "add", "alice", "--password-stdin",
                                     stdin=password + "\n")
    cli(cluster, "n1", "grant", "alice", "writer", "team/*")

    n3 = cluster.nodes["n3"]
    token = get_token(n3, secrets_seen, ("alice", password), "team/app")
    assert granted(token, "team/app") == {"pull", "push"}
    login = httpx.get(f"{n3.url}/v2/", auth=("alice", password), timeout=30)
    assert login.status_code == 200, login.text
    wrong = httpx.get(f"{n3.url}/v2/", auth=("alice", password + "x"), timeout=30)
    assert wrong.status_code == 401
    assert wrong.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_a_robot_made_through_node_1_logs_in_through_node_3_with_its_token_at_once(
    auth_cluster: Cluster, secrets_seen: SecretsSeen
) -> None:
    cluster = auth_cluster
    printed = cli(cluster, "n1", "robot", "add", "ci", "--expires", "1d")
    robot_token = secrets_seen.add_login("ci", printed.strip().splitlines()[-1])
    cli(cluster, "n1", "grant", "ci", "reader", "team/app")

    n3 = cluster.nodes["n3"]
    token = get_token(n3, secrets_seen, ("ci", robot_token), "team/app")
    assert granted(token, "team/app") == {"pull"}, "no wider than its grant"
    login = httpx.get(f"{n3.url}/v2/", auth=("ci", robot_token), timeout=30)
    assert login.status_code == 200, login.text


def test_a_grant_revoked_through_node_2_is_missing_from_the_next_token_on_every_node(
    auth_cluster: Cluster, secrets_seen: SecretsSeen
) -> None:
    cluster = auth_cluster
    password = new_password(secrets_seen, "bob")
    admin(cluster, "n1", "POST", "accounts", {"name": "bob", "password_hash":
                                              hash_password(password)})
    admin(cluster, "n1", "POST", "grants", {"principal": "bob", "role": "writer",
                                            "pattern": "shop/*"})
    admin(cluster, "n1", "POST", "grants", {"principal": "bob", "role": "reader",
                                            "pattern": "shop/base"})
    for node in ("n1", "n3"):
        token = get_token(cluster.nodes[node], secrets_seen, ("bob", password), "shop/base")
        assert granted(token, "shop/base") == {"pull", "push"}

    assert "no longer has a grant" in cli(cluster, "n2", "revoke", "bob", "shop/*")

    for node in ("n1", "n3"):
        token = get_token(cluster.nodes[node], secrets_seen, ("bob", password), "shop/base")
        assert granted(token, "shop/base") == {"pull"}, node
        refused = httpx.post(f"{cluster.nodes[node].url}/v2/shop/base/blobs/uploads/",
                             headers=bearer(token), timeout=30)
        # Its grants do not allow a push either: denied, not a prompt to log in again.
        assert refused.status_code == 403, refused.text
        assert refused.json()["errors"][0]["code"] == "DENIED"


def test_tokens_of_one_node_hold_on_all_and_survive_a_key_rotation_through_another(
    auth_cluster: Cluster, secrets_seen: SecretsSeen
) -> None:
    cluster = auth_cluster
    n1, n2, n3 = (cluster.nodes[n] for n in ("n1", "n2", "n3"))
    password = new_password(secrets_seen, "carol")
    admin(cluster, "n1", "POST", "accounts", {"name": "carol", "password_hash":
                                              hash_password(password), "role": "writer"})
    old = get_token(n1, secrets_seen, ("carol", password), "lab/app")
    old_kid = jwt.get_unverified_header(old)["kid"]
    digest = push_blob_with(n1, "lab/app", os.urandom(4096), bearer(old))
    for node in (n2, n3):
        head = httpx.head(f"{node.url}/v2/lab/app/blobs/{digest}", headers=bearer(old),
                          timeout=30)
        assert head.status_code == 200, node.url

    rotated = cli(cluster, "n2", "keys", "rotate")
    new_kid = rotated.strip().rsplit(" ", 1)[1]
    assert new_kid != old_kid

    for node in (n1, n2, n3):
        head = httpx.head(f"{node.url}/v2/lab/app/blobs/{digest}", headers=bearer(old),
                          timeout=30)
        assert head.status_code == 200, f"the old token on {node.url}"
    for issuer in (n1, n3):
        new = get_token(issuer, secrets_seen, ("carol", password), "lab/app")
        assert jwt.get_unverified_header(new)["kid"] == new_kid
        for node in (n1, n2, n3):
            head = httpx.head(f"{node.url}/v2/lab/app/blobs/{digest}", headers=bearer(new),
                              timeout=30)
            assert head.status_code == 200, f"a new token of {issuer.url} on {node.url}"


class RecordingProxy:
    """A TCP proxy that keeps every byte its clients send on to `upstream`."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(listen)
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def start(self) -> RecordingProxy:
        self._spawn(self._accept)
        return self

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.upstream, timeout=30)
            except OSError:
                return
            self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while piece := source.recv(65536):
                if record:
                    with self._lock:
                        self.sent += piece
                sink.sendall(piece)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture(scope="module")
def recorded_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, RecordingProxy]]:
    """Three nodes with auth = token; n1 (which will hold the upload sessions) is reached
    by its peers through a recording proxy at RECORDED_HOST, its own port."""
    root = tmp_path_factory.mktemp("recorded-cluster")
    cluster = Cluster(root, root / "secret", env_extra=list(AUTH))
    load_or_create_secret(cluster.secret_file)
    ports = {f"n{k}": (free_port(), free_port()) for k in (1, 2, 3)}
    peers = ",".join(f"{n}=127.0.0.1:{raft}" for n, (_, raft) in ports.items())
    for node_id, (http, raft) in ports.items():
        args = cluster.node_args(node_id, raft, peers)
        if node_id == "n1":
            # Raft and the data plane listen on every loopback address, so peers reach
            # them at the advertised host too; HTTP only on 127.0.0.1, behind the proxy.
            args += ["--advertise-host", RECORDED_HOST, "--raft", f"0.0.0.0:{raft}",
                     "--data-listen", f"0.0.0.0:{free_port()}"]
        node = NodeProcess(cluster.root / node_id, http, args)
        node.raft = f"127.0.0.1:{raft}"  # type: ignore[attr-defined]
        cluster.nodes[node_id] = node
    http1 = ports["n1"][0]
    proxy = RecordingProxy((RECORDED_HOST, http1), ("127.0.0.1", http1)).start()
    try:
        for node in cluster.nodes.values():
            node.start()
        cluster.wait_for_leader()
        cluster.wait_for_addresses()
        yield cluster, proxy
    finally:
        cluster.stop_all()
        proxy.close()


def test_an_upload_relayed_to_its_session_node_works_and_no_credential_reaches_that_node(
    recorded_cluster: tuple[Cluster, RecordingProxy], secrets_seen: SecretsSeen
) -> None:
    cluster, proxy = recorded_cluster
    n1, n2, n3 = (cluster.nodes[n] for n in ("n1", "n2", "n3"))
    password = new_password(secrets_seen, "dave")
    admin(cluster, "n1", "POST", "accounts", {"name": "dave", "password_hash":
                                              hash_password(password)})
    admin(cluster, "n1", "POST", "grants", {"principal": "dave", "role": "writer",
                                            "pattern": "team/app"})
    token = get_token(n1, secrets_seen, ("dave", password), "team/app")
    data = os.urandom(300 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    started = httpx.post(f"{n1.url}/v2/team/app/blobs/uploads/", headers=bearer(token),
                         timeout=30)
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    assert "/n1." in location
    patched = httpx.patch(f"{n2.url}{location}", content=data[:100_000], timeout=30,
                          headers={**bearer(token), "Content-Type": "application/octet-stream"})
    assert patched.status_code == 202, patched.text
    assert patched.headers["Range"] == "0-99999"
    finished = httpx.put(f"{n2.url}{patched.headers['Location']}", params={"digest": digest},
                         content=data[100_000:], auth=("dave", password), timeout=30,
                         headers={"Content-Type": "application/octet-stream"})
    assert finished.status_code == 201, finished.text
    pulled = httpx.get(f"{n3.url}/v2/team/app/blobs/{digest}", headers=bearer(token),
                       timeout=30)
    assert pulled.status_code == 200 and pulled.content == data

    with proxy._lock:
        seen_by_n1 = bytes(proxy.sent)
    assert seen_by_n1.lower().count(FORWARDED.lower().encode() + b":") >= 2, \
        "the PATCH and the PUT reached n1 through the proxy"
    carries_authorization = b"\r\nauthorization:" in seen_by_n1.lower()
    assert not carries_authorization, "an Authorization header reached the session's node"
    leaked = [s for s in secrets_seen if s.encode() in seen_by_n1]
    assert leaked == [], "a client credential reached the session's node"

    # Who pushed is recorded by the node the client talked to, not as the relaying peer.
    audit = (cluster.root / "n2" / "audit.log").read_text()
    assert '"action": "push_blob"' in audit and '"name": "dave"' in audit


def test_a_relay_with_a_forged_or_missing_signature_is_refused(
    recorded_cluster: tuple[Cluster, RecordingProxy], secrets_seen: SecretsSeen
) -> None:
    cluster, _ = recorded_cluster
    n1 = cluster.nodes["n1"]
    password = new_password(secrets_seen, "erin")
    admin(cluster, "n1", "POST", "accounts", {"name": "erin", "password_hash":
                                              hash_password(password), "role": "writer"})
    started = httpx.post(f"{n1.url}/v2/team/app/blobs/uploads/", auth=("erin", password),
                         timeout=30)
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    forged_secret = secrets.token_bytes(32)
    secrets_seen.add(forged_secret)
    forgeries = {
        "missing": {FORWARDED: "n2"},
        "forged": {FORWARDED: "n2", **signed_headers(forged_secret, "PATCH",
                                                     f"{n1.url}{location}", node_id="n1")},
    }
    for what, headers in forgeries.items():
        refused = httpx.patch(f"{n1.url}{location}", content=b"x" * 1000, timeout=30,
                              headers={**headers, "Content-Type": "application/octet-stream"})
        assert refused.status_code == 401, (what, refused.text)
        assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    status = httpx.get(f"{n1.url}{location}", auth=("erin", password), timeout=30)
    assert status.status_code == 204, status.text
    assert status.headers.get("Range") in (None, "0-0", "0--1"), "nothing was written"


def test_an_account_made_while_a_node_was_down_logs_in_there_once_it_is_back(
    cluster_factory: Any, secrets_seen: SecretsSeen
) -> None:
    cluster: Cluster = cluster_factory(3, *AUTH)
    n3 = cluster.nodes["n3"]
    n3.stop()
    cluster.wait_for_leader(among=["n1", "n2"])
    password = new_password(secrets_seen, "frank")
    admin(cluster, "n1", "POST", "accounts", {"name": "frank", "password_hash":
                                              hash_password(password), "role": "reader"})
    n3.start()
    token = get_token(n3, secrets_seen, ("frank", password), "team/app", "pull")
    assert granted(token, "team/app") == {"pull"}
    login = httpx.get(f"{n3.url}/v2/", auth=("frank", password), timeout=30)
    assert login.status_code == 200, login.text
