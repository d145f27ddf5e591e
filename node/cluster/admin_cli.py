"""`flotilla cluster …`: status and membership changes, over the signed internal API."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from node.cluster.auth import SecretFileRefused, load_or_create_secret
from node.cluster.client import call_sync


def _secret(args: argparse.Namespace) -> bytes:
    if not args.secret_file.exists():
        print(f"flotilla: no cluster secret at {args.secret_file} (use --secret-file)",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_or_create_secret(args.secret_file)
    except SecretFileRefused as exc:
        print(f"flotilla: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _node_status(secret: bytes, url: str, node_id: str | None = None) -> dict[str, Any] | None:
    try:
        response = call_sync(
            secret, "GET", f"{url.rstrip('/')}/_cluster/status", node_id=node_id, timeout=3
        )
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def cluster_status(secret: bytes, url: str) -> dict[str, Any]:
    """The answering node's view, plus each member's own view (its health)."""
    first = _node_status(secret, url)
    if first is None:
        raise SystemExit(f"flotilla: {url} did not answer with a status")
    for member in first["members"]:
        http = member.get("http")
        view = _node_status(secret, f"http://{http}", member["node_id"]) if http else None
        member["reachable"] = view is not None
        if view is not None:
            member.update(
                role=view["role"], term=view["term"], commit_index=view["commit_index"],
                applied_index=view["applied_index"], leader_seen=view["leader"],
                chunks=view.get("chunks"), under_replicated=view.get("under_replicated"),
                peers=view.get("peers"), repair=view.get("repair"),
            )
    first["under_replicated_total"] = sum(
        (m.get("under_replicated") or {}).get("missing", 0) for m in first["members"]
    )
    etas = [(m.get("repair") or {}).get("eta_seconds") for m in first["members"]]
    # The cluster is healed when its slowest node is; unknown while any node cannot say.
    first["repair_eta_seconds"] = (
        None if not etas or any(e is None for e in etas) else max(etas)
    )
    return first


def _repair_line(repair: dict[str, Any] | None) -> str:
    if not repair:
        return "repair: ?"
    rate = repair.get("rate_bytes_per_second")
    eta = repair.get("eta_seconds")
    return (
        f"repair: {repair.get('state', '?')}, pass {repair.get('passes', '?')}"
        f"{'' if repair.get('last_pass_complete') in (None, True) else ' (incomplete)'}, "
        f"missing {repair.get('owned_missing_chunks', '?')}, "
        f"unowned {repair.get('unowned_held_chunks', '?')}, "
        f"repaired {repair.get('repaired_chunks', 0)}, dropped {repair.get('dropped_chunks', 0)}, "
        f"rate {'-' if rate is None else f'{rate / 2**20:.1f} MiB/s'}, "
        f"eta {'-' if eta is None else f'{eta:.0f} s'}"
    )


def _print_status(doc: dict[str, Any]) -> None:
    print(f"leader: {doc['leader'] or '(none)'}   term: {doc['term']}   "
          f"commit: {doc['commit_index']}   applied: {doc['applied_index']}   "
          f"(as seen by {doc['node_id']})")
    print(f"{'node':<8}{'zone':<10}{'voter':<7}{'role':<11}{'http':<22}"
          f"{'applied':>8}{'chunks':>9}{'MiB':>9}{'cached':>8}{'missing':>9}  health")
    for m in doc["members"]:
        health = "ok" if m.get("reachable") else "unreachable"
        chunks = m.get("chunks") or {}
        missing = (m.get("under_replicated") or {}).get("missing", "?")
        mib = chunks.get("stored_bytes")
        print(f"{m['node_id']:<8}{m.get('zone', '?'):<10}{'yes' if m['voter'] else 'no':<7}"
              f"{m.get('role', '?'):<11}{m.get('http', '?'):<22}"
              f"{m.get('applied_index', '?'):>8}{chunks.get('stored', '?'):>9}"
              f"{'?' if mib is None else round(mib / 2**20, 1):>9}"
              f"{chunks.get('cached', '?'):>8}{missing:>9}  {health}")
        if m.get("reachable"):
            print(f"{'':<8}  {_repair_line(m.get('repair'))}")
        for peer in m.get("peers") or []:
            rtt = "-" if peer["rtt_ms"] is None else f"{peer['rtt_ms']} ms"
            print(f"{'':<8}  -> {peer['node_id']:<8} {'up' if peer['up'] else 'DOWN':<5} "
                  f"rtt {rtt}")
    eta = doc.get("repair_eta_seconds")
    print(f"chunk copies missing (under-replication), all nodes: "
          f"{doc['under_replicated_total']}   repair ETA: "
          f"{'unknown' if eta is None else f'{eta:.0f} s'}")


def run_cluster_command(args: argparse.Namespace) -> int:
    secret = _secret(args)
    base = args.url.rstrip("/")
    try:
        if args.action == "status":
            doc = cluster_status(secret, base)
            if args.json:
                print(json.dumps(doc, indent=2))
            else:
                _print_status(doc)
            return 0
        if args.action == "add":
            payload = {"node_id": args.node_id, "raft": args.raft, "http": args.http,
                       "zone": args.zone}
            response = call_sync(secret, "POST", f"{base}/_cluster/members", payload)
        elif args.action == "remove":
            response = call_sync(secret, "DELETE", f"{base}/_cluster/members/{args.node_id}")
        else:
            response = call_sync(secret, "POST", f"{base}/_cluster/leader", {"to": args.to})
    except httpx.HTTPError as exc:
        print(f"flotilla: {base}: {exc}", file=sys.stderr)
        return 1
    print(response.text)
    return 0 if response.status_code == 200 else 1
