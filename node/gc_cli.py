"""`flotilla gc run|status`: garbage collection by hand, through the admin API.

`run` asks any node for one collection (or, with `--dry-run`, for what one
would free: blobs, chunks and bytes per node), then follows every node's
chunk sweep with a progress bar until each has swept the run's epoch. A node
that cannot be reached is named and left to sweep when it is back. `status`
shows the last runs and each node's sweep. Authentication is the access
commands' (node/access_cli.py's AdminClient): the cluster secret or an admin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

from node.access_cli import AdminClient, add_admin_command, parse_duration, report_failure

POLL_SECONDS = 0.5
BAR_WIDTH = 30


def _duration(text: str) -> int:
    return 0 if text.strip() == "0" else parse_duration(text)


def add_gc_commands(commands: argparse._SubParsersAction) -> None:
    actions = commands.add_parser("gc", help="garbage collection").add_subparsers(
        dest="action", required=True)
    for name, text in (("run", "collect what no manifest needs, on every node"),
                       ("status", "the last collections and each node's chunk sweep")):
        parser = add_admin_command(actions, name, text)
        if name == "run":
            parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                                help="only show what would be freed")
            parser.add_argument("--grace", type=_duration, default=None,
                                help="spare blobs linked this recently (default gc_grace; "
                                     "0: none, when no push is under way), e.g. 30m")
            parser.add_argument("--timeout", type=float, default=600.0,
                                help="seconds to follow the nodes' sweeps")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print_run(doc: dict[str, Any]) -> None:
    verb = "would remove" if doc.get("dry_run") else "removed"
    print(f"{verb} {doc['blobs']} blobs ({_size(doc['bytes'])}) and {doc['links']} "
          f"repository links, grace {doc['grace_seconds']} s")
    for node_id, freed in sorted((doc.get("nodes") or {}).items()):
        print(f"  {node_id}: {freed['chunks']} chunks, {_size(freed['bytes'])}")


def _print_status(doc: dict[str, Any]) -> None:
    runs = doc.get("runs") or []
    if not runs:
        print("no garbage collection yet")
    for run in runs[:5]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run["now"]))
        print(f"epoch {run['epoch']} at {when} UTC: {run['blobs']} blobs "
              f"({_size(run['bytes'])}), {run['links']} links, grace {run['grace_seconds']} s")
    for node_id, sweep in doc["nodes"].items():
        if sweep is None:
            print(f"  {node_id}: unreachable")
            continue
        print(f"  {node_id}: swept epoch {sweep['swept_epoch']} of {sweep['epoch']}, "
              f"{sweep['state']}, last sweep freed {sweep['last_chunks_freed']} chunks "
              f"({_size(sweep['last_bytes_freed'])})")


def _bar(done: int, total: int) -> str:
    filled = BAR_WIDTH if total == 0 else BAR_WIDTH * done // total
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + f"] {done}/{total}"


def _follow(client: AdminClient, epoch: int, timeout: float, quiet: bool) -> dict[str, Any]:
    """Poll every node's sweep until each has swept `epoch` (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = client.request("GET", "gc/status").json()
        nodes = doc["nodes"]
        done = [n for n, s in nodes.items() if s and s["swept_epoch"] >= epoch]
        if not quiet:
            examined = sum(s["examined"] for s in nodes.values() if s and s["state"] == "sweeping")
            total = sum(s["to_examine"] for s in nodes.values() if s and s["state"] == "sweeping")
            detail = f", {examined}/{total} chunks examined" if total else ""
            print(f"\rsweeping {_bar(len(done), len(nodes))} nodes{detail}   ", end="",
                  file=sys.stderr, flush=True)
        if len(done) == len(nodes) or time.monotonic() > deadline:
            if not quiet:
                print(file=sys.stderr)
            return doc
        time.sleep(POLL_SECONDS)


def run_gc_command(args: argparse.Namespace) -> int:
    client = AdminClient(args)
    try:
        if args.action == "status":
            response = client.request("GET", "gc/status")
            if response.status_code >= 300:
                return report_failure(response)
            doc = response.json()
            print(json.dumps(doc, indent=2)) if args.json else _print_status(doc)
            return 0
        payload: dict[str, Any] = {"dry_run": args.dry_run}
        if args.grace is not None:
            payload["grace_seconds"] = args.grace
        response = client.request("POST", "gc/run", payload)
        if response.status_code >= 300:
            return report_failure(response)
        doc = response.json()
        if not args.dry_run:
            status = _follow(client, doc["epoch"], args.timeout, quiet=args.json)
            doc["nodes"] = {
                node_id: None if sweep is None else {
                    "chunks": sweep["last_chunks_freed"], "bytes": sweep["last_bytes_freed"],
                    "swept": sweep["swept_epoch"] >= doc["epoch"],
                }
                for node_id, sweep in status["nodes"].items()
            }
    except httpx.HTTPError as exc:
        print(f"flotilla: {client.base}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    _print_run({**doc, "nodes": {n: f for n, f in doc["nodes"].items() if f}}
               if not args.dry_run else doc)
    for node_id, freed in doc["nodes"].items():
        if freed is None:
            print(f"  {node_id}: unreachable (sweeps when it is back)")
        elif not args.dry_run and not freed["swept"]:
            print(f"  {node_id}: still sweeping")
    return 0
