"""`flotilla quota set|list|remove`: caps on what a namespace may store.

Each command is one request to the admin API of any node (`/admin/quotas`,
node/api/admin_quotas.py), authenticated the way every admin command is
(node/access_cli.py). Sizes are read the way people write them: `10GiB`,
`500MB`, `1.5TiB` or a plain number of bytes.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from node.access_cli import AdminClient, Shown, add_admin_command, answer

SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?i?b?)", re.IGNORECASE)
POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """Bytes in `10GiB` (binary), `500MB` (decimal), `4096` or `4096B`."""
    match = SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 10GiB, 500MB or 4096")
    number, unit = match.group(1), match.group(2).lower()
    prefix = unit.rstrip("b").rstrip("i")
    binary = "i" in unit or unit in ("k", "m", "g", "t", "p")
    base = 1024 if binary else 1000
    return int(float(number) * base ** POWERS[prefix])


def format_size(n: int | None) -> str:
    # Written out here rather than imported: consensus.engine would add a second to
    # every `flotilla quota` command. Same units as the server's refusal messages.
    if n is None:
        return "no cap"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def add_quota_commands(commands: argparse._SubParsersAction) -> None:
    quota = commands.add_parser("quota", help="quotas per namespace").add_subparsers(
        dest="action", required=True)
    put = add_admin_command(quota, "set", "cap the bytes and repositories of a namespace")
    put.add_argument("pattern", metavar="NAMESPACE",
                     help="a namespace (team: team and team/...) or a glob ('team-*')")
    put.add_argument("--bytes", dest="max_bytes", type=parse_size,
                     help="bytes stored, each blob counted once: 10GiB, 500MB …")
    put.add_argument("--repos", dest="max_repos", type=int, help="number of repositories")
    add_admin_command(quota, "list", "every quota: usage and limits")
    add_admin_command(quota, "remove", "remove a namespace's quota").add_argument(
        "pattern", metavar="NAMESPACE")


def _print_quota(q: dict[str, Any]) -> None:
    repos = "no cap" if q["max_repos"] is None else str(q["max_repos"])
    print(f"{q['pattern']}: {format_size(q['used_bytes'])} of {format_size(q['max_bytes'])},"
          f" {q['used_repos']} of {repos} repositories")


def _show(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.action == "list":
        for q in doc["quotas"]:
            _print_quota(q)
    elif args.action == "remove":
        print(f"quota on {doc['removed']} removed")
    else:
        _print_quota(doc)


def run_quota_command(args: argparse.Namespace) -> int:
    client = AdminClient(args)
    if args.action == "set" and args.max_bytes is None and args.max_repos is None:
        print("flotilla: give --bytes, --repos or both", file=sys.stderr)
        return 2

    def call() -> Shown:
        if args.action == "set":
            response = client.request("POST", "quotas", {
                "pattern": args.pattern, "max_bytes": args.max_bytes,
                "max_repos": args.max_repos})
        elif args.action == "remove":
            response = client.request("DELETE", "quotas", query={"pattern": args.pattern})
        else:
            response = client.request("GET", "quotas")
        return response, lambda doc: _show(args, doc)

    return answer(client, call, args.json)
