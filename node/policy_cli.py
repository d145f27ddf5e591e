"""`flotilla policy set|list|remove|test|apply` and `flotilla tags immutable set|list|remove`.

Retention policies and immutable-tag rules of a running cluster, through the
admin API of any node (`/admin/policies`, `/admin/immutable-tags`,
node/api/admin_policies.py), authenticated as `flotilla user` commands are:
an admin or a maintainer account (`--as NAME`), or the cluster secret. Ages
are written as durations (`30d`, `12h`); tag patterns are regexes searched
in the tag name (`'^v\\d+\\.\\d+\\.\\d+$'`, `^pr-`).
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx

from node.access_cli import AdminClient, add_admin_command, answer, parse_duration

POLICY_COMMANDS = ("policy", "tags")


def add_policy_commands(commands: argparse._SubParsersAction) -> None:
    policy = commands.add_parser("policy", help="retention policies").add_subparsers(
        dest="action", required=True)
    put = add_admin_command(policy, "set", "make or replace the retention policy of a pattern")
    put.add_argument("pattern", help="a repository name or glob: team/app, 'team/*'")
    put.add_argument("--keep-last", type=int, metavar="N",
                     help="keep the N most recently pushed tags")
    put.add_argument("--older-than", type=parse_duration, metavar="AGE",
                     help="delete tags pushed longer ago than AGE (e.g. 90d)")
    put.add_argument("--keep", action="append", default=[], metavar="REGEX",
                     help="never delete tags this regex finds (repeatable)")
    put.add_argument("--only", action="append", default=[], metavar="REGEX",
                     help="consider only tags this regex finds (repeatable)")
    put.add_argument("--untagged-older-than", type=parse_duration, metavar="AGE",
                     help="delete manifests no tag points at, pushed longer ago than AGE")
    add_admin_command(policy, "list", "the retention policies")
    add_admin_command(policy, "remove", "remove the policy of a pattern").add_argument("pattern")
    add_admin_command(policy, "test", "what the policy of a pattern would delete now").add_argument(
        "pattern")
    add_admin_command(policy, "apply", "apply every policy now, as the schedule does (admins)")

    tags = commands.add_parser("tags", help="tag rules").add_subparsers(
        dest="action", required=True)
    immutable = tags.add_parser("immutable", help="tags that cannot be moved").add_subparsers(
        dest="rule", required=True)
    rule = add_admin_command(immutable, "set", "make the tags of matching repositories immutable")
    rule.add_argument("pattern", help="a repository name or glob")
    rule.add_argument("--except", dest="exclude", action="append", default=[],
                      metavar="REGEX", help="tags this regex finds may still move (repeatable)")
    add_admin_command(immutable, "list", "the immutable-tag rules")
    add_admin_command(immutable, "remove", "remove the rule of a pattern").add_argument("pattern")


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _describe(p: dict[str, Any]) -> str:
    rules = []
    if p["keep_last"] is not None:
        rules.append(f"keep last {p['keep_last']}")
    if p["older_than"] is not None:
        rules.append(f"tags older than {_age(p['older_than'])}")
    if p["untagged_older_than"] is not None:
        rules.append(f"untagged older than {_age(p['untagged_older_than'])}")
    if p["keep"]:
        rules.append(f"always keep {' '.join(p['keep'])}")
    if p["only"]:
        rules.append(f"only {' '.join(p['only'])}")
    return f"{p['pattern']}: {'; '.join(rules)}"


def _print_deletions(doc: dict[str, Any]) -> None:
    for t in doc["tags"]:
        print(f"tag {t['repository']}:{t['tag']}")
    for m in doc["manifests"]:
        print(f"manifest {m['repository']}@{m['digest']}")
    print(f"{len(doc['tags'])} tags, {len(doc['manifests'])} untagged manifests")


def _call(client: AdminClient, args: argparse.Namespace) -> tuple[httpx.Response, Any]:
    if args.command == "policy":
        if args.action == "set":
            payload = {
                "pattern": args.pattern, "keep_last": args.keep_last,
                "older_than": args.older_than, "keep": args.keep, "only": args.only,
                "untagged_older_than": args.untagged_older_than,
            }
            return client.request("POST", "policies", payload), lambda d: print(_describe(d))
        if args.action == "list":
            return client.request("GET", "policies"), lambda d: [
                print(_describe(p)) for p in d["policies"]]
        if args.action == "remove":
            return client.request("DELETE", "policies", query={"pattern": args.pattern}), \
                lambda d: print(f"policy of {d['removed']} removed")
        if args.action == "test":
            return client.request("GET", "policies/test", query={"pattern": args.pattern}), \
                _print_deletions
        return client.request("POST", "policies/apply"), _print_deletions
    if args.rule == "set":
        payload = {"pattern": args.pattern, "exclude": args.exclude}
        return client.request("POST", "immutable-tags", payload), lambda d: print(
            f"tags of {d['pattern']} are immutable"
            + (f" except {' '.join(d['exclude'])}" if d["exclude"] else ""))
    if args.rule == "list":
        return client.request("GET", "immutable-tags"), lambda d: [
            print(r["pattern"] + (f" except {' '.join(r['exclude'])}" if r["exclude"] else ""))
            for r in d["rules"]]
    return client.request("DELETE", "immutable-tags", query={"pattern": args.pattern}), \
        lambda d: print(f"immutable-tag rule of {d['removed']} removed")


def run_policy_command(args: argparse.Namespace) -> int:
    client = AdminClient(args)
    return answer(client, lambda: _call(client, args), args.json)
