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

from typing import Any

from quart import Response, request

from consensus.engine import DeleteAccount, DeleteGrant, PutAccount, PutGrant, Refused, SetPublic
from node.access.callers import Caller
from node.access.errors import AdminInputInvalid
from node.access.passwords import check_stored_hash, hash_robot_token, new_robot_token
from node.access.rules import ALL_REPOSITORIES, parse_account_name, parse_pattern, parse_role
from node.access.tokens import new_signing_key
from node.api.admin_gc import gc_admin
from node.api.admin_policies import policies_admin
from node.api.admin_quotas import quota_admin
from node.api.admin_requests import identify, json_body, json_response, require_admin
from node.api.errors import NotFound, Unsupported
from node.services import NodeServices

MAX_IMPORT = 20_000
MAX_UNIX_SECONDS = 2**63 - 1  # what a command and an SQLite integer hold


def _text(doc: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise AdminInputInvalid(f"{key}: expected a non-empty string")
    return value


async def admin(rt: NodeServices, path: str) -> Response:
    requester = await identify(rt)
    if path.strip("/").split("/")[0] in ("policies", "immutable-tags"):
        # Maintainers manage the rules of their repositories there, not only admins.
        return await policies_admin(rt, requester, path)
    who = require_admin(requester)
    method = request.method
    parts = path.strip("/").split("/")
    body = await json_body(requester)
    if parts[0] == "gc":
        return await gc_admin(rt, who, parts, body)
    audit = rt.gate.audit
    gate = rt.gate
    if parts[0] == "quotas":
        return await quota_admin(rt, who, parts, body)
    if parts == ["accounts"]:
        if method == "GET":
            view = gate.view()
            return json_response({"accounts": [
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
        return json_response({"removed": name})
    if len(parts) == 3 and parts[0] == "accounts" and parts[2] == "password" and method == "PUT":
        name = parse_account_name(parts[1])
        account = (await gate.fresh_view()).accounts.get(name)
        if account is None or account.robot:
            raise NotFound(f"no user {name}")
        stored = check_stored_hash(_text(body, "password_hash"), robot=False)
        await rt.engine.propose(PutAccount(name=name, secret_hash=stored,
                                           expires_at=account.expires_at))
        audit.record("password_changed", who, account=name)
        return json_response({"name": name})
    if parts == ["grants"]:
        if method == "GET":
            view = gate.view()
            return json_response({"grants": [
                {"principal": p, "pattern": g.pattern, "role": g.role}
                for p, rules_ in sorted(view.grants.items()) for g in rules_
            ]})
        if method == "POST":
            principal = parse_account_name(_text(body, "principal"))
            role, pattern = parse_role(_text(body, "role")), parse_pattern(_text(body, "pattern"))
            await rt.engine.propose(PutGrant(principal=principal, role=role, pattern=pattern))
            audit.record("grant_added", who, account=principal, role=role, pattern=pattern)
            return json_response({"principal": principal, "role": role, "pattern": pattern}, 201)
        if method == "DELETE":
            principal = parse_account_name(request.args.get("principal", ""))
            pattern = parse_pattern(request.args.get("pattern", ""))
            await rt.engine.propose(DeleteGrant(principal=principal, pattern=pattern))
            audit.record("grant_removed", who, account=principal, pattern=pattern)
            return json_response({"principal": principal, "pattern": pattern})
    if parts == ["public"]:
        if method == "GET":
            return json_response({"public": list(gate.view().public)})
        if method in ("POST", "DELETE"):
            text = _text(body, "pattern") if method == "POST" else request.args.get("pattern", "")
            pattern = parse_pattern(text or "")
            public = method == "POST"
            await rt.engine.propose(SetPublic(pattern=pattern, public=public))
            audit.record("public_added" if public else "public_removed", who, pattern=pattern)
            return json_response({"pattern": pattern, "public": public}, 201 if public else 200)
    if parts == ["keys"] and method == "GET":
        return json_response({"keys": [
            {"kid": k.kid, "current": k.retire_at is None, "retire_at": k.retire_at}
            for k in gate.view().keys.values()
        ]})
    if parts == ["keys", "rotate"] and method == "POST":
        kid, pem = new_signing_key()
        await rt.engine.propose(gate.signing_key_command(kid, pem))
        audit.record("signing_key_rotated", who, kid=kid)
        return json_response({"kid": kid}, 201)
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
    return json_response(answer, 201)


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
    return json_response({"added": added, "existing": existing})
