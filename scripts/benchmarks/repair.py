"""`scripts/bench repair`: how fast a cluster restores R after losing a node, in GiB/min.

Four Flotilla nodes on 127.0.0.1 form one group (R=2), their repair loops
unthrottled (`--repair-bytes-per-second 0`) and the scrub off, so the loop
is measured alone. `--size-gib` of random bytes is pushed in blobs of
`--blob-mib`; then a node that is not the leader is killed with SIGKILL (the
bytes under its DATA/chunks are counted first), `flotilla cluster remove`
takes it out of the group, and the survivors' status (the document
`flotilla cluster status --json` prints) is polled until every survivor's
repair loop has scanned since the removal and reports no owned copy
missing (`repair.owned_missing_bytes` = 0). It prints the seconds that took,
the bytes re-copied (the survivors' `repair.repaired_bytes` grew by) as
GiB/min, and the survivors' CPU seconds per GiB re-copied, from
/proc/PID/stat. It then waits for `under_replicated_total` to read 0 too:
between repair passes each node reuses that report for 5 s, so it confirms,
it does not time.

Without a repair loop (a node that knows no `--repair-bytes-per-second`)
nothing is re-copied: the bench stops with a message once no progress was
seen for `--stall-seconds`, or after `--timeout`. CNCF Distribution keeps
one copy and has no replicas to restore, so there is no ratio against it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.cluster.admin_cli import cluster_status
from scripts.benchmarks import processes
from scripts.benchmarks.client import FlowFailed, RegistryClient
from scripts.benchmarks.payload import Blob, MiB, write_random_file
from scripts.benchmarks.processes import REPO_ROOT, Server, ServerFailed
from scripts.benchmarks.raft import Cluster, local_group
from scripts.benchmarks.table import render

GiB = 1 << 30
NODES = ("n1", "n2", "n3", "n4")
POLL_SECONDS = 0.5
REPORT_CACHE_SECONDS = 30.0  # ReplicationReport's max_age in node/cluster/replication.py


class RepairStalled(RuntimeError):
    """Nothing was re-copied for too long: no repair loop, or a stuck one."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-gib", type=float, default=1.0,
                        help="bytes pushed before the node is lost, GiB (default 1)")
    parser.add_argument("--blob-mib", type=int, default=256,
                        help="size of each pushed blob (default 256)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="give up after this many seconds of repair (default 900)")
    parser.add_argument("--stall-seconds", type=float, default=90.0,
                        help="give up when nothing progressed this long (default 90)")
    parser.add_argument("--chunk-size", type=int, default=None, help="Flotilla chunk size")
    parser.add_argument("--workdir", type=Path, default=None, help="temp folder parent")


def _bytes_under(folder: Path) -> tuple[int, int]:
    """(files, bytes) under `folder`."""
    files = total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            files += 1
            total += path.stat().st_size
    return files, total


def _remove(workdir: Path, url: str, node_id: str) -> None:
    """`flotilla cluster remove`, as an operator would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", "remove", "--url", url,
         "--secret-file", str(workdir / "secret"), "--node-id", node_id],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise ServerFailed(f"cluster remove {node_id}: {result.stderr or result.stdout}")


@dataclass
class Progress:
    """One poll of the survivors' repair fields."""

    at: float  # perf_counter
    missing_total: int  # under_replicated_total (reused up to 5 s by each node between passes)
    repaired_bytes: int  # sum over survivors of repair.repaired_bytes
    owned_missing_bytes: int | None  # sum; None while a survivor has not scanned since
    has_repair: bool


def _poll(cluster: Cluster, url: str, survivors: list[str], removed_unix: float) -> Progress:
    doc = cluster_status(cluster.secret, url)
    members = {m["node_id"]: m for m in doc["members"]}
    repairs: list[dict[str, Any]] = [members.get(n, {}).get("repair") or {} for n in survivors]
    has_repair = all(repairs)
    missing: int | None = 0
    for repair in repairs:
        scanned_since = (repair.get("last_pass_started") or 0) >= removed_unix
        value = repair.get("owned_missing_bytes")
        if not scanned_since or value is None or missing is None:
            missing = None
        else:
            missing += int(value)
    return Progress(
        time.perf_counter(), int(doc["under_replicated_total"]),
        sum(int(r.get("repaired_bytes") or 0) for r in repairs),
        missing if has_repair else None, has_repair,
    )


def _wait_for_repair(
    cluster: Cluster, url: str, survivors: list[str], removed_unix: float,
    args: argparse.Namespace,
) -> Progress:
    """The poll at which no survivor misses an owned copy."""
    first = _poll(cluster, url, survivors, removed_unix)
    started = last_change = time.perf_counter()
    seen = (first.missing_total, first.repaired_bytes)
    current = first
    while current.owned_missing_bytes != 0:
        now = time.perf_counter()
        if now - started > args.timeout:
            raise RepairStalled(
                f"R not restored after {args.timeout:.0f} s (--timeout): "
                f"under_replicated_total {current.missing_total}, "
                f"{current.repaired_bytes / MiB:.0f} MiB re-copied so far"
            )
        if now - last_change > args.stall_seconds:
            raise RepairStalled(_stall_message(current, args.stall_seconds))
        time.sleep(POLL_SECONDS)
        current = _poll(cluster, url, survivors, removed_unix)
        if (current.missing_total, current.repaired_bytes) != seen:
            seen, last_change = (current.missing_total, current.repaired_bytes), current.at
    return current


def _stall_message(progress: Progress, stall: float) -> str:
    if not progress.has_repair:
        return (f"nothing repaired in {stall:.0f} s: under_replicated_total stays "
                f"{progress.missing_total} and the nodes report no `repair` status; "
                f"these nodes have no repair loop yet (node/cluster/repair.py)")
    return (f"repair made no progress in {stall:.0f} s (--stall-seconds): "
            f"under_replicated_total {progress.missing_total}, "
            f"{progress.repaired_bytes / MiB:.0f} MiB re-copied")


def _confirm_report(cluster: Cluster, url: str, removed: float, timeout: float) -> float | None:
    """Seconds after the removal at which `under_replicated_total` reads 0 in a report
    computed after the removal (each node reuses its report for 5 s between passes);
    None past timeout."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        now = time.perf_counter()
        if now - removed > REPORT_CACHE_SECONDS + 1:
            if cluster_status(cluster.secret, url)["under_replicated_total"] == 0:
                return time.perf_counter() - removed
        time.sleep(1.0)
    return None


def run(args: argparse.Namespace) -> int:
    size = int(args.size_gib * GiB)
    blob_size = min(args.blob_mib * MiB, size)
    blobs = max(1, -(-size // blob_size))
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-bench-repair-", dir=args.workdir))
    extra = ["--replication", "2", "--scrub-bytes-per-second", "0"]
    if args.chunk_size:
        extra += ["--chunk-size", str(args.chunk_size)]
    if processes.serve_accepts("--repair-bytes-per-second"):
        extra += ["--repair-bytes-per-second", "0"]
    else:
        print("bench repair: `flotilla serve` has no --repair-bytes-per-second: no repair "
              "loop in this tree, so the copies will not come back", file=sys.stderr)
    try:
        print(f"bench repair: temp folder {workdir}", file=sys.stderr)
        random_file = workdir / "random.bin"
        write_random_file(random_file, blob_size)
        with local_group(workdir, NODES, extra) as cluster:
            leader = cluster.wait_for_leader()
            for server in cluster.servers.values():
                processes.wait_until_writable(server.url, server.name)
            entry = cluster.servers[leader].url
            print(f"  pushing {blobs} blobs of {blob_size / MiB:.0f} MiB", file=sys.stderr)
            with RegistryClient(entry) as client:
                for serial in range(blobs):
                    client.push_monolithic(Blob.salted(random_file, "repair", serial + 1))
            victim = [n for n in NODES if n != leader][-1]
            survivors = [n for n in NODES if n != victim]
            chunk_files, victim_bytes = _bytes_under(workdir / victim / "chunks")
            baseline = _poll(cluster, entry, survivors, time.time())
            killed = time.perf_counter()
            cluster.servers[victim].process.kill()
            cluster.servers[victim].process.wait()
            print(f"  killed {victim} (held {victim_bytes / MiB:.0f} MiB), removing it",
                  file=sys.stderr)
            removed_unix = time.time()
            _remove(workdir, entry, victim)
            removed = time.perf_counter()
            alive: list[Server] = [cluster.servers[n] for n in survivors]
            cpu_before = {s.name: processes.cpu_seconds(s.pid) for s in alive}
            done = _wait_for_repair(cluster, entry, survivors, removed_unix, args)
            cpu = {s.name: processes.cpu_seconds(s.pid) - cpu_before[s.name] for s in alive}
            confirmed = _confirm_report(cluster, entry, removed, REPORT_CACHE_SECONDS + 30)
        print(_report(
            args, blobs, blob_size, victim, chunk_files, victim_bytes, removed - killed,
            done.at - removed, done.repaired_bytes - baseline.repaired_bytes, cpu, confirmed,
        ))
        return 0
    except (ServerFailed, FlowFailed, RepairStalled, OSError) as exc:
        print(f"bench repair: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _report(
    args: argparse.Namespace, blobs: int, blob_size: int, victim: str, chunk_files: int,
    victim_bytes: int, remove_seconds: float, repair_seconds: float, recopied: int,
    cpu: dict[str, float], confirmed: float | None,
) -> str:
    moved = recopied or victim_bytes  # CPU per GiB needs a volume even if none was counted
    rate = moved / GiB / (repair_seconds / 60) if repair_seconds > 0 else float("inf")
    rows = [
        ["pushed before the loss", f"{blobs} x {blob_size / MiB:.0f} MiB"],
        [f"lost node {victim}: its DATA/chunks", f"{chunk_files} chunks, "
                                                  f"{victim_bytes / GiB:.2f} GiB"],
        ["kill -9 to `cluster remove` done", f"{remove_seconds:.2f} s"],
        ["removal to R restored (no survivor misses a copy)", f"{repair_seconds:.1f} s"],
        ["bytes re-copied (survivors' repaired_bytes)", f"{recopied / GiB:.2f} GiB"],
        ["repair rate, re-copied / time", f"{rate:.2f} GiB/min"],
        ["under_replicated_total reads 0 (report reused 5 s)",
         "not within the wait" if confirmed is None else f"{confirmed:.0f} s after removal"],
    ]
    cpu_rows = [[name.removeprefix("Flotilla "), f"{value / (moved / GiB):.2f}"]
                for name, value in cpu.items()]
    cpu_rows.append(["survivors, sum", f"{sum(cpu.values()) / (moved / GiB):.2f}"])
    return "\n".join([
        f"scripts/bench repair — 4 Flotilla nodes on 127.0.0.1 (R=2, repair unthrottled, "
        f"scrub off), {args.size_gib:g} GiB pushed, one node killed and removed",
        "",
        render(["restoring R=2", "value"], rows),
        "",
        render(["CPU s per GiB re-copied (user+sys)", "CPU s/GiB"], cpu_rows),
        "",
        "CNCF Distribution has no equivalent: it keeps one copy and has no replicas to",
        "restore, so there is no ratio. All nodes share this machine's CPUs and disk.",
    ])
