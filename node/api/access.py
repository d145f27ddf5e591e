"""Access control at the HTTP edge: the caller of the current request, the check each
route's action needs, and the audit line of each change a request made.

The caller is established once per request (`caller_of_request`) and kept in a
context variable for the few handlers that look at it again (the catalog
shows only what the caller may pull; a cross-repository mount needs pull on
its source). An upload relayed by another node carries no client
credentials, only that node's signature over the request: its caller is that
peer, which already checked its client.
"""

from __future__ import annotations

from contextvars import ContextVar

from quart import Response, request

from node.access.callers import PEER, Caller
from node.access.rules import DELETE, PULL, PUSH
from node.cluster.forward import FORWARDED
from node.cluster.peer_api import request_target
from node.services import NodeServices

current_caller: ContextVar[Caller | None] = ContextVar("current_caller", default=None)


def realm() -> str:
    """Where this node's token endpoint is, as the client reached this node."""
    return f"{request.scheme}://{request.host}/token"


def client_address() -> str:
    return (request.remote_addr or "")[:64]


async def caller_of_request(rt: NodeServices) -> Caller:
    """Who sent the current request; AuthenticationRequired or LoginThrottled if its
    credentials do not hold, PeerAuthFailed for a relay whose signature does not."""
    forwarded = request.headers.get(FORWARDED)
    if forwarded is not None:
        rt.peer_auth.verify(request.method, request_target(), request.headers,
                            node_id=rt.config.node_id)
        caller = Caller(PEER, forwarded[:64], client_address())
    else:
        caller = await rt.gate.authenticate(
            request.headers.get("Authorization"), client_address(), realm()
        )
    current_caller.set(caller)
    return caller


def caller() -> Caller:
    found = current_caller.get()
    assert found is not None, "caller_of_request runs before any /v2/ handler"
    return found


def may(rt: NodeServices, repo: str, action: str) -> bool:
    """Whether the current caller may `action` on `repo` (without raising)."""
    who = caller()
    if who.token_access is not None and not rt.gate.open and who.kind != PEER:
        return action in who.token_access.get(repo, ())
    return action in rt.gate.allowed(who, repo)


# What each change a /v2/ request makes is called in the audit log, by method and the
# route's action; reads are not audited.
AUDITED = {("PUT", PUSH): "push", ("POST", PUSH): "push", ("PATCH", PUSH): None,
           ("DELETE", DELETE): "delete", ("DELETE", PUSH): "cancel_upload"}


def audit_change(rt: NodeServices, who: Caller, action: str, name: str | None,
                 params: dict[str, str], response: Response,
                 previous_digest: str | None) -> None:
    """One audit line for a change the current request made (and succeeded at)."""
    if who.kind == PEER or response.status_code >= 300:
        return
    what = AUDITED.get((request.method, action))
    if what is None:
        return
    digest = response.headers.get("Docker-Content-Digest") or params.get("digest")
    reference = params.get("reference")
    tag = reference if reference is not None and ":" not in reference else None
    if what == "push" and "reference" in params:
        what = "tag_move" if previous_digest not in (None, digest) and tag else "push_manifest"
    elif what == "push" and request.args.get("mount") and response.status_code == 201:
        what = "mount_blob"
    elif what == "push":
        if response.status_code != 201:
            return  # an upload session opened or fed: the push is audited when it ends
        what = "push_blob"
    elif what == "delete":
        what = "delete_manifest" if "reference" in params else "delete_blob"
        if reference is not None and ":" not in reference:
            what = "delete_tag"
    rt.gate.audit.record(
        what, who, repository=name, digest=digest, tag=tag, previous_digest=previous_digest
        if what == "tag_move" else None,
        source=request.args.get("from") if what == "mount_blob" else None,
    )


__all__ = ["DELETE", "PULL", "PUSH", "audit_change", "caller", "caller_of_request", "may",
           "realm"]
