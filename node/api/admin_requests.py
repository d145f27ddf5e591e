"""What every `/admin/…` handler needs first: who is asking, its JSON body, a JSON answer.

A request proves the cluster secret (signed the way peers sign theirs, the body
digest included) or carries an account's HTTP Basic credentials. `identify`
tells which, once per request; the admin handlers then ask `require_admin`,
and the policy handlers ask what the account may manage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from quart import Response, request

from node.access.callers import SECRET, Caller
from node.access.errors import AccessDenied, AdminInputInvalid, AuthenticationRequired
from node.api.access import client_address, realm
from node.api.request_bodies import read_body_bounded
from node.cluster.auth import SIGNATURE_HEADER
from node.cluster.peer_api import request_target
from node.services import NodeServices

MAX_ADMIN_BODY = 4 << 20  # an htpasswd import of some ten thousand users
ADMIN_CHALLENGE = 'Basic realm="flotilla admin"'


@dataclass(frozen=True, slots=True)
class Requester:
    """Who made an admin request, and the body digest it signed when it proved the secret."""

    caller: Caller
    admin: bool  # the cluster secret, or an account with the admin role on `*`
    signed_digest: str | None = None


async def identify(rt: NodeServices) -> Requester:
    """The caller of this request: the cluster secret or an authenticated account
    (401 with the admin challenge when neither)."""
    if SIGNATURE_HEADER in request.headers:
        signed_digest = rt.peer_auth.verify(
            request.method, request_target(), request.headers, node_id=rt.config.node_id
        )
        return Requester(Caller(SECRET, "", client_address()), True, signed_digest)
    caller = await rt.gate.authenticate(
        request.headers.get("Authorization"), client_address(), realm()
    )
    if rt.gate.is_admin(caller):
        return Requester(caller, True)
    if not caller.is_account:
        raise AuthenticationRequired("an admin account or the cluster secret is required",
                                     challenge=ADMIN_CHALLENGE)
    return Requester(caller, False)


def require_admin(requester: Requester) -> Caller:
    """The admin making the request, or 403 for an account that is not one."""
    if not requester.admin:
        raise AccessDenied(f"{requester.caller.name} is not an admin")
    return requester.caller


async def json_body(requester: Requester) -> dict[str, Any]:
    """The request's JSON object (bounded), checked against the digest a secret signed."""
    if request.method not in ("POST", "PUT"):
        return {}
    body = await read_body_bounded(MAX_ADMIN_BODY, "admin request")
    if requester.signed_digest is not None and requester.signed_digest != (
        hashlib.sha256(body).hexdigest() if body else ""
    ):
        raise AuthenticationRequired("the body does not match its signature",
                                     challenge=ADMIN_CHALLENGE)
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise AdminInputInvalid("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise AdminInputInvalid("the body is a JSON object")
    return doc


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json",
                    headers={"Cache-Control": "no-store"})
