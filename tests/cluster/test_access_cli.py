"""`flotilla user|robot|grant|revoke|grants|repo|keys` against a real node with access on.

Every command runs as its own process, as an operator types it, against one
`flotilla serve --auth token` process per module; what each command changed
is checked the way a registry user notices it: which credentials log in, what
they may push or pull, what an anonymous client sees. Each test uses account
names and repositories of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.secured_node import ADMIN, SecuredNode, flotilla, start_secured_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNode]:
    secured = start_secured_node(tmp_path_factory.mktemp("access-cli"), "token")
    yield secured
    secured.stop()


@pytest.fixture
def name() -> str:
    """An account name no other test uses."""
    return f"u{uuid.uuid4().hex[:10]}"


def logs_in(node: SecuredNode, user: str, password: str) -> bool:
    """Whether Basic credentials are accepted (what `docker login` checks first)."""
    status = node.get("/v2/", auth=(user, password)).status_code
    assert status in (200, 401), status
    return status == 200


def start_upload(node: SecuredNode, repo: str, auth: tuple[str, str] | None) -> httpx.Response:
    """The first request of any push: it needs push on `repo`."""
    return httpx.post(f"{node.url}/v2/{repo}/blobs/uploads/", auth=auth, timeout=30,
                      verify=node.verify)


def test_user_add_passwd_list_and_remove(node: SecuredNode, name: str) -> None:
    assert f"user {name} added" in node.admin(
        "user", "add", name, "--password-stdin", stdin="first-pass-1\n").stdout
    assert logs_in(node, name, "first-pass-1")
    assert f"{name} (user): no grants" in node.admin("user", "list").stdout

    node.admin("user", "passwd", name, "--password-stdin", stdin="second-pass-2\n")
    assert not logs_in(node, name, "first-pass-1")
    assert logs_in(node, name, "second-pass-2")

    assert f"{name} removed" in node.admin("user", "remove", name).stdout
    assert name not in node.admin("user", "list").stdout
    assert not logs_in(node, name, "second-pass-2")


def test_a_short_password_is_refused_before_anything_is_sent(
    node: SecuredNode, name: str
) -> None:
    refused = node.admin("user", "add", name, "--password-stdin", stdin="short\n", check=False)
    assert refused.returncode == 1
    assert "at least 8 characters" in refused.stderr
    assert name not in node.admin("user", "list").stdout


def test_robot_add_prints_a_token_that_works_as_a_basic_password(
    node: SecuredNode, name: str
) -> None:
    token = node.add_robot(name, ("writer", f"{name}/*"), expires="2d")
    assert logs_in(node, name, token)
    assert start_upload(node, f"{name}/app", (name, token)).status_code == 202
    assert start_upload(node, "elsewhere/app", (name, token)).status_code == 403
    listed = node.admin("robot", "list").stdout
    assert f"{name} (robot, expires " in listed
    assert f"writer on {name}/*" in listed
    assert token not in listed

    node.admin("robot", "remove", name)
    assert not logs_in(node, name, token)


def test_grant_and_revoke_change_what_a_user_may_push(node: SecuredNode, name: str) -> None:
    node.add_user(name, "grant-pass-1")
    auth = (name, "grant-pass-1")
    assert start_upload(node, f"{name}/app", auth).status_code == 403

    assert f"{name} is writer on {name}/*" in node.admin(
        "grant", name, "writer", f"{name}/*").stdout
    assert start_upload(node, f"{name}/app", auth).status_code == 202
    assert f"{name}: writer on {name}/*" in node.admin("grants").stdout

    node.admin("revoke", name, f"{name}/*")
    refused = start_upload(node, f"{name}/app", auth)
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "DENIED"
    assert f"{name}: writer" not in node.admin("grants").stdout


def test_repo_public_and_private_decide_what_anonymous_clients_may_pull(
    node: SecuredNode, name: str
) -> None:
    tags = f"/v2/{name}/app/tags/list"
    assert node.get(tags).status_code == 401

    assert f"{name}/*: public" in node.admin("repo", "public", f"{name}/*").stdout
    assert f"{name}/*" in node.admin("repo", "list").stdout.splitlines()
    anonymous = node.get(tags)
    assert anonymous.status_code == 404  # let in: there is just nothing there yet
    assert anonymous.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert start_upload(node, f"{name}/app", None).status_code == 401  # pull only

    assert f"{name}/*: private" in node.admin("repo", "private", f"{name}/*").stdout
    assert f"{name}/*" not in node.admin("repo", "list").stdout.splitlines()
    assert node.get(tags).status_code == 401


def _token(node: SecuredNode, user: str, password: str, repo: str) -> str:
    answer = node.get("/token", auth=(user, password),
                      params={"service": "flotilla", "scope": f"repository:{repo}:pull"})
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def _pull_with(node: SecuredNode, token: str, repo: str) -> int:
    return node.get(f"/v2/{repo}/tags/list",
                    headers={"Authorization": f"Bearer {token}"}).status_code


def test_keys_rotate_signs_new_tokens_with_a_new_key_and_old_tokens_keep_working(
    node: SecuredNode, name: str
) -> None:
    node.add_user(name, "keys-pass-1", ("reader", f"{name}/*"))
    repo = f"{name}/app"
    old_token = _token(node, name, "keys-pass-1", repo)
    before = node.admin("keys", "list").stdout.splitlines()
    assert sum(line.endswith(" (current)") for line in before) == 1

    rotated = node.admin("keys", "rotate").stdout
    assert "new tokens are signed with key" in rotated
    new_kid = rotated.split()[-1]
    after = node.admin("keys", "list").stdout.splitlines()
    assert f"{new_kid} (current)" in after
    assert len(after) == len(before) + 1  # the old keys still verify, none is current

    new_token = _token(node, name, "keys-pass-1", repo)
    assert new_token != old_token
    assert _pull_with(node, old_token, repo) == 404  # let in; the repository is empty
    assert _pull_with(node, new_token, repo) == 404


def test_import_htpasswd_keeps_bcrypt_users_and_skips_the_rest(
    node: SecuredNode, name: str, tmp_path: Path
) -> None:
    # As Apache's htpasswd -B writes it: $2y$ prefix.
    hashed = bcrypt.hashpw(b"imported-pass-1", bcrypt.gensalt(rounds=5)).decode()
    entry = "$2y$" + hashed.removeprefix("$2b$")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        f"{name}:{entry}\n"
        f"{name}-md5:$apr1$abcdefgh$0123456789abcdefghijkl\n"
    )

    imported = node.admin("user", "import-htpasswd", str(htpasswd))
    assert "imported 1 users" in imported.stdout
    assert f"skipped {name}-md5" in imported.stderr
    assert logs_in(node, name, "imported-pass-1")
    assert not logs_in(node, name, "wrong-pass-1")
    assert f"{name}-md5" not in node.admin("user", "list").stdout

    again = node.admin("user", "import-htpasswd", str(htpasswd))
    assert f"already there: {name}" in again.stdout


def test_a_wrong_admin_password_exits_1_with_a_message(
    node: SecuredNode, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-admin-password\n")
    refused = flotilla("grants", *node.cli_target(), "--as", ADMIN,
                       "--as-password-file", str(wrong), check=False)
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert "invalid username or password" in refused.stderr
    assert "not-the-admin-password" not in refused.stderr + refused.stdout


def test_a_user_who_is_not_an_admin_gets_403(
    node: SecuredNode, name: str, tmp_path: Path
) -> None:
    node.add_user(name, "plain-pass-1", ("writer", "*"))
    password = tmp_path / "password"
    password.write_text("plain-pass-1\n")
    refused = flotilla("grant", name, "admin", "*", *node.cli_target(), "--as", name,
                       "--as-password-file", str(password), check=False)
    assert refused.returncode == 1
    assert "403" in refused.stderr
    assert f"{name} is not an admin" in refused.stderr
    assert f"{name}: admin" not in node.admin("grants").stdout


def test_a_grant_for_an_unknown_account_is_a_clear_error(node: SecuredNode, name: str) -> None:
    refused = node.admin("grant", name, "writer", "team/*", check=False)
    assert refused.returncode == 1
    assert f"404: no such account: {name}" in refused.stderr
    assert name not in node.admin("grants").stdout


def test_removing_an_unknown_user_or_grant_names_it(node: SecuredNode, name: str) -> None:
    removed = node.admin("user", "remove", name, check=False)
    assert removed.returncode == 1
    assert f"no such account: {name}" in removed.stderr
    node.add_user(name, "revoke-pass-1")
    revoked = node.admin("revoke", name, "team/*", check=False)
    assert revoked.returncode == 1
    assert f"no such grant: {name} on team/*" in revoked.stderr


def test_an_unusable_pattern_is_refused_with_a_message(node: SecuredNode) -> None:
    refused = node.admin("repo", "public", "Not A Pattern", check=False)
    assert refused.returncode == 1
    assert "400" in refused.stderr
    assert "pattern" in refused.stderr
