"""docker, podman and skopeo through a node's access control, as a team uses it.

One node per module and mode (`--auth token`, `--auth basic`) holds the
accounts a team would make: alice writes `team/*` and `library/*`, bob reads
`team/*`, the robot `ci` writes `team/*`, and `library/*` is public. Every test
pushes to repositories of its own; the login-throttle test gets a node of its
own, since it locks 127.0.0.1 out of that node for a minute. Each client keeps
its logins in a private place (docker --config, podman --authfile), and the
node's URL and each client's TLS flags come from one `transport` fixture: every
test runs over plain HTTP on loopback and over HTTPS with a test CA, installed
the way each client expects (docker: /etc/docker/certs.d/HOST:PORT/ca.crt;
podman --cert-dir; skopeo --src-cert-dir/--dest-cert-dir).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from tests.certificates import NodeCertificate
from tests.e2e.client_logins import DockerAs, Podman, Transport, skopeo_copy
from tests.e2e.clients import ClientFailed, Docker, Skopeo
from tests.e2e.images import ImageLayout, rootfs_tar
from tests.e2e.test_docker import MANIFEST_TYPES, pushed_digest
from tests.e2e.test_skopeo import busybox_layout
from tests.e2e.test_tls_clients import DOCKER_CERTS, own_address
from tests.secret_scan import record_secret
from tests.secured_node import ADMIN_PASSWORD, SecuredNode, start_secured_node

pytestmark = pytest.mark.e2e

ALICE, ALICE_PASSWORD = "alice", "alice-pass-1"
BOB, BOB_PASSWORD = "bob", "bob-pass-12"
ROBOT = "ci"
WRONG_PASSWORD = "not-alices-password"
THROTTLE_LIMIT = 10  # failed logins from one address before the node answers 429
# What the clients print when the registry refuses who they are (401 or 403).
AUTH_ERRORS = ("unauthorized", "denied", "authentication required", "invalid username/password",
               "no basic auth credentials",
               "may require 'docker login'")


@pytest.fixture(scope="module", params=["http", "https"])
def transport(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Transport:
    """Plain HTTP on loopback, or HTTPS with a test CA at this machine's own address
    (docker skips certificate checks on 127.0.0.0/8, so TLS is tested off it)."""
    if request.param == "http":
        return Transport()
    host = own_address()
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", host, "localhost")
    cert, key, ca_file = folder / "node.crt", folder / "node.key", folder / "ca.crt"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    ca_file.write_bytes(ca.cert_pem.bytes())
    cert_dir = tmp_path_factory.mktemp("cert-dir")  # the CA alone: a key there is a client's
    shutil.copy(ca_file, cert_dir / "ca.crt")
    return Transport("https", host, NodeCertificate(ca, cert, key, ca_file), cert_dir)


@contextmanager
def secured_node(transport: Transport, root: Path, auth: str) -> Iterator[SecuredNode]:
    """A node reached through `transport`; under TLS its CA is where dockerd looks for
    it (/etc/docker/certs.d/HOST:PORT/ca.crt) while it runs."""
    secured = start_secured_node(root, auth, certificate=transport.certificate,
                                 host=transport.host)
    certs_d = DOCKER_CERTS / secured.address
    try:
        if transport.certificate is not None:
            certs_d.mkdir(parents=True)
            shutil.copy(transport.certificate.ca_file, certs_d / "ca.crt")
        yield secured
    finally:
        secured.stop()
        if transport.certificate is not None:
            shutil.rmtree(certs_d, ignore_errors=True)


@contextmanager
def team_node(transport: Transport, root: Path, auth: str) -> Iterator[SecuredNode]:
    with secured_node(transport, root, auth) as secured:
        secured.add_user(ALICE, ALICE_PASSWORD, ("writer", "team/*"), ("writer", "library/*"))
        secured.add_user(BOB, BOB_PASSWORD, ("reader", "team/*"))
        secured.admin("repo", "public", "library/*")
        yield secured


@pytest.fixture(scope="module")
def token_node(tmp_path_factory: pytest.TempPathFactory,
               transport: Transport) -> Iterator[SecuredNode]:
    with team_node(transport, tmp_path_factory.mktemp("token-node"), "token") as secured:
        yield secured


@pytest.fixture(scope="module")
def robot_token(token_node: SecuredNode) -> str:
    return token_node.add_robot(ROBOT, ("writer", "team/*"))


@pytest.fixture(scope="module")
def basic_node(tmp_path_factory: pytest.TempPathFactory,
               transport: Transport) -> Iterator[SecuredNode]:
    with team_node(transport, tmp_path_factory.mktemp("basic-node"), "basic") as secured:
        yield secured


@pytest.fixture
def docker_as(docker: Docker, tmp_path: Path) -> DockerAs:
    """docker with a config directory of this test's own (no logins yet)."""
    config = tmp_path / "docker-config"
    config.mkdir()
    return DockerAs(config=config)


@pytest.fixture(scope="session")
def podman_present() -> None:
    if shutil.which("podman") is None:
        pytest.fail("podman not found: install podman (.ci/run does)", pytrace=False)


@pytest.fixture
def podman(podman_present: None, tmp_path: Path, transport: Transport) -> Iterator[Podman]:
    """podman with an auth file of this test's own; the images a test tags with its
    temporary directory's name are removed from podman's store when it ends."""
    client = Podman(tmp_path / "podman-auth.json", transport)
    yield client
    images = client("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout
    made = [line for line in images.splitlines() if line.endswith(f":{tmp_path.name}")]
    if made:
        client("rmi", "--force", *made, check=False)


def _own(repo: str, namespace: str) -> str:
    return f"{namespace}/{repo.removeprefix('e2e/')}"


@pytest.fixture
def team_repo(repo: str) -> str:
    return _own(repo, "team")


@pytest.fixture
def library_repo(repo: str) -> str:
    return _own(repo, "library")


def new_image(docker: Docker, reference: str, local_images: list[str]) -> str:
    """A one-layer image of its own content (so its layer is new to the node) at
    `reference` in the local docker store; returns its image id."""
    local_images.append(reference)
    return docker.import_rootfs(rootfs_tar({"etc/id": uuid.uuid4().bytes}), reference)


def assert_auth_error(completed: subprocess.CompletedProcess[str]) -> None:
    output = f"{completed.stdout}\n{completed.stderr}"
    assert completed.returncode != 0, output
    assert any(word in output.lower() for word in AUTH_ERRORS), output


# -- docker, token flow -----------------------------------------------------------------


def test_docker_login_push_and_pull_as_a_writer(
    docker_as: DockerAs, token_node: SecuredNode, team_repo: str, local_images: list[str]
) -> None:
    reference = f"{token_node.address}/{team_repo}:1.0"
    image_id = new_image(docker_as, reference, local_images)

    assert "Login Succeeded" in docker_as.login(token_node.address, ALICE, ALICE_PASSWORD).stdout
    digest = pushed_digest(docker_as("push", reference).stdout)
    docker_as.remove(reference)
    assert digest in docker_as("pull", reference).stdout
    assert docker_as.image_id(reference) == image_id


def test_docker_pull_of_a_private_repository_after_logout_is_refused(
    docker_as: DockerAs, token_node: SecuredNode, team_repo: str, local_images: list[str]
) -> None:
    reference = f"{token_node.address}/{team_repo}:1.0"
    new_image(docker_as, reference, local_images)
    docker_as.login(token_node.address, ALICE, ALICE_PASSWORD)
    docker_as("push", reference)
    docker_as.remove(reference)

    docker_as("logout", token_node.address)
    assert_auth_error(docker_as("pull", reference, check=False))
    assert not docker_as.exists(reference)


def test_anonymous_docker_pull_of_a_public_repository(
    docker_as: DockerAs, docker: Docker, tmp_path: Path, token_node: SecuredNode,
    library_repo: str, local_images: list[str],
) -> None:
    reference = f"{token_node.address}/{library_repo}:1"
    image_id = new_image(docker_as, reference, local_images)
    docker_as.login(token_node.address, ALICE, ALICE_PASSWORD)
    docker_as("push", reference)
    docker_as.remove(reference)

    stranger = DockerAs(config=tmp_path / "stranger")  # never logged in anywhere
    stranger.config.mkdir()
    stranger("pull", reference)
    assert stranger.image_id(reference) == image_id


def test_docker_push_without_a_grant_is_denied(
    docker_as: DockerAs, token_node: SecuredNode, repo: str, local_images: list[str]
) -> None:
    other = _own(repo, "other")
    reference = f"{token_node.address}/{other}:1"
    new_image(docker_as, reference, local_images)
    docker_as.login(token_node.address, ALICE, ALICE_PASSWORD)

    push = docker_as("push", reference, check=False)
    assert push.returncode != 0
    assert "denied" in (push.stdout + push.stderr).lower()
    tags = token_node.get(f"/v2/{other}/tags/list", auth=("admin", ADMIN_PASSWORD))
    assert tags.status_code == 404  # nothing of it reached the registry


def test_a_reader_pulls_but_cannot_push(
    docker_as: DockerAs, tmp_path: Path, token_node: SecuredNode, team_repo: str,
    local_images: list[str],
) -> None:
    reference = f"{token_node.address}/{team_repo}:1"
    image_id = new_image(docker_as, reference, local_images)
    docker_as.login(token_node.address, ALICE, ALICE_PASSWORD)
    docker_as("push", reference)
    docker_as.remove(reference)

    reader = DockerAs(config=tmp_path / "bob")
    reader.config.mkdir()
    reader.login(token_node.address, BOB, BOB_PASSWORD)
    reader("pull", reference)
    assert reader.image_id(reference) == image_id
    second = f"{token_node.address}/{team_repo}:2"
    local_images.append(second)
    reader("tag", reference, second)
    push = reader("push", second, check=False)
    assert push.returncode != 0
    assert "denied" in (push.stdout + push.stderr).lower()
    assert token_node.get(f"/v2/{team_repo}/manifests/2", auth=(BOB, BOB_PASSWORD),
                          headers={"Accept": MANIFEST_TYPES}).status_code == 404


def test_docker_login_with_a_robot_token_pushes_only_where_its_grants_allow(
    docker_as: DockerAs, token_node: SecuredNode, robot_token: str, team_repo: str,
    repo: str, local_images: list[str],
) -> None:
    allowed = f"{token_node.address}/{team_repo}:1"
    elsewhere = f"{token_node.address}/{_own(repo, 'other')}:1"
    new_image(docker_as, allowed, local_images)
    local_images.append(elsewhere)
    docker_as("tag", allowed, elsewhere)

    docker_as.login(token_node.address, ROBOT, robot_token)
    docker_as("push", allowed)
    refused = docker_as("push", elsewhere, check=False)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower(), refused.stderr


def test_a_revoked_grant_refuses_the_next_docker_push_of_a_logged_in_user(
    docker_as: DockerAs, token_node: SecuredNode, team_repo: str, local_images: list[str]
) -> None:
    user, password = f"carol-{uuid.uuid4().hex[:6]}", "carol-pass-1"
    token_node.add_user(user, password, ("writer", team_repo))
    first = f"{token_node.address}/{team_repo}:1"
    second = f"{token_node.address}/{team_repo}:2"
    new_image(docker_as, first, local_images)
    new_image(docker_as, second, local_images)
    docker_as.login(token_node.address, user, password)
    docker_as("push", first)

    token_node.admin("revoke", user, team_repo)
    refused = docker_as("push", second, check=False)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower(), refused.stderr


def test_a_changed_password_ends_the_login_docker_kept(
    docker_as: DockerAs, token_node: SecuredNode, team_repo: str, local_images: list[str]
) -> None:
    user = f"dave-{uuid.uuid4().hex[:6]}"
    token_node.add_user(user, "dave-pass-1", ("writer", team_repo))
    reference = f"{token_node.address}/{team_repo}:1"
    new_image(docker_as, reference, local_images)
    docker_as.login(token_node.address, user, "dave-pass-1")
    kept = json.loads((docker_as.config / "config.json").read_text())["auths"]
    assert "dave-pass-1" not in json.dumps(kept)  # docker keeps a refresh token instead

    token_node.admin("user", "passwd", user, "--password-stdin", stdin="dave-pass-2\n")
    assert_auth_error(docker_as("push", reference, check=False))
    docker_as.login(token_node.address, user, "dave-pass-2")
    docker_as("push", reference)


# -- podman ------------------------------------------------------------------------------


def _podman_round_trip(podman: Podman, node: SecuredNode, reference: str,
                       rootfs: Path) -> None:
    image_id = podman("import", str(rootfs), reference).stdout.strip().splitlines()[-1]
    podman.remote("push", reference)
    podman("rmi", reference)
    podman.remote("pull", reference)
    assert podman.image_id(reference).removeprefix("sha256:") == image_id.removeprefix("sha256:")


def test_podman_login_push_and_pull(
    podman: Podman, tmp_path: Path, token_node: SecuredNode, team_repo: str
) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(rootfs_tar({"etc/id": uuid.uuid4().bytes}))
    reference = f"{token_node.address}/{team_repo}:{tmp_path.name}"

    assert "Login Succeeded" in podman.login(token_node.address, ALICE, ALICE_PASSWORD).stdout
    _podman_round_trip(podman, token_node, reference, rootfs)


def test_podman_with_a_robot_token_as_password(
    podman: Podman, tmp_path: Path, token_node: SecuredNode, robot_token: str, team_repo: str
) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(rootfs_tar({"etc/id": uuid.uuid4().bytes}))
    reference = f"{token_node.address}/{team_repo}:{tmp_path.name}"

    podman.login(token_node.address, ROBOT, robot_token)
    _podman_round_trip(podman, token_node, reference, rootfs)


def test_podman_login_with_a_wrong_password_fails(
    podman: Podman, token_node: SecuredNode
) -> None:
    assert_auth_error(podman.login(token_node.address, BOB, "not-bobs-password", check=False))


# -- skopeo ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["user", "robot"])
def test_skopeo_copy_with_credentials_both_ways(
    who: str, skopeo: Skopeo, transport: Transport, tmp_path: Path, token_node: SecuredNode,
    robot_token: str, team_repo: str,
) -> None:
    creds = f"{ALICE}:{ALICE_PASSWORD}" if who == "user" else f"{ROBOT}:{robot_token}"
    source = busybox_layout(tmp_path / "source", "v1")
    remote = f"docker://{token_node.address}/{team_repo}:v1"

    skopeo_copy(skopeo, transport, f"oci:{source.root}:v1", remote, destination_creds=creds)
    skopeo_copy(skopeo, transport, remote, f"oci:{tmp_path / 'back'}:v1", source_creds=creds)

    back_layout = ImageLayout(tmp_path / "back")
    assert back_layout.manifest_digest("v1") == source.manifest_digest("v1")
    assert back_layout.blob_digests() == source.blob_digests()


def test_skopeo_without_credentials_cannot_push_to_or_pull_from_a_private_repository(
    skopeo: Skopeo, transport: Transport, tmp_path: Path, token_node: SecuredNode,
    team_repo: str,
) -> None:
    source = busybox_layout(tmp_path / "source", "v1")
    remote = f"docker://{token_node.address}/{team_repo}:v1"

    assert_auth_error(skopeo_copy(skopeo, transport, f"oci:{source.root}:v1", remote,
                                  check=False))
    skopeo_copy(skopeo, transport, f"oci:{source.root}:v1", remote,
                destination_creds=f"{ALICE}:{ALICE_PASSWORD}")
    assert_auth_error(skopeo_copy(skopeo, transport, remote, f"oci:{tmp_path / 'back'}:v1",
                                  check=False))


# -- docker, basic mode -----------------------------------------------------------------


def test_docker_login_push_and_pull_in_basic_mode(
    docker_as: DockerAs, basic_node: SecuredNode, team_repo: str, local_images: list[str]
) -> None:
    reference = f"{basic_node.address}/{team_repo}:1.0"
    image_id = new_image(docker_as, reference, local_images)
    challenge = basic_node.get("/v2/").headers["WWW-Authenticate"]
    assert challenge.startswith("Basic ")

    docker_as.login(basic_node.address, ALICE, ALICE_PASSWORD)
    digest = pushed_digest(docker_as("push", reference).stdout)
    docker_as.remove(reference)
    assert digest in docker_as("pull", reference).stdout
    assert docker_as.image_id(reference) == image_id

    docker_as("logout", basic_node.address)
    docker_as.remove(reference)
    assert_auth_error(docker_as("pull", reference, check=False))


# -- failed logins ----------------------------------------------------------------------


@pytest.fixture
def lone_node(tmp_path: Path, transport: Transport) -> Iterator[SecuredNode]:
    """A node of this test's own: what it does to the client's address stays here."""
    with secured_node(transport, tmp_path / "lone", "token") as secured:
        secured.add_user(ALICE, ALICE_PASSWORD, ("writer", "team/*"))
        yield secured


def test_docker_login_with_a_wrong_password_fails_and_too_many_are_throttled(
    docker_as: DockerAs, lone_node: SecuredNode
) -> None:
    for _ in range(THROTTLE_LIMIT):
        failed = docker_as.login(lone_node.address, ALICE, WRONG_PASSWORD, check=False)
        assert failed.returncode != 0
        assert "unauthorized" in failed.stderr.lower(), failed.stderr
        assert "toomanyrequests" not in failed.stderr.lower()

    throttled = docker_as.login(lone_node.address, ALICE, WRONG_PASSWORD, check=False)
    assert throttled.returncode != 0
    assert "toomanyrequests" in throttled.stderr.lower(), throttled.stderr
    # Even the right password waits now: a guesser learns nothing from further tries.
    right = docker_as.login(lone_node.address, ALICE, ALICE_PASSWORD, check=False)
    assert right.returncode != 0
    assert "toomanyrequests" in right.stderr.lower(), right.stderr
    answer = lone_node.get("/v2/", auth=(ALICE, ALICE_PASSWORD))
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert not (docker_as.config / "config.json").exists() or lone_node.address not in (
        json.loads((docker_as.config / "config.json").read_text()).get("auths", {})
    )


# -- the audit log ----------------------------------------------------------------------


def test_audit_log_names_pushes_tag_moves_failed_logins_and_account_changes_without_secrets(
    docker_as: DockerAs, transport: Transport, token_node: SecuredNode, robot_token: str,
    team_repo: str, local_images: list[str],
) -> None:
    reference = f"{token_node.address}/{team_repo}:latest"
    new_image(docker_as, reference, local_images)
    docker_as.login(token_node.address, ALICE, ALICE_PASSWORD)
    first = pushed_digest(docker_as("push", reference).stdout)
    manifest = token_node.get(f"/v2/{team_repo}/manifests/{first}",
                              auth=(ALICE, ALICE_PASSWORD), headers={"Accept": MANIFEST_TYPES})
    blobs = {manifest.json()["config"]["digest"]} | {
        layer["digest"] for layer in manifest.json()["layers"]
    }
    docker_as.remove(reference)  # else the first image stays behind, untagged
    docker_as.import_rootfs(rootfs_tar({"etc/id": uuid.uuid4().bytes}), reference)
    second = pushed_digest(docker_as("push", reference).stdout)  # same tag, another image
    assert second != first
    record_secret(WRONG_PASSWORD)
    failed = docker_as.login(token_node.address, BOB, WRONG_PASSWORD, check=False)
    assert failed.returncode != 0
    grantee = f"gina-{uuid.uuid4().hex[:6]}"
    token_node.add_user(grantee, "gina-pass-1", ("reader", team_repo))
    token_node.admin("revoke", grantee, team_repo)

    lines = token_node.audit_lines()
    mine = [line for line in lines if line.get("repository") == team_repo]
    pushed_blobs = {line["digest"] for line in mine if line["action"] == "push_blob"}
    assert blobs <= pushed_blobs
    assert all(line["actor"] == {"kind": "user", "name": ALICE} for line in mine)
    assert any(line["action"] == "push_manifest" and line["digest"] == first
               and line["tag"] == "latest" for line in mine)
    moves = [line for line in mine if line["action"] == "tag_move"]
    assert [(m["digest"], m["previous_digest"], m["tag"]) for m in moves] == [
        (second, first, "latest")
    ]
    assert any(line["action"] == "login_failed" and line["account"] == BOB
               and line["address"] == transport.host for line in lines)
    assert any(line["action"] == "account_added" and line["account"] == grantee
               and line["actor"]["name"] == "admin" for line in lines)
    assert any(line["action"] == "grant_added" and line["account"] == grantee
               and line["pattern"] == team_repo and line["role"] == "reader" for line in lines)
    assert any(line["action"] == "grant_removed" and line["account"] == grantee
               and line["pattern"] == team_repo for line in lines)
    assert all(line["time"] and line["node"] for line in lines)

    # A bearer token used the way clients use one, to look for it in the logs below.
    access = token_node.get("/token", auth=(ALICE, ALICE_PASSWORD),
                            params={"service": "flotilla",
                                    "scope": f"repository:{team_repo}:pull"}).json()["token"]
    assert token_node.get(f"/v2/{team_repo}/tags/list",
                          headers={"Authorization": f"Bearer {access}"}).status_code == 200

    docker_config = json.loads((docker_as.config / "config.json").read_text())
    kept = docker_config["auths"][token_node.address]
    record_secret(kept["identitytoken"])
    record_secret(access)
    secrets = [ADMIN_PASSWORD, ALICE_PASSWORD, BOB_PASSWORD, WRONG_PASSWORD, "gina-pass-1",
               robot_token, kept["identitytoken"], access,
               base64.b64encode(f"{ALICE}:{ALICE_PASSWORD}".encode()).decode()]
    written = token_node.logs_text()
    for secret in secrets:
        assert secret not in written
    # A token's signature alone would do as well as the token: look for those too.
    for token in (kept["identitytoken"], access, robot_token.removeprefix("flr_")):
        assert token.rsplit(".", 1)[-1] not in written


def test_docker_login_as_an_unknown_account_fails(
    docker_as: DockerAs, token_node: SecuredNode
) -> None:
    with pytest.raises(ClientFailed) as refused:
        docker_as.login(token_node.address, "nobody-here", "some-password-1")
    assert "unauthorized" in str(refused.value).lower()
