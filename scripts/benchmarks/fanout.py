"""`scripts/bench fanout`: N hosts pulling one blob at once, Flotilla versus CNCF Distribution.

Each host is a network namespace on one bridge whose link `tc` limits to
`--rate-mbit` each way (see `netns`); needs root. For each N of `--hosts`:

- Distribution: one `docker-registry` on host 1; the blob is pushed once,
  then host 2 pulls it alone, then hosts 2..N pull it at the same moment.
  Every byte leaves through host 1's one link, so the slowest of N-1
  concurrent pulls should take about N-1 times one pull.
- Flotilla: one node per host (R=2, default cache), bootstrapped as one
  group; two blobs are pushed once through host 1's node, then host 2 pulls
  the second alone through its own node, then every host pulls the first at
  the same moment, each through its own node. Chunks come from every
  holder's link, so the slowest pull should stay near one pull.

The pulls start together: each is a `pull_worker` process inside its host's
namespace that opens its connection, reports ready and waits for one line
on its stdin; the benchmark writes that line to all of them once every one
is ready. Each worker checks the digest and reports the seconds from the
start to its last byte. Goal (the issue): the slowest of N concurrent pulls
through Flotilla within 1.5x one pull from Distribution, while
Distribution's slowest grows about N-1 times. Nothing is asserted.

All namespaces share this machine's cores (2 on the development box), so
CPU may bound a run before the links do: the report prints the nodes' and
Distribution's CPU seconds per GiB delivered, from /proc/PID/stat around
each measured pull. The namespaces are removed in a `finally` (Ctrl-C and
SIGTERM unwind through it) and leftovers of an interrupted run are removed
at the start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.cluster.auth import load_or_create_secret
from scripts.benchmarks import netns, processes
from scripts.benchmarks.client import FlowFailed, RegistryClient
from scripts.benchmarks.payload import Blob, MiB, write_random_file
from scripts.benchmarks.processes import REPO_ROOT, Server, ServerFailed
from scripts.benchmarks.raft import Cluster
from scripts.benchmarks.table import render, verdict

HTTP_PORT = 5000  # each namespace has its own ports, so fixed ones are free
RAFT_PORT = 6001  # not HTTP + 1000 nor + 2000 (the data plane's default)
GOAL = 1.5
IDLE_SAMPLE_SECONDS = 3.0
GiB = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", default="3,6",
                        help="comma-separated host counts, each ≥ 3 (default 3,6)")
    parser.add_argument("--size-mib", type=int, default=256, help="blob size (default 256)")
    parser.add_argument("--rate-mbit", type=int, default=400,
                        help="each host's link, each way, Mbit/s (default 400)")
    parser.add_argument("--chunk-size", type=int, default=None, help="Flotilla chunk size")
    parser.add_argument("--workdir", type=Path, default=None, help="temp folder parent")


@dataclass
class Pulls:
    """Seconds of each pull started together, and what the servers spent meanwhile."""

    seconds: list[float]
    cpu: dict[str, float]  # CPU seconds by server name

    @property
    def slowest(self) -> float:
        return max(self.seconds)


@dataclass
class Round:
    """One system's figures for one N."""

    alone: Pulls
    together: Pulls
    alone_fetched: int | None = None  # bytes the lone puller's node fetched from peers
    # During the concurrent pulls, all nodes: bytes that crossed the links (a hedged
    # fetch can bring a chunk twice), bytes kept (each chunk once), hedged fetches.
    together_traffic: tuple[int, int, int] | None = None
    idle_cpu_per_second: float = 0.0  # all servers together, while nothing is pulled


def _start_worker(k: int, url: str, blob: Blob) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "scripts.benchmarks.pull_worker", url, blob.digest,
            str(blob.size)]
    return subprocess.Popen(
        netns.exec_argv(netns.host_ns(k), argv), cwd=REPO_ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        preexec_fn=processes.die_with_parent,
    )


def _pull_together(pullers: list[tuple[int, str]], blob: Blob, servers: list[Server]) -> Pulls:
    """Host k pulls `blob` from `url` for each (k, url), all started at one signal."""
    workers = [_start_worker(k, url, blob) for k, url in pullers]
    try:
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise FlowFailed(f"a pull worker did not start (exit {worker.wait()})")
        before = {s.name: processes.cpu_seconds(s.pid) for s in servers}
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            reports.append(json.loads(line) if line else {"error": "worker exited"})
        cpu = {s.name: processes.cpu_seconds(s.pid) - before[s.name] for s in servers}
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise FlowFailed(f"{len(errors)} of {len(workers)} pulls failed: {errors[0]}")
    return Pulls([r["seconds"] for r in reports], cpu)


def _idle_cpu(servers: list[Server]) -> float:
    """CPU seconds per second the servers spend doing nothing asked of them (Raft
    ticks, health checks): N idle nodes add this to every figure taken over them all."""
    before = sum(processes.cpu_seconds(s.pid) for s in servers)
    time.sleep(IDLE_SAMPLE_SECONDS)
    return (sum(processes.cpu_seconds(s.pid) for s in servers) - before) / IDLE_SAMPLE_SECONDS


def _push(k: int, url: str, blob: Blob) -> None:
    def push() -> None:
        with RegistryClient(url) as client:
            client.push_monolithic(blob)

    netns.run_in(netns.host_ns(k), push)


def _distribution_round(hosts: int, workdir: Path, blob: Blob) -> Round:
    workdir.mkdir()
    ns = netns.host_ns(1)
    with processes.distribution(
        workdir, host=netns.host_ip(1), port=HTTP_PORT, netns=ns
    ) as dist:
        netns.run_in(ns, lambda: processes.wait_until_writable(dist.url, dist.name))
        _push(1, dist.url, blob)
        idle = _idle_cpu([dist])
        alone = _pull_together([(2, dist.url)], blob, [dist])
        together = _pull_together(
            [(k, dist.url) for k in range(2, hosts + 1)], blob, [dist]
        )
    return Round(alone, together, idle_cpu_per_second=idle)


@contextlib.contextmanager
def _flotilla_cluster(
    hosts: int, workdir: Path, chunk_size: int | None
) -> Iterator[Cluster]:
    """One node per host namespace, bootstrapped as one Raft group."""
    secret_file = workdir / "secret"
    secret = load_or_create_secret(secret_file)
    ids = {k: f"n{k}" for k in range(1, hosts + 1)}
    peers = ",".join(f"{ids[k]}={netns.host_ip(k)}:{RAFT_PORT}" for k in ids)
    extra = ["--replication", "2"]
    if chunk_size:
        extra += ["--chunk-size", str(chunk_size)]
    with contextlib.ExitStack() as stack:
        servers = {
            ids[k]: stack.enter_context(processes.flotilla_raft_member(
                workdir, ids[k], HTTP_PORT, RAFT_PORT, peers, secret_file, extra=extra,
                host=netns.host_ip(k), netns=netns.host_ns(k),
            ))
            for k in ids
        }
        cluster = Cluster(secret, servers)
        netns.run_in(netns.host_ns(1), cluster.wait_for_leader)
        for k, node_id in ids.items():
            url, name = servers[node_id].url, servers[node_id].name
            netns.run_in(netns.host_ns(k),
                         lambda u=url, n=name: processes.wait_until_writable(u, n))
        yield cluster


def _flotilla_round(
    hosts: int, workdir: Path, blob: Blob, second: Blob, chunk_size: int | None
) -> Round:
    workdir.mkdir()
    with _flotilla_cluster(hosts, workdir, chunk_size) as cluster:
        nodes = list(cluster.servers.values())
        url = {k: cluster.servers[f"n{k}"].url for k in range(1, hosts + 1)}
        _push(1, url[1], blob)
        _push(1, url[1], second)
        idle = _idle_cpu(nodes)
        cached_before = _cached_bytes(cluster, "n2")
        alone = _pull_together([(2, url[2])], second, nodes)
        fetched = _cached_bytes(cluster, "n2") - cached_before
        traffic_before = _traffic(cluster)
        together = _pull_together(list(url.items()), blob, nodes)
        traffic = tuple(b - a for a, b in zip(traffic_before, _traffic(cluster), strict=True))
    return Round(alone, together, fetched, idle_cpu_per_second=idle,
                 together_traffic=traffic)  # type: ignore[arg-type]


def _traffic(cluster: Cluster) -> tuple[int, int, int]:
    """All nodes' chunk bytes fetched from peers, cached bytes, and hedged fetches."""
    fetched = kept = hedged = 0
    for node_id in cluster.servers:
        status = netns.run_in(netns.host_ns(1), lambda n=node_id: cluster.status(n))
        counters = status.get("counters") or {}
        fetched += int(counters.get("bytes_fetched", 0))
        hedged += int(counters.get("hedged_fetches", 0))
        kept += int(status["chunks"]["cached_bytes"])
    return fetched, kept, hedged


def _cached_bytes(cluster: Cluster, node_id: str) -> int:
    """Bytes of fetched (not owned) chunks a node keeps: what its pulls fetched."""
    status = netns.run_in(netns.host_ns(1), lambda: cluster.status(node_id))
    return int(status["chunks"]["cached_bytes"])


def _host_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 3 or max(counts) > 250:
        raise ValueError(f"--hosts {text!r}: give counts between 3 and 250, e.g. 3,6")
    return counts


def run(args: argparse.Namespace) -> int:
    try:
        netns.require_root_and_tools()
        counts = _host_counts(args.hosts)
    except (netns.NetnsUnavailable, ValueError) as exc:
        print(f"bench fanout: {exc}", file=sys.stderr)
        return 2
    size = args.size_mib * MiB
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-bench-fanout-", dir=args.workdir))
    results: dict[int, tuple[Round, Round]] = {}
    try:
        print(f"bench fanout: temp folder {workdir}", file=sys.stderr)
        random_file = workdir / "random.bin"
        write_random_file(random_file, size)
        for hosts in counts:
            blob = Blob.salted(random_file, f"fanout {hosts}", 1)
            second = Blob.salted(random_file, f"fanout {hosts} alone", 2)
            netns.create(hosts, args.rate_mbit)
            try:
                print(f"  N={hosts}: Distribution …", file=sys.stderr)
                dist = _distribution_round(hosts, workdir / f"distribution-{hosts}", blob)
                print(f"  N={hosts}: Flotilla …", file=sys.stderr)
                flot = _flotilla_round(
                    hosts, workdir / f"flotilla-{hosts}", blob, second, args.chunk_size
                )
            finally:
                netns.remove_all()
            results[hosts] = (dist, flot)
            print(_report(args, hosts, size, dist, flot) + "\n", flush=True)
        return 0
    except (ServerFailed, FlowFailed, netns.NetnsCommandFailed, OSError) as exc:
        print(f"bench fanout: {exc}", file=sys.stderr)
        return 1
    finally:
        netns.remove_all()
        shutil.rmtree(workdir, ignore_errors=True)


def _fetched_note(fetched: int | None, size: int) -> str:
    """How much of the blob crossed the link; the rest its own node held (R/N of it)."""
    if fetched is None:
        return ""
    return f"{fetched / MiB:.0f} of {size / MiB:.0f} MiB fetched"


def _per_gib(cpu: float, volume: int) -> str:
    return f"{cpu / (volume / GiB):.2f}"


def _report(args: argparse.Namespace, hosts: int, size: int, dist: Round, flot: Round) -> str:
    floor = size * 8 / (args.rate_mbit * 1e6)
    ratio = flot.together.slowest / dist.alone.slowest
    dist_growth = dist.together.slowest / dist.alone.slowest
    flot_growth = flot.together.slowest / flot.alone.slowest
    node_cpu = flot.together.cpu
    busiest = max(node_cpu, key=node_cpu.__getitem__)
    dist_cpu = sum(dist.together.cpu.values())
    rows = [
        ["Distribution: one pull, host 2 from host 1", f"{dist.alone.slowest:.2f} s", ""],
        [f"Distribution: slowest of {hosts - 1} concurrent (hosts 2..{hosts})",
         f"{dist.together.slowest:.2f} s", ""],
        ["Distribution: growth, slowest / one", f"{dist_growth:.2f}x",
         f"≈ {hosts - 1}x expected"],
        ["Flotilla: one pull, host 2 through its node", f"{flot.alone.slowest:.2f} s",
         _fetched_note(flot.alone_fetched, size)],
        [f"Flotilla: slowest of {hosts} concurrent, each through its node",
         f"{flot.together.slowest:.2f} s", ""],
        ["Flotilla: growth, slowest / one", f"{flot_growth:.2f}x", ""],
        *([["Flotilla: MiB over the links / MiB kept, concurrent",
            f"{flot.together_traffic[0] / MiB:.0f} / {flot.together_traffic[1] / MiB:.0f}",
            f"{flot.together_traffic[2]} hedged fetches"]] if flot.together_traffic else []),
        ["ratio Flotilla slowest / Distribution one pull", f"{ratio:.2f}",
         f"≤ {GOAL} {verdict(ratio <= GOAL)}"],
    ]
    cpu_rows = [
        [f"Flotilla nodes, {hosts} concurrent pulls (all nodes)",
         _per_gib(sum(node_cpu.values()), hosts * size)],
        [f"Flotilla busiest node ({busiest.removeprefix('Flotilla ')})",
         _per_gib(node_cpu[busiest], size)],
        ["Flotilla one pull: host 2's node (n2)", _per_gib(flot.alone.cpu["Flotilla n2"], size)],
        ["Flotilla one pull: the other nodes, sum",
         _per_gib(sum(flot.alone.cpu.values()) - flot.alone.cpu["Flotilla n2"], size)],
        [f"Distribution, {hosts - 1} concurrent pulls", _per_gib(dist_cpu, (hosts - 1) * size)],
        ["Distribution, one pull", _per_gib(sum(dist.alone.cpu.values()), size)],
    ]
    used = sum(node_cpu.values())
    cores = os.cpu_count() or 1
    return "\n".join([
        f"scripts/bench fanout — N={hosts} hosts (network namespaces on one bridge), each link "
        f"{args.rate_mbit} Mbit/s each way; {args.size_mib} MiB random blob; Flotilla R=2, one "
        f"node per host; one Distribution on host 1. One pull at link speed takes "
        f"{floor:.2f} s.",
        "",
        render([f"N={hosts}", "value", "goal"], rows),
        "",
        render(["CPU s per GiB delivered (user+sys)", "CPU s/GiB"], cpu_rows),
        "",
        f"Every namespace shares this machine's {cores} CPUs; pull clients check sha256 on the "
        f"same cores. During the {hosts} concurrent pulls the nodes used {used:.1f} CPU s in "
        f"{flot.together.slowest:.1f} s ({used / (cores * flot.together.slowest):.0%} of all "
        f"cores); idle, all {hosts} nodes together use {flot.idle_cpu_per_second:.2f} CPU s "
        f"per second (Distribution {dist.idle_cpu_per_second:.2f}), counted in the figures "
        f"above. Per pull (s): Flotilla {', '.join(f'{x:.2f}' for x in flot.together.seconds)}; "
        f"Distribution {', '.join(f'{x:.2f}' for x in dist.together.seconds)}.",
    ])
