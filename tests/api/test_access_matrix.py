"""The authorization matrix: every /v2/ endpoint × every kind of caller × a public and a
private repository, each cell its own test, asserting the status, the error code and, on
a 401, the challenge a client follows.

One node per mode serves every cell (tests/api/node_in_thread.py). `library/base` is
public; `team/app` and `team/other` are private; each holds a pushed config, layer and
manifest tagged `1`, pushed by the admin. Callers: anonymous (no credentials), an
anonymous token, a reader, writer, maintainer and admin (their role on `*`), a robot that
is writer on `team/app` only (its private repository is `team/other`), and tokens that
must not work: expired, for another repository, signed by another key, for another
service. Token callers ask `/token` for everything on all three repositories, as a
client that wants the most would, and get what their grants allow.

What a cell expects follows the rules as a user meets them: the action the endpoint
needs (pull, push, delete) is allowed, or anonymous gets 401 with a challenge naming the
scope, a Basic account gets 403 DENIED, a token lacking the action gets 401
insufficient_scope when the account's grants would allow it and 403 DENIED when they
would not, and a token that is not valid gets 401 invalid_token.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from consensus.commands import PutAccount, PutGrant, SetPublic
from node.access.passwords import hash_password, hash_robot_token, new_robot_token
from node.access.tokens import ACCESS, SigningKeyView, TokenClaims, issue, new_signing_key
from tests.api.content import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    assert_envelope,
    descriptor,
    digest_of,
    make_manifest,
)
from tests.api.node_in_thread import NodeInThread

PUBLIC, PRIVATE, OTHER = "library/base", "team/app", "team/other"
REPOS = (PUBLIC, PRIVATE, OTHER)
PULL, PUSH, DELETE = "pull", "push", "delete"
ROLES = {
    "reader": {PULL},
    "writer": {PULL, PUSH},
    "maintainer": {PULL, PUSH, DELETE},
    "admin": {PULL, PUSH, DELETE},
}
PASSWORD = "correct horse battery staple"
CHALLENGE_ACTIONS = {PULL: "pull", PUSH: "pull,push", DELETE: "delete"}


def basic(name: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- callers ------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """One column of the matrix: how it authenticates and what it may do by its grants."""

    name: str
    credentials: str  # "none", "basic" or "bearer"
    grants: Callable[[str], set[str]] = lambda repo: set()  # actions by grants (+ public)
    token: Callable[[str], set[str]] | None = None  # actions its token lists, per repo
    account: bool = False
    valid: bool = True
    private_repo: str = PRIVATE


def _public_pull(repo: str) -> set[str]:
    return {PULL} if repo == PUBLIC else set()


def _role(role: str) -> Callable[[str], set[str]]:
    return lambda repo: set(ROLES[role])


def _robot(repo: str) -> set[str]:
    return {PULL, PUSH} if repo == PRIVATE else _public_pull(repo)


ACCOUNT_ROLES = ("reader", "writer", "maintainer", "admin")
ANONYMOUS = Caller("anonymous", "none", _public_pull)
BASIC_CALLERS = [
    ANONYMOUS,
    *(Caller(role, "basic", _role(role), account=True) for role in ACCOUNT_ROLES),
    Caller("robot", "basic", _robot, account=True, private_repo=OTHER),
]
TOKEN_CALLERS = [
    ANONYMOUS,
    Caller("anonymous-token", "bearer", _public_pull, token=_public_pull),
    *(Caller(role, "bearer", _role(role), token=_role(role), account=True)
      for role in ACCOUNT_ROLES),
    Caller("robot", "bearer", _robot, token=_robot, account=True, private_repo=OTHER),
    Caller("token-for-another-repository", "bearer", _role("admin"), token=lambda repo: set(),
           account=True),
    Caller("expired-token", "bearer", valid=False),
    Caller("token-signed-by-another-key", "bearer", valid=False),
    Caller("token-for-another-service", "bearer", valid=False),
]


# -- the shared nodes ---------------------------------------------------------


@dataclass
class Image:
    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def image(seed: str, annotations: dict[str, str] | None = None) -> Image:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = hashlib.sha256(seed.encode()).digest() * 4
    manifest = make_manifest(descriptor(config, OCI_CONFIG), [descriptor(layer, OCI_LAYER)],
                             annotations=annotations)
    return Image(config, layer, manifest)


@dataclass
class Matrix:
    node: NodeInThread
    mode: str
    admin: httpx.Client  # the admin over Basic: every cell's own setup
    client: httpx.Client  # the cells' requests, with the caller's headers each
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # caller → headers
    images: dict[str, Image] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def realm(self) -> str:
        return f"{self.node.url}/token"

    def unique(self) -> str:
        return f"c{next(self.counter)}"

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        response = self.admin.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                                   content=data)
        assert response.status_code == 201, response.text
        return digest

    def push_manifest(self, repo: str, reference: str, body: bytes) -> None:
        response = self.admin.put(f"/v2/{repo}/manifests/{reference}", content=body,
                                  headers={"Content-Type": OCI_MANIFEST})
        assert response.status_code == 201, response.text

    def open_upload(self, repo: str) -> str:
        response = self.admin.post(f"/v2/{repo}/blobs/uploads/")
        assert response.status_code == 202, response.text
        return response.headers["Location"]


def _start_matrix(mode: str) -> tuple[NodeInThread, Matrix]:
    node = NodeInThread(auth=mode, max_upload_sessions=5000,
                        max_upload_sessions_per_repo=2000).start()
    secret = hash_password(PASSWORD)
    for role in ACCOUNT_ROLES:
        node.propose(PutAccount(name=role, secret_hash=secret))
        node.propose(PutGrant(principal=role, role=role, pattern="*"))
    robot_token = new_robot_token()
    node.propose(PutAccount(name="robot", robot=True, secret_hash=hash_robot_token(robot_token)))
    node.propose(PutGrant(principal="robot", role="writer", pattern=PRIVATE))
    node.propose(SetPublic(pattern="library/*"))
    matrix = Matrix(node, mode, node.client(headers=basic("admin", PASSWORD)), node.client())
    for repo in REPOS:
        pushed = image(repo)
        matrix.push_blob(repo, pushed.config)
        matrix.push_blob(repo, pushed.layer)
        matrix.push_manifest(repo, "1", pushed.manifest)
        matrix.images[repo] = pushed
    secrets = {role: PASSWORD for role in ACCOUNT_ROLES} | {"robot": robot_token}
    for name, secret in secrets.items():
        matrix.headers[f"basic:{name}"] = basic(name, secret)
    matrix.headers["none:anonymous"] = {}
    if mode == "token":
        _mint_tokens(matrix, secrets)
    return node, matrix


def _token(matrix: Matrix, scopes: list[str], headers: dict[str, str]) -> str:
    with matrix.node.client() as client:
        response = client.get("/token", params={"service": "flotilla", "scope": scopes},
                              headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def _mint_tokens(matrix: Matrix, secrets: dict[str, str]) -> None:
    everything = [f"repository:{repo}:pull,push,delete" for repo in REPOS]
    everything.append("registry:catalog:*")
    matrix.headers["bearer:anonymous-token"] = bearer(_token(matrix, everything, {}))
    for name, secret in secrets.items():
        matrix.headers[f"bearer:{name}"] = bearer(_token(matrix, everything, basic(name, secret)))
    matrix.headers["bearer:token-for-another-repository"] = bearer(_token(
        matrix, ["repository:elsewhere/thing:pull,push,delete"], basic("admin", PASSWORD)
    ))
    # The cells that must fail: everything on every repository, but not valid here.
    now = int(time.time())
    access = {repo: frozenset(ROLES["admin"]) for repo in REPOS}
    gate = matrix.node.node.services.gate  # type: ignore[union-attr]
    key = matrix.node.call(lambda: gate.view().current_key)
    stranger = SigningKeyView.load(*new_signing_key(), None)
    fresh = TokenClaims(ACCESS, "admin", now + 300, now, access)
    expired = TokenClaims(ACCESS, "admin", now - 60, now - 360, access)
    matrix.headers["bearer:expired-token"] = bearer(issue(key, expired, service="flotilla"))
    matrix.headers["bearer:token-signed-by-another-key"] = bearer(
        issue(stranger, fresh, service="flotilla"))
    matrix.headers["bearer:token-for-another-service"] = bearer(
        issue(key, fresh, service="elsewhere"))


@pytest.fixture(scope="module")
def token_matrix() -> Iterator[Matrix]:
    node, matrix = _start_matrix("token")
    yield matrix
    matrix.admin.close()
    matrix.client.close()
    node.stop()


@pytest.fixture(scope="module")
def basic_matrix() -> Iterator[Matrix]:
    node, matrix = _start_matrix("basic")
    yield matrix
    matrix.admin.close()
    matrix.client.close()
    node.stop()


# -- endpoints ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One row: the action it needs, what it answers when allowed, and how to call it
    (with whatever setup the admin does first, so every cell finds what it acts on)."""

    name: str
    action: str
    success: int
    send: Callable[[Matrix, str, dict[str, str]], httpx.Response]
    head: bool = False


def _mount_source(repo: str) -> str:
    return PRIVATE if repo == OTHER else OTHER


def _blob_get(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.get(f"/v2/{repo}/blobs/{digest_of(m.images[repo].layer)}", headers=h)


def _blob_head(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.head(f"/v2/{repo}/blobs/{digest_of(m.images[repo].layer)}",
                                headers=h)


def _blob_delete(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    digest = m.push_blob(repo, m.unique().encode() * 10)
    return m.client.delete(f"/v2/{repo}/blobs/{digest}", headers=h)


def _upload_start(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.post(f"/v2/{repo}/blobs/uploads/", headers=h)


def _upload_patch(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.patch(m.open_upload(repo), content=b"some bytes", headers=h)


def _upload_put(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    data = m.unique().encode() * 10
    return m.client.put(m.open_upload(repo), params={"digest": digest_of(data)},
                               content=data, headers=h)


def _upload_status(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.get(m.open_upload(repo), headers=h)


def _upload_cancel(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.delete(m.open_upload(repo), headers=h)


def _monolithic(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    data = m.unique().encode() * 10
    return m.client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)},
                                content=data, headers=h)


def _mount(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    source = _mount_source(repo)
    digest = m.push_blob(source, m.unique().encode() * 10)
    return m.client.post(f"/v2/{repo}/blobs/uploads/",
                                params={"mount": digest, "from": source}, headers=h)


def _manifest(method: str, by_digest: bool) -> Callable[..., httpx.Response]:
    def send(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
        reference = m.images[repo].digest if by_digest else "1"
        return m.client.request(method, f"/v2/{repo}/manifests/{reference}",
                                       headers=h | {"Accept": OCI_MANIFEST})
    return send


def _manifest_put_tag(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.put(f"/v2/{repo}/manifests/{m.unique()}",
                               content=m.images[repo].manifest,
                               headers=h | {"Content-Type": OCI_MANIFEST})


def _manifest_put_digest(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    pushed = m.images[repo]
    return m.client.put(f"/v2/{repo}/manifests/{pushed.digest}", content=pushed.manifest,
                               headers=h | {"Content-Type": OCI_MANIFEST})


def _manifest_delete_tag(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    tag = m.unique()
    m.push_manifest(repo, tag, m.images[repo].manifest)
    return m.client.delete(f"/v2/{repo}/manifests/{tag}", headers=h)


def _manifest_delete_digest(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    own = image(repo, annotations={"cell": m.unique()})
    m.push_manifest(repo, own.digest, own.manifest)
    return m.client.delete(f"/v2/{repo}/manifests/{own.digest}", headers=h)


def _tags_list(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.get(f"/v2/{repo}/tags/list", headers=h)


def _referrers(m: Matrix, repo: str, h: dict[str, str]) -> httpx.Response:
    return m.client.get(f"/v2/{repo}/referrers/{m.images[repo].digest}", headers=h)


ENDPOINTS = [
    Endpoint("blob-get", PULL, 200, _blob_get),
    Endpoint("blob-head", PULL, 200, _blob_head, head=True),
    Endpoint("blob-delete", DELETE, 202, _blob_delete),
    Endpoint("upload-start", PUSH, 202, _upload_start),
    Endpoint("upload-patch", PUSH, 202, _upload_patch),
    Endpoint("upload-put", PUSH, 201, _upload_put),
    Endpoint("upload-status", PUSH, 204, _upload_status),
    Endpoint("upload-cancel", PUSH, 204, _upload_cancel),
    Endpoint("monolithic-post", PUSH, 201, _monolithic),
    Endpoint("mount-from", PUSH, 201, _mount),
    Endpoint("manifest-get-by-tag", PULL, 200, _manifest("GET", False)),
    Endpoint("manifest-get-by-digest", PULL, 200, _manifest("GET", True)),
    Endpoint("manifest-head-by-tag", PULL, 200, _manifest("HEAD", False), head=True),
    Endpoint("manifest-head-by-digest", PULL, 200, _manifest("HEAD", True), head=True),
    Endpoint("manifest-put-by-tag", PUSH, 201, _manifest_put_tag),
    Endpoint("manifest-put-by-digest", PUSH, 201, _manifest_put_digest),
    Endpoint("manifest-delete-by-tag", DELETE, 202, _manifest_delete_tag),
    Endpoint("manifest-delete-by-digest", DELETE, 202, _manifest_delete_digest),
    Endpoint("tags-list", PULL, 200, _tags_list),
    Endpoint("referrers", PULL, 200, _referrers),
]


# -- what a cell expects ------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    status: int
    code: str | None = None  # the OCI error code, on a refusal
    challenge: dict[str, str] | None = None  # the Bearer parameters a 401 must carry


def expected(mode: str, caller: Caller, endpoint: Endpoint, repo: str) -> Expected:
    action = endpoint.action
    scope = f"repository:{repo}:{CHALLENGE_ACTIONS[action]}"
    if not caller.valid:
        return Expected(401, "UNAUTHORIZED", {"error": "invalid_token"})
    if caller.token is not None:  # a bearer token: it lists what it allows
        if action in caller.token(repo):
            return _success(caller, endpoint, repo)
        if caller.account and action in caller.grants(repo):
            return Expected(401, "UNAUTHORIZED", {"scope": scope, "error": "insufficient_scope"})
        if caller.account:
            return Expected(403, "DENIED")
        return Expected(401, "UNAUTHORIZED", {"scope": scope, "error": "insufficient_scope"})
    if action in caller.grants(repo):
        return _success(caller, endpoint, repo)
    if caller.account:
        return Expected(403, "DENIED")
    return Expected(401, "UNAUTHORIZED", {"scope": scope} if mode == "token" else {})


def _success(caller: Caller, endpoint: Endpoint, repo: str) -> Expected:
    if endpoint.name == "mount-from":
        source = _mount_source(repo)
        may_pull_source = PULL in (caller.token or caller.grants)(source)
        # Without pull on the source the mount is a plain upload: nothing is revealed.
        return Expected(201 if may_pull_source else 202)
    return Expected(endpoint.success)


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = value.partition(" ")
    params = {}
    for part in rest.split('",'):
        key, _, val = part.partition("=")
        params[key.strip()] = val.strip().strip('"')
    return scheme, params


def check(m: Matrix, response: httpx.Response, want: Expected, *, head: bool = False) -> None:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == want.status, (where, response.status_code, response.text[:300])
    if want.code is not None and not head:
        assert_envelope(response)
        assert [e["code"] for e in response.json()["errors"]] == [want.code], response.text
    if want.status != 401:
        assert "WWW-Authenticate" not in response.headers
        return
    scheme, params = parse_challenge(response.headers["WWW-Authenticate"])
    if m.mode == "basic":
        assert (scheme, params) == ("Basic", {"realm": "flotilla"})
        return
    assert scheme == "Bearer"
    assert params.pop("realm") == m.realm
    assert params.pop("service") == "flotilla"
    assert params == (want.challenge or {})


def _cells(callers: list[Caller]) -> list[pytest.param]:
    cells = []
    for endpoint in ENDPOINTS:
        for caller in callers:
            for visibility in ("public", "private"):
                cells.append(pytest.param(endpoint, caller, visibility,
                                          id=f"{endpoint.name}-{caller.name}-{visibility}"))
    return cells


def _run_cell(m: Matrix, key: str, endpoint: Endpoint, caller: Caller, visibility: str) -> None:
    repo = PUBLIC if visibility == "public" else caller.private_repo
    response = endpoint.send(m, repo, m.headers[key])
    check(m, response, expected(m.mode, caller, endpoint, repo), head=endpoint.head)
    if response.status_code != 200 or endpoint.head:
        return
    # What the allowed reads hand over is the repository's own content.
    if endpoint.name == "blob-get":
        assert response.content == m.images[repo].layer
    elif endpoint.name.startswith("manifest-get"):
        assert response.content == m.images[repo].manifest
    elif endpoint.name == "tags-list":
        assert response.json()["name"] == repo and "1" in response.json()["tags"]
    elif endpoint.name == "referrers":
        assert response.json()["manifests"] == []


@pytest.mark.parametrize(("endpoint", "caller", "visibility"), _cells(TOKEN_CALLERS))
def test_token_mode_with_bearer_tokens(token_matrix: Matrix, endpoint: Endpoint,
                                       caller: Caller, visibility: str) -> None:
    _run_cell(token_matrix, f"{caller.credentials}:{caller.name}", endpoint, caller, visibility)


@pytest.mark.parametrize(("endpoint", "caller", "visibility"), _cells(BASIC_CALLERS))
def test_token_mode_with_basic_credentials(token_matrix: Matrix, endpoint: Endpoint,
                                           caller: Caller, visibility: str) -> None:
    _run_cell(token_matrix, f"{caller.credentials}:{caller.name}", endpoint, caller, visibility)


@pytest.mark.parametrize(("endpoint", "caller", "visibility"), _cells(BASIC_CALLERS))
def test_basic_mode(basic_matrix: Matrix, endpoint: Endpoint, caller: Caller,
                    visibility: str) -> None:
    _run_cell(basic_matrix, f"{caller.credentials}:{caller.name}", endpoint, caller, visibility)


# -- /v2/ and the catalog: no repository, so no public/private column ---------


def _catalog_sees(caller: Caller) -> list[str]:
    return [repo for repo in REPOS if PULL in caller.grants(repo)]


def _base_and_catalog(m: Matrix, caller: Caller) -> None:
    headers = m.headers[f"{caller.credentials}:{caller.name}"]
    base = m.client.get("/v2/", headers=headers)
    listing = m.client.get("/v2/_catalog", headers=headers)
    if not caller.valid:
        want = Expected(401, "UNAUTHORIZED", {"error": "invalid_token"})
        check(m, base, want)
        check(m, listing, want)
        return
    if caller.credentials == "none" and m.mode in ("token", "basic"):
        check(m, base, Expected(401, "UNAUTHORIZED", {}))  # `docker login` needs a credential
    else:
        check(m, base, Expected(200))
        assert base.json() == {}
    if caller.name == "token-for-another-repository":  # its scopes do not name the catalog
        check(m, listing, Expected(401, "UNAUTHORIZED", {
            "scope": "registry:catalog:*", "error": "insufficient_scope"}))
        return
    check(m, listing, Expected(200))
    assert listing.json()["repositories"] == sorted(_catalog_sees(caller))


@pytest.mark.parametrize("caller", TOKEN_CALLERS, ids=lambda c: c.name)
def test_base_and_catalog_token_mode_with_bearer_tokens(token_matrix: Matrix,
                                                        caller: Caller) -> None:
    _base_and_catalog(token_matrix, caller)


@pytest.mark.parametrize("caller", BASIC_CALLERS, ids=lambda c: c.name)
def test_base_and_catalog_token_mode_with_basic_credentials(token_matrix: Matrix,
                                                            caller: Caller) -> None:
    _base_and_catalog(token_matrix, caller)


@pytest.mark.parametrize("caller", BASIC_CALLERS, ids=lambda c: c.name)
def test_base_and_catalog_basic_mode(basic_matrix: Matrix, caller: Caller) -> None:
    _base_and_catalog(basic_matrix, caller)


# -- the mount that falls back ------------------------------------------------


def test_mount_without_pull_on_the_source_falls_back_to_an_upload_and_reveals_nothing(
    token_matrix: Matrix,
) -> None:
    """The robot may push to team/app but not read team/other: mounting a blob of
    team/other answers as if team/other did not hold it."""
    m = token_matrix
    digest = m.push_blob(OTHER, b"only in team/other" * 10)
    for key in ("basic:robot", "bearer:robot"):
        with m.node.client() as client:
            response = client.post(f"/v2/{PRIVATE}/blobs/uploads/",
                                   params={"mount": digest, "from": OTHER}, headers=m.headers[key])
            assert response.status_code == 202, (key, response.text)
            assert response.headers["Location"].startswith(f"/v2/{PRIVATE}/blobs/uploads/")
            head = client.head(f"/v2/{PRIVATE}/blobs/{digest}", headers=m.headers["basic:admin"])
            assert head.status_code == 404


# -- what a grant on one repository must not reach in another -----------------


def test_a_manifest_cannot_claim_blobs_of_a_repository_its_pusher_may_not_read(
    token_matrix: Matrix,
) -> None:
    """The robot may push to team/app only: a manifest there naming team/other's blobs
    must not link them into team/app, where the robot could then pull them."""
    m = token_matrix
    theirs = m.images[OTHER]
    robot = m.headers["basic:robot"]
    response = m.client.put(f"/v2/{PRIVATE}/manifests/stolen", content=theirs.manifest,
                            headers=robot | {"Content-Type": OCI_MANIFEST})
    assert 400 <= response.status_code < 500, response.text
    assert [e["code"] for e in response.json()["errors"]] == ["MANIFEST_BLOB_UNKNOWN"]
    blob = m.client.get(f"/v2/{PRIVATE}/blobs/{digest_of(theirs.layer)}", headers=robot)
    assert blob.status_code == 404


def test_a_blob_is_served_only_through_a_repository_that_holds_it(token_matrix: Matrix) -> None:
    m = token_matrix
    layer = digest_of(m.images[OTHER].layer)
    for repo, key in ((PUBLIC, "none:anonymous"), (PRIVATE, "basic:robot")):
        response = m.client.get(f"/v2/{repo}/blobs/{layer}", headers=m.headers[key])
        assert response.status_code == 404, (repo, response.status_code)
        assert [e["code"] for e in response.json()["errors"]] == ["BLOB_UNKNOWN"]


def test_an_upload_session_is_reachable_only_under_its_own_repository(
    token_matrix: Matrix,
) -> None:
    """A session opened on team/other cannot be fed or finished through team/app by a
    caller who may push only there."""
    m = token_matrix
    location = m.open_upload(OTHER)
    borrowed = location.replace(f"/v2/{OTHER}/", f"/v2/{PRIVATE}/")
    robot = m.headers["basic:robot"]
    for response in (
        m.client.patch(borrowed, content=b"bytes", headers=robot),
        m.client.get(borrowed, headers=robot),
        m.client.put(borrowed, params={"digest": digest_of(b"")}, headers=robot),
    ):
        assert response.status_code == 404, response.text
        assert [e["code"] for e in response.json()["errors"]] == ["BLOB_UPLOAD_UNKNOWN"]


def test_a_client_cannot_pose_as_a_peer_relaying_an_upload(token_matrix: Matrix) -> None:
    """The relay header names a node of the cluster; without the cluster secret's
    signature it buys nothing."""
    m = token_matrix
    from node.cluster.forward import FORWARDED

    response = m.client.post(f"/v2/{PRIVATE}/blobs/uploads/", headers={FORWARDED: "n2"})
    assert response.status_code == 401, response.text
    assert [e["code"] for e in response.json()["errors"]] == ["UNAUTHORIZED"]


# -- credentials that cannot be read ------------------------------------------


@pytest.mark.parametrize("authorization", [
    "Basic", "Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b":empty-name").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Bearer", "Bearer garbage",
    "Bearer a.b.c", "Negotiate abc", "Digest username=x", "basic " + "A" * 6000,
])
@pytest.mark.parametrize("mode", ["token", "basic"])
def test_unreadable_credentials_are_a_401_with_the_challenge_never_a_500(
    token_matrix: Matrix, basic_matrix: Matrix, mode: str, authorization: str
) -> None:
    m = token_matrix if mode == "token" else basic_matrix
    for path in ("/v2/", f"/v2/{PUBLIC}/tags/list", f"/v2/{PRIVATE}/tags/list"):
        response = m.client.get(path, headers={"Authorization": authorization})
        assert response.status_code == 401, (path, response.status_code, response.text[:200])
        assert [e["code"] for e in response.json()["errors"]] == ["UNAUTHORIZED"]
        scheme, _ = parse_challenge(response.headers["WWW-Authenticate"])
        assert scheme == ("Bearer" if mode == "token" else "Basic")
        credential = authorization.partition(" ")[2][:40]
        assert not credential or credential not in response.text  # never echoed back


def test_catalog_pages_hold_only_what_the_caller_may_pull(token_matrix: Matrix) -> None:
    """The robot may pull library/base (public) and team/app: one per page, and the
    Link of the last page it may see leads nowhere further."""
    m = token_matrix
    seen, path = [], "/v2/_catalog?n=1"
    for _ in range(5):
        response = m.client.get(path, headers=m.headers["bearer:robot"])
        assert response.status_code == 200
        seen.extend(response.json()["repositories"])
        link = response.headers.get("Link")
        if link is None:
            break
        path = link.split(";")[0].strip("<>")
    assert seen == [PUBLIC, PRIVATE]
