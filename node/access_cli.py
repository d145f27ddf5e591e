"""`flotilla user|robot|grant|revoke|grants|repo|keys …`: access control of a running cluster.

Each command is one request to the admin API (`/admin/…`, node/api/admin.py) of
any node; the change is replicated, so it holds on every node once printed.
Admin commands authenticate as an admin account (`--as NAME`, its password
asked for, or read from `--as-password-file`) or with the cluster secret
(`--secret-file`), which is how the first admin is made. Passwords are hashed
here, with argon2id, before they leave this machine.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from node.access.passwords import hash_password, parse_htpasswd
from node.cluster.auth import SecretFileRefused, load_or_create_secret
from node.cluster.client import call_sync

DURATION = re.compile(r"([0-9]+)([smhdw])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MIN_PASSWORD = 8


def parse_duration(text: str) -> int:
    """Seconds in `90d`, `12h`, `30m`, `45s` or `2w`."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: a number and one of s m h d w, e.g. 90d")
    return int(match.group(1)) * UNITS[match.group(2)]


def add_admin_command(parent: argparse._SubParsersAction, name: str, text: str
                      ) -> argparse.ArgumentParser:
    """A command that makes one admin API request: --url and how to authenticate."""
    parser = parent.add_parser(name, help=text, description=text)
    parser.add_argument("--url", required=True, help="URL of any node")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--secret-file", dest="secret_file", type=Path,
                     help="authenticate with the cluster secret")
    who.add_argument("--as", dest="admin", metavar="NAME",
                     help="authenticate as this admin account (password asked for)")
    parser.add_argument("--as-password-file", dest="admin_password_file", type=Path,
                        help="read the admin's password from this file")
    parser.add_argument("--ca-file", dest="ca_file", type=Path,
                        help="CA certificate that signed the node's TLS certificate")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def add_access_commands(commands: argparse._SubParsersAction) -> None:
    """The access-control commands, beside `serve` and `cluster`."""
    command = add_admin_command

    user = commands.add_parser("user", help="user accounts").add_subparsers(
        dest="action", required=True)
    add = command(user, "add", "make a user (asks for its password)")
    add.add_argument("name")
    add.add_argument("--role", choices=["reader", "writer", "maintainer", "admin"],
                     help="also grant this role on every repository (*)")
    add.add_argument("--password-stdin", dest="password_stdin", action="store_true",
                     help="read the new user's password from standard input")
    passwd = command(user, "passwd", "set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", dest="password_stdin", action="store_true")
    command(user, "remove", "remove a user and its grants").add_argument("name")
    command(user, "list", "accounts and their grants")
    imported = command(user, "import-htpasswd", "add the bcrypt users of an htpasswd file")
    imported.add_argument("file", type=Path)

    robot = commands.add_parser("robot", help="robot accounts (tokens)").add_subparsers(
        dest="action", required=True)
    radd = command(robot, "add", "make a robot; prints its token once")
    radd.add_argument("name")
    radd.add_argument("--expires", type=parse_duration, default=parse_duration("90d"),
                      help="lifetime, e.g. 90d (default), 12h, 2w")
    command(robot, "remove", "remove a robot and its grants").add_argument("name")
    command(robot, "list", "accounts and their grants")

    grant = command(commands, "grant", "give an account a role on repositories")
    grant.add_argument("principal")
    grant.add_argument("role", choices=["reader", "writer", "maintainer", "admin"])
    grant.add_argument("pattern", help="a repository name or glob: team/app, 'team/*', '*'")
    revoke = command(commands, "revoke", "take a grant away")
    revoke.add_argument("principal")
    revoke.add_argument("pattern")
    command(commands, "grants", "every grant")

    repo = commands.add_parser("repo", help="public repositories").add_subparsers(
        dest="action", required=True)
    command(repo, "public", "allow anonymous pulls of matching repositories").add_argument(
        "pattern")
    command(repo, "private", "stop anonymous pulls of a pattern").add_argument("pattern")
    command(repo, "list", "the public patterns")

    keys = commands.add_parser("keys", help="token signing keys").add_subparsers(
        dest="action", required=True)
    command(keys, "rotate", "sign new tokens with a new key (old tokens stay valid)")
    command(keys, "list", "keys that verify tokens")


class AdminClient:
    """Requests to the admin API, with the secret's signature or an admin's Basic login."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.base = args.url.rstrip("/")
        self.verify: Any = str(args.ca_file) if args.ca_file else True
        self.secret: bytes | None = None
        self.auth: tuple[str, str] | None = None
        if args.secret_file is not None:
            if not args.secret_file.exists():
                raise SystemExit(f"flotilla: no cluster secret at {args.secret_file}")
            try:
                self.secret = load_or_create_secret(args.secret_file)
            except SecretFileRefused as exc:
                raise SystemExit(f"flotilla: {exc}") from None
        elif args.admin is not None:
            if args.admin_password_file is not None:
                password = args.admin_password_file.read_text().rstrip("\n")
            else:
                password = getpass.getpass(f"password of {args.admin}: ")
            self.auth = (args.admin, password)

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None,
                query: dict[str, str] | None = None) -> httpx.Response:
        url = f"{self.base}/admin/{path}" + (f"?{urlencode(query)}" if query else "")
        if self.secret is not None:
            return call_sync(self.secret, method, url, payload)
        return httpx.request(method, url, json=payload, auth=self.auth, timeout=30,
                             verify=self.verify)


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"new password of {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("flotilla: the passwords differ")
    if len(password) < MIN_PASSWORD:
        raise SystemExit(f"flotilla: a password has at least {MIN_PASSWORD} characters")
    return password


def report_failure(response: httpx.Response) -> int:
    try:
        errors = response.json().get("errors") or []
        # The detail names what the message is about (the unknown account, the grant).
        message = "; ".join(
            str(e.get("message")) + (f": {e['detail']}" if isinstance(e.get("detail"), str)
                                     else "")
            for e in errors
        ) or response.text
    except (ValueError, AttributeError):
        message = response.text[:400]
    print(f"flotilla: {response.status_code}: {message}", file=sys.stderr)
    return 1


def _print_accounts(doc: dict[str, Any], robots: bool | None) -> None:
    for account in doc["accounts"]:
        if robots is not None and account["robot"] != robots:
            continue
        kind = "robot" if account["robot"] else "user"
        expires = account.get("expires_at")
        until = f", expires {time.strftime('%Y-%m-%d', time.gmtime(expires))}" if expires else ""
        grants = ", ".join(f"{g['role']} on {g['pattern']}" for g in account["grants"])
        print(f"{account['name']} ({kind}{until}): {grants or 'no grants'}")


def answer(client: AdminClient, call: Callable[[], Shown], as_json: bool) -> int:
    """Make one admin request and print its answer (JSON, or as `call` says to show it);
    the exit status of the command."""
    try:
        response, show = call()
    except httpx.HTTPError as exc:
        print(f"flotilla: {client.base}: {exc}", file=sys.stderr)
        return 1
    if response.status_code >= 300:
        return report_failure(response)
    doc = response.json()
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        show(doc)
    return 0


def run_access_command(args: argparse.Namespace) -> int:
    client = AdminClient(args)
    group, action = args.command, getattr(args, "action", None)
    return answer(client, lambda: _call(client, group, action, args), args.json)


Shown = tuple[httpx.Response, Callable[[dict[str, Any]], object]]


def _call(client: AdminClient, group: str, action: str | None,
          args: argparse.Namespace) -> Shown:
    """The request for one command, and how to print its answer."""
    if group in ("user", "robot") and action == "list":
        robots = None if group == "user" else True
        return client.request("GET", "accounts"), lambda d: _print_accounts(d, robots)
    if group == "user" and action == "add":
        payload: dict[str, Any] = {"name": args.name,
                                   "password_hash": hash_password(_new_password(args))}
        if args.role:
            payload["role"] = args.role
        return client.request("POST", "accounts", payload), lambda d: print(
            f"user {d['name']} added" + (f" with role {args.role} on *" if args.role else ""))
    if group == "user" and action == "passwd":
        payload = {"password_hash": hash_password(_new_password(args))}
        return client.request("PUT", f"accounts/{args.name}/password", payload), lambda d: print(
            f"password of {d['name']} changed")
    if group in ("user", "robot") and action == "remove":
        return client.request("DELETE", f"accounts/{args.name}"), lambda d: print(
            f"{d['removed']} removed")
    if group == "user" and action == "import-htpasswd":
        users, skipped = parse_htpasswd(args.file.read_text())
        for name in skipped:
            print(f"skipped {name}: not a bcrypt entry or not a usable name", file=sys.stderr)
        return client.request("POST", "accounts/import", {"users": users}), lambda d: print(
            f"imported {len(d['added'])} users"
            + (f"; already there: {', '.join(d['existing'])}" if d["existing"] else ""))
    if group == "robot" and action == "add":
        payload = {"name": args.name, "robot": True,
                   "expires_at": int(time.time()) + args.expires}
        return client.request("POST", "accounts", payload), lambda d: print(
            f"robot {d['name']} added; its token (shown only now):\n{d['token']}")
    if group == "grant":
        payload = {"principal": args.principal, "role": args.role, "pattern": args.pattern}
        return client.request("POST", "grants", payload), lambda d: print(
            f"{d['principal']} is {d['role']} on {d['pattern']}")
    if group == "revoke":
        query = {"principal": args.principal, "pattern": args.pattern}
        return client.request("DELETE", "grants", query=query), lambda d: print(
            f"{d['principal']} no longer has a grant on {d['pattern']}")
    if group == "grants":
        return client.request("GET", "grants"), lambda d: [
            print(f"{g['principal']}: {g['role']} on {g['pattern']}") for g in d["grants"]]
    if group == "repo" and action == "list":
        return client.request("GET", "public"), lambda d: [print(p) for p in d["public"]]
    if group == "repo":
        if action == "public":
            response = client.request("POST", "public", {"pattern": args.pattern})
        else:
            response = client.request("DELETE", "public", query={"pattern": args.pattern})
        return response, lambda d: print(
            f"{d['pattern']}: {'public' if d['public'] else 'private'}")
    if group == "keys" and action == "rotate":
        return client.request("POST", "keys/rotate"), lambda d: print(
            f"new tokens are signed with key {d['kid']}")
    return client.request("GET", "keys"), lambda d: [
        print(f"{k['kid']}{' (current)' if k['current'] else ''}") for k in d["keys"]]
