"""`flotilla cluster …`: status and membership changes, over the signed internal API."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import httpx

from node.cluster.auth import SecretFileRefused, load_or_create_secret
from node.cluster.client import call_sync
from node.cluster.cluster_tls import peer_url


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


def _uses_tls(url: str) -> bool:
    """Whether the cluster behind `url` speaks TLS: the URL the user gave says."""
    return url.startswith("https://")


def cluster_status(secret: bytes, url: str) -> dict[str, Any]:
    """The answering node's view, plus each member's own view (its health)."""
    first = _node_status(secret, url)
    if first is None:
        raise SystemExit(f"flotilla: {url} did not answer with a status")
    for member in first["members"]:
        http = member.get("http")
        view = (_node_status(secret, peer_url(http, "", tls=_uses_tls(url)), member["node_id"])
                if http else None)
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
    # Copies owed to members that do not answer, as the answering node counts them.
    first["copies_on_unreachable_members"] = (
        (first.get("under_replicated") or {}).get("on_unreachable", 0)
        if any(not m["reachable"] for m in first["members"]) else 0
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
        if m.get("draining"):
            health += ", DRAINING"
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
    if doc.get("copies_on_unreachable_members"):
        print(f"chunk copies on unreachable members: {doc['copies_on_unreachable_members']} "
              "(restored by the others once the member is removed or drained, "
              "or back when it returns)")


DRAIN_POLL_SECONDS = 1.0  # between looks at the cluster while waiting for a drain
DRAIN_LINE_SECONDS = 5.0  # between progress lines when the output is not a terminal
UNREACHABLE_SECONDS = 20.0  # the drained node silent this long ends the wait


def _member(doc: dict[str, Any], node_id: str) -> dict[str, Any] | None:
    return next((m for m in doc["members"] if m["node_id"] == node_id), None)


class DrainProgress:
    """What `drain --wait` shows: the bytes the node still stores out of those it
    stored when the wait began, the chunk copies missing across the cluster, an ETA."""

    def __init__(self, node_id: str, out: TextIO = sys.stdout) -> None:
        self.node_id = node_id
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.first_bytes: int | None = None
        self.last_line = 0.0

    def line(self, stored: int | None, missing: int, eta: float | None) -> str:
        if stored is not None:
            self.first_bytes = max(self.first_bytes or 0, stored)
        total = self.first_bytes or 0
        done = 1.0 if not total else max(0.0, 1 - (stored or 0) / total)
        if eta is None and stored is not None and 0 < done < 1:
            elapsed = time.monotonic() - self.started
            eta = elapsed / done * (1 - done)
        width = 30
        bar = "#" * int(done * width) + "-" * (width - int(done * width))
        held = "?" if stored is None else f"{stored / 2**20:.1f}"
        return (f"draining {self.node_id} [{bar}] {done * 100:5.1f}%  "
                f"{held} of {total / 2**20:.1f} MiB still on {self.node_id}  "
                f"copies missing: {missing}  ETA: {'?' if eta is None else f'{eta:.0f} s'}")

    def show(self, stored: int | None, missing: int, eta: float | None) -> None:
        text = self.line(stored, missing, eta)
        now = time.monotonic()
        if self.tty:
            self.out.write("\r" + text.ljust(110))
            self.out.flush()
        elif now - self.last_line >= DRAIN_LINE_SECONDS:
            self.last_line = now
            print(text, file=self.out, flush=True)

    def finish(self, text: str) -> None:
        if self.tty:
            self.out.write("\n")
        print(text, file=self.out, flush=True)


def _observer_urls(doc: dict[str, Any], node_id: str, base: str) -> list[str]:
    """Where to watch the drain from: members other than the drained one (whose
    own view stops changing once it is removed), then the URL given."""
    urls = [peer_url(m["http"], "", tls=_uses_tls(base)) for m in doc["members"]
            if m["node_id"] != node_id and m.get("http")]
    return urls + [base]


def wait_for_drain(
    secret: bytes, base: str, node_id: str, timeout: float | None, out: TextIO = sys.stdout
) -> int:
    """Poll the cluster until `node_id` is no longer a member: 0, or 1 with a message
    on timeout or when the drained node stops answering before it was removed."""
    progress = DrainProgress(node_id, out)
    deadline = None if timeout is None else time.monotonic() + timeout
    urls = [base]
    silent_since: float | None = None
    while True:
        doc = None
        for url in urls:
            try:
                doc = cluster_status(secret, url)
                break
            except SystemExit:
                continue
        if doc is None:
            progress.finish(f"flotilla: no member answered with a status ({', '.join(urls)})")
            return 1
        urls = _observer_urls(doc, node_id, base)
        member = _member(doc, node_id)
        if member is None:
            progress.show(0, doc["under_replicated_total"], 0.0)
            progress.finish(f"{node_id} drained and removed from the group "
                            f"(as seen by {doc['node_id']})")
            return 0
        now = time.monotonic()
        if member.get("reachable"):
            silent_since = None
        elif silent_since is None:
            silent_since = now
        elif now - silent_since > UNREACHABLE_SECONDS:
            progress.finish(f"flotilla: {node_id} became unreachable before its drain finished; "
                            f"its chunks may still be short of copies")
            return 1
        stored = (member.get("chunks") or {}).get("stored_bytes")
        progress.show(stored, doc["under_replicated_total"], doc.get("repair_eta_seconds"))
        if deadline is not None and now > deadline:
            progress.finish(f"flotilla: timed out waiting for the drain of {node_id}; it goes "
                            f"on (cancel it with `flotilla cluster drain {node_id} --cancel`)")
            return 1
        time.sleep(DRAIN_POLL_SECONDS)


def _drain(secret: bytes, base: str, args: argparse.Namespace) -> int:
    path = f"{base}/_cluster/members/{args.node_id}/drain"
    response = call_sync(secret, "DELETE" if args.cancel else "POST", path)
    if response.status_code != 200:
        print(f"flotilla: drain of {args.node_id} refused: {_message(response)}",
              file=sys.stderr)
        return 1
    if args.cancel or not args.wait:
        print(response.text)
        return 0
    return wait_for_drain(secret, base, args.node_id, args.timeout)


def _message(response: httpx.Response) -> str:
    """The error message an OCI-style error body carries, else the body itself."""
    try:
        errors = response.json().get("errors") or []
        return "; ".join(str(e.get("message")) for e in errors) or response.text
    except (ValueError, AttributeError):
        return response.text[:400]


def run_cluster_command(args: argparse.Namespace) -> int:
    secret = _secret(args)
    base = args.url.rstrip("/")
    try:
        if args.action == "drain":
            return _drain(secret, base, args)
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
