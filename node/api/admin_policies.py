"""`/admin/policies` and `/admin/immutable-tags`: retention policies and immutable tags.

Admins manage every rule; a maintainer manages the rules whose repository
pattern its grants give it MANAGE on (a grant on `team/*` covers a rule on
`team/*` or `team/app`, not one on `*`). Each change is a command through
Raft and a line in the audit log. `test` answers what the policy would
delete now from the local state, with the very function the state machine
applies; `apply` runs every policy now, as the schedule does, and what it
deleted is written to the audit log of this node.

    GET    /admin/policies                       the policies this caller manages
    POST   /admin/policies                       {pattern, keep_last, older_than, keep,
                                                  only, untagged_older_than}  (made or replaced)
    DELETE /admin/policies?pattern=
    GET    /admin/policies/test?pattern=         {tags: [...], manifests: [...]} it deletes now
    POST   /admin/policies/apply                 (admins) every policy now → what went
    GET    /admin/immutable-tags · POST {pattern, exclude} · DELETE ?pattern=
"""

from __future__ import annotations

import time
from typing import Any

from quart import Response, request

from consensus.engine import (
    MAX_TAG_PATTERNS,
    DeleteImmutableTags,
    DeleteRetentionPolicy,
    ImmutableTags,
    PutImmutableTags,
    PutRetentionPolicy,
    RetentionPolicy,
    TagPatternInvalid,
    check_tag_pattern,
)
from node.access.errors import AccessDenied, AdminInputInvalid
from node.access.rules import MANAGE, parse_pattern
from node.api.admin_requests import Requester, json_body, json_response
from node.api.errors import NotFound, PolicyUnknown, Unsupported
from node.cluster.retention import apply_retention_now
from node.services import NodeServices

MAX_AGE_SECONDS = 100 * 366 * 86400  # a century: past it, an age is a typo
MAX_KEEP_LAST = 1_000_000

SECTIONS = ("policies", "immutable-tags")


class _Manager:
    """Who is asking, and which patterns it may manage: an admin (or the cluster
    secret) every pattern, another account those its grants give it MANAGE on."""

    def __init__(self, rt: NodeServices, requester: Requester) -> None:
        self.rt, self.caller, self.admin = rt, requester.caller, requester.admin

    def manages(self, pattern: str) -> bool:
        return self.admin or MANAGE in self.rt.gate.allowed(self.caller, pattern)

    def require(self, pattern: str) -> None:
        if not self.manages(pattern):
            raise AccessDenied(f"{self.caller.name} may not manage rules on {pattern}")


def _age(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_AGE_SECONDS:
        raise AdminInputInvalid(f"{key}: seconds, from 0 to {MAX_AGE_SECONDS}")
    return value


def _tag_patterns(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_TAG_PATTERNS:
        raise AdminInputInvalid(f"{key}: a list of at most {MAX_TAG_PATTERNS} tag regexes")
    for item in value:
        if not isinstance(item, str):
            raise AdminInputInvalid(f"{key}: each tag regex is a string")
        try:
            check_tag_pattern(item)
        except TagPatternInvalid as exc:
            raise AdminInputInvalid(f"{key}: {exc}") from None
    return value


def _pattern(text: object) -> str:
    if not isinstance(text, str) or not text:
        raise AdminInputInvalid("pattern: a repository name or glob")
    return parse_pattern(text)


def policy_doc(policy: RetentionPolicy) -> dict[str, Any]:
    return {
        "pattern": policy.pattern, "keep_last": policy.keep_last,
        "older_than": policy.older_than, "keep": list(policy.keep),
        "only": list(policy.only), "untagged_older_than": policy.untagged_older_than,
    }


def _rule_doc(rule: ImmutableTags) -> dict[str, Any]:
    return {"pattern": rule.pattern, "exclude": list(rule.exclude)}


async def policies_admin(rt: NodeServices, requester: Requester, path: str) -> Response:
    manager = _Manager(rt, requester)
    method = request.method
    parts = path.strip("/").split("/")
    body = await json_body(requester)
    if parts[0] == "policies":
        return await _policies(rt, manager, method, parts, body)
    return await _immutable(rt, manager, method, parts, body)


async def _policies(rt: NodeServices, manager: _Manager, method: str, parts: list[str],
                    body: dict[str, Any]) -> Response:
    queries = rt.engine.queries
    audit = rt.gate.audit
    if parts == ["policies"]:
        if method == "GET":
            await rt.engine.barrier()
            return json_response({"policies": [policy_doc(p) for p in queries.retention_policies()
                                       if manager.manages(p.pattern)]})
        if method in ("POST", "PUT"):
            pattern = _pattern(body.get("pattern"))
            manager.require(pattern)
            keep_last = body.get("keep_last")
            if keep_last is not None and (
                type(keep_last) is not int or not 0 <= keep_last <= MAX_KEEP_LAST
            ):
                raise AdminInputInvalid(f"keep_last: a count from 0 to {MAX_KEEP_LAST}")
            command = PutRetentionPolicy(
                pattern=pattern, keep_last=keep_last, older_than=_age(body, "older_than"),
                keep=_tag_patterns(body, "keep"), only=_tag_patterns(body, "only"),
                untagged_older_than=_age(body, "untagged_older_than"),
            )
            if (command.keep_last, command.older_than, command.untagged_older_than) == (
                None, None, None
            ):
                raise AdminInputInvalid(
                    "a policy sets keep_last, older_than or untagged_older_than")
            await rt.engine.propose(command)
            doc = policy_doc(RetentionPolicy(
                pattern, command.keep_last, command.older_than, tuple(command.keep),
                tuple(command.only), command.untagged_older_than))
            audit.record("retention_policy_set", manager.caller, **doc)
            return json_response(doc, 201)
        if method == "DELETE":
            pattern = _pattern(request.args.get("pattern", ""))
            manager.require(pattern)
            await rt.engine.propose(DeleteRetentionPolicy(pattern=pattern))
            audit.record("retention_policy_removed", manager.caller, pattern=pattern)
            return json_response({"removed": pattern})
    if parts == ["policies", "test"] and method == "GET":
        pattern = _pattern(request.args.get("pattern", ""))
        manager.require(pattern)
        await rt.engine.barrier()
        policy = next((p for p in queries.retention_policies() if p.pattern == pattern), None)
        if policy is None:
            raise PolicyUnknown(detail={"pattern": pattern})
        plan = queries.retention_plan(int(time.time()), [policy])
        return json_response({
            "pattern": pattern,
            "tags": [{"repository": repo, "tag": t} for repo, d in plan for t in d.tags],
            "manifests": [{"repository": repo, "digest": m}
                          for repo, d in plan for m in d.manifests],
        })
    if parts == ["policies", "apply"] and method == "POST":
        if not manager.admin:
            raise AccessDenied(f"{manager.caller.name} is not an admin")
        deleted = await apply_retention_now(rt.engine, rt.gate.audit, manager.caller)
        return json_response(deleted)
    if parts[0] == "policies":
        raise Unsupported(f"method {method} not allowed here")
    raise NotFound()


async def _immutable(rt: NodeServices, manager: _Manager, method: str, parts: list[str],
                     body: dict[str, Any]) -> Response:
    audit = rt.gate.audit
    if parts != ["immutable-tags"]:
        raise NotFound()
    if method == "GET":
        await rt.engine.barrier()
        rules = rt.engine.queries.immutable_tag_rules()
        return json_response({"rules": [_rule_doc(r) for r in rules
                                        if manager.manages(r.pattern)]})
    if method in ("POST", "PUT"):
        pattern = _pattern(body.get("pattern"))
        manager.require(pattern)
        exclude = _tag_patterns(body, "exclude")
        await rt.engine.propose(PutImmutableTags(pattern=pattern, exclude=exclude))
        audit.record("immutable_tags_set", manager.caller, pattern=pattern, exclude=exclude)
        return json_response({"pattern": pattern, "exclude": exclude}, 201)
    if method == "DELETE":
        pattern = _pattern(request.args.get("pattern", ""))
        manager.require(pattern)
        await rt.engine.propose(DeleteImmutableTags(pattern=pattern))
        audit.record("immutable_tags_removed", manager.caller, pattern=pattern)
        return json_response({"removed": pattern})
    raise Unsupported(f"method {method} not allowed here")
