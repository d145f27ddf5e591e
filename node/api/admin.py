"""`/admin/…`: accounts, grants, public repositories and signing keys, for admins.

An admin is an account holding the admin role on `*` (HTTP Basic: a token
cannot be used here, so a leaked token never changes who may do what), or
whoever proves the cluster secret the way peers sign their requests, which
is how the first admin is made (`flotilla user add admin --role admin
--secret-file …`). Every change is a command through Raft, so it holds on
every node once answered, and is written to the audit log. Passwords arrive
hashed (the CLI hashes them); robot tokens are drawn here and shown once.

    GET    /admin/accounts                       accounts (never their hashes) and grants
    POST   /admin/accounts                       {name, password_hash | robot, expires_at,
                                                  role, replace}  → robots: {token}
    PUT    /admin/accounts/NAME/password         {password_hash}
    DELETE /admin/accounts/NAME
    POST   /admin/accounts/import                {users: {name: bcrypt hash}} (htpasswd)
    GET    /admin/grants · POST {principal, role, pattern} · DELETE ?principal=&pattern=
    GET    /admin/public · POST {pattern} · DELETE ?pattern=
    GET    /admin/keys   · POST /admin/keys/rotate
    /admin/gc/…                                  garbage collection (node/api/admin_gc.py)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from quart import Response, request

from consensus.engine import DeleteAccount, DeleteGrant, PutAccount, PutGrant, Refused, SetPublic
from node.access.callers import SECRET, Caller
from node.access.errors import AccessDenied, AdminInputInvalid, AuthenticationRequired
from node.access.passwords import check_stored_hash, hash_robot_token, new_robot_token
from node.access.rules import ALL_REPOSITORIES, parse_account_name, parse_pattern, parse_role
from node.access.tokens import new_signing_key
from node.api.access import client_address, realm
from node.api.admin_gc import gc_admin
from node.api.admin_quotas import quota_admin
from node.api.errors import NotFound, Unsupported
from node.api.request_bodies import read_body_bounded
from node.cluster.auth import SIGNATURE_HEADER
from node.cluster.peer_api import request_target
from node.services import NodeServices

MAX_ADMIN_BODY = 4 << 20  # an htpasswd import of some ten thousand users
MAX_IMPORT = 20_000
MAX_UNIX_SECONDS = 2**63 - 1  # what a command and an SQLite integer hold


async def _admin(rt: NodeServices) -> tuple[Caller, str | None]:
    """The admin making this request and, when it proved the secret, the body digest it
    signed; or the refusal (401 to log in, 403 if not an admin)."""
    if SIGNATURE_HEADER in request.headers:
        signed_digest = rt.peer_auth.verify(
            request.method, request_target(), request.headers, node_id=rt.config.node_id
        )
        return Caller(SECRET, "", client_address()), signed_digest
    caller = await rt.gate.authenticate(
        request.headers.get("Authorization"), client_address(), realm()
    )
    if rt.gate.is_admin(caller):
        return caller, None
    if not caller.is_account:
        raise AuthenticationRequired("an admin account or the cluster secret is required",
                                     challenge='Basic realm="flotilla admin"')
    raise AccessDenied(f"{caller.name} is not an admin")


async def _json_body(signed_digest: str | None) -> dict[str, Any]:
    body = await read_body_bounded(MAX_ADMIN_BODY, "admin request")
    if signed_digest is not None and signed_digest != (
        hashlib.sha256(body).hexdigest() if body else ""
    ):
        raise AuthenticationRequired("the body does not match its signature",
                                     challenge='Basic realm="flotilla admin"')
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise AdminInputInvalid("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise AdminInputInvalid("the body is a JSON object")
    return doc


def _text(doc: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise AdminInputInvalid(f"{key}: expected a non-empty string")
    return value


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json",
                    headers={"Cache-Control": "no-store"})


async def admin(rt: NodeServices, path: str) -> Response:
    if path.strip("/").split("/")[0] in ("policies", "immutable-tags"):
        # Imported here: that module builds on this one's helpers, and maintainers
        # may use it, so it authenticates on its own.
        from node.api.admin_policies import policies_admin
        return await policies_admin(rt, path)
    who, signed = await _admin(rt)
    method = request.method
    parts = path.strip("/").split("/")
    body = await _json_body(signed) if method in ("POST", "PUT") else {}
    if parts[0] == "gc":
        return await gc_admin(rt, who, parts, body)
    audit = rt.gate.audit
    gate = rt.gate
    if parts[0] == "quotas":
        return await quota_admin(rt, who, parts, body)
    if parts == ["accounts"]:
        if method == "GET":
            view = gate.view()
            return _json({"accounts": [
                {"name": a.name, "robot": a.robot, "expires_at": a.expires_at,
                 "grants": [{"pattern": g.pattern, "role": g.role}
                            for g in view.grants.get(a.name, ())]}
                for a in sorted(view.accounts.values(), key=lambda a: a.name)
            ]})
        if method == "POST":
            return await _add_account(rt, who, body)
    if len(parts) == 2 and parts[0] == "accounts" and parts[1] == "import" and method == "POST":
        return await _import(rt, who, body)
    if len(parts) == 2 and parts[0] == "accounts" and method == "DELETE":
        name = parse_account_name(parts[1])
        await rt.engine.propose(DeleteAccount(name=name))
        audit.record("account_removed", who, account=name)
        return _json({"removed": name})
    if len(parts) == 3 and parts[0] == "accounts" and parts[2] == "password" and method == "PUT":
        name = parse_account_name(parts[1])
        account = (await gate.fresh_view()).accounts.get(name)
        if account is None or account.robot:
            raise NotFound(f"no user {name}")
        stored = check_stored_hash(_text(body, "password_hash"), robot=False)
        await rt.engine.propose(PutAccount(name=name, secret_hash=stored,
                                           expires_at=account.expires_at))
        audit.record("password_changed", who, account=name)
        return _json({"name": name})
    if parts == ["grants"]:
        if method == "GET":
            view = gate.view()
            return _json({"grants": [
                {"principal": p, "pattern": g.pattern, "role": g.role}
                for p, rules_ in sorted(view.grants.items()) for g in rules_
            ]})
        if method == "POST":
            principal = parse_account_name(_text(body, "principal"))
            role, pattern = parse_role(_text(body, "role")), parse_pattern(_text(body, "pattern"))
            await rt.engine.propose(PutGrant(principal=principal, role=role, pattern=pattern))
            audit.record("grant_added", who, account=principal, role=role, pattern=pattern)
            return _json({"principal": principal, "role": role, "pattern": pattern}, 201)
        if method == "DELETE":
            principal = parse_account_name(request.args.get("principal", ""))
            pattern = parse_pattern(request.args.get("pattern", ""))
            await rt.engine.propose(DeleteGrant(principal=principal, pattern=pattern))
            audit.record("grant_removed", who, account=principal, pattern=pattern)
            return _json({"principal": principal, "pattern": pattern})
    if parts == ["public"]:
        if method == "GET":
            return _json({"public": list(gate.view().public)})
        if method in ("POST", "DELETE"):
            text = _text(body, "pattern") if method == "POST" else request.args.get("pattern", "")
            pattern = parse_pattern(text or "")
            public = method == "POST"
            await rt.engine.propose(SetPublic(pattern=pattern, public=public))
            audit.record("public_added" if public else "public_removed", who, pattern=pattern)
            return _json({"pattern": pattern, "public": public}, 201 if public else 200)
    if parts == ["keys"] and method == "GET":
        return _json({"keys": [
            {"kid": k.kid, "current": k.retire_at is None, "retire_at": k.retire_at}
            for k in gate.view().keys.values()
        ]})
    if parts == ["keys", "rotate"] and method == "POST":
        kid, pem = new_signing_key()
        await rt.engine.propose(gate.signing_key_command(kid, pem))
        audit.record("signing_key_rotated", who, kid=kid)
        return _json({"kid": kid}, 201)
    if parts[0] in ("accounts", "grants", "public", "keys"):
        raise Unsupported(f"method {method} not allowed here")
    raise NotFound()


async def _add_account(rt: NodeServices, who: Caller, body: dict[str, Any]) -> Response:
    name = parse_account_name(_text(body, "name"))
    robot = body.get("robot") is True
    expires_at = body.get("expires_at")
    if expires_at is not None and (
        type(expires_at) is not int or not 0 <= expires_at <= MAX_UNIX_SECONDS
    ):
        raise AdminInputInvalid("expires_at: Unix seconds")
    role = body.get("role")
    if role is not None:
        role = parse_role(role)
    token = None
    if robot:
        token = new_robot_token()
        stored = hash_robot_token(token)
    else:
        stored = check_stored_hash(_text(body, "password_hash"), robot=False)
    await rt.engine.propose(PutAccount(
        name=name, robot=robot, secret_hash=stored, expires_at=expires_at,
        create_only=body.get("replace") is not True,
    ))
    if role is not None:
        await rt.engine.propose(PutGrant(principal=name, role=role, pattern=ALL_REPOSITORIES))
    rt.gate.audit.record("account_added", who, account=name, robot=robot,
                         role=role, expires_at=expires_at)
    answer: dict[str, Any] = {"name": name, "robot": robot, "expires_at": expires_at}
    if token is not None:
        answer["token"] = token  # shown this once; only its hash is kept
    return _json(answer, 201)


async def _import(rt: NodeServices, who: Caller, body: dict[str, Any]) -> Response:
    users = body.get("users")
    if not isinstance(users, dict) or len(users) > MAX_IMPORT:
        raise AdminInputInvalid(f"users: a map of at most {MAX_IMPORT} name → bcrypt hash")
    added, existing = [], []
    for name, stored in users.items():
        if not isinstance(stored, str):
            raise AdminInputInvalid(f"{str(name)[:64]}: the hash is a string")
        name = parse_account_name(name)
        check_stored_hash(stored, robot=False)
        try:
            await rt.engine.propose(PutAccount(name=name, secret_hash=stored, create_only=True))
        except Refused:
            existing.append(name)
            continue
        added.append(name)
    rt.gate.audit.record("accounts_imported", who, accounts=added, skipped_existing=existing)
    return _json({"added": added, "existing": existing})
