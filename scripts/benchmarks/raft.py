"""`scripts/bench raft`: metadata commits through a 3-node Raft group on loopback.

Three `flotilla serve` processes form one group on free 127.0.0.1 ports, each
with its data in the benchmark's temp folder (the WAL fsyncs every batch; it
always does). Once they agree on a leader, one small config blob is pushed
and then manifests are PUT, each under a new tag: a PUT answers 201 only
after its command is committed through Raft and applied on the node that
answered, so every 201 is one metadata commit. Measured: sequential writes
(one at a time, latency percentiles) and concurrent writers (commits/s),
each issued on the leader and on a follower, which forwards to the leader.
The client's own CPU is reported, so a saturated client is not mistaken for
a slow cluster; `--client-processes` spreads the writers over processes.
A bare write+fdatasync loop on the same disk gives the floor a commit pays.
Two reference rows use the same concurrent clients without Raft: GETs of one
tag on the leader (the node's HTTP path alone), and Hypercorn, configured as
a node's, serving an app that does nothing (the floor of the HTTP server
every node runs on): a leader cannot commit faster than that server answers.
Goals (issue 3): p50 ≤ 3 ms on the leader, ≥ 3,000 commits/s with 64 writers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync
from scripts.benchmarks import processes
from scripts.benchmarks.client import FlowFailed, RegistryClient
from scripts.benchmarks.processes import Server, ServerFailed
from scripts.benchmarks.table import render, verdict
from scripts.benchmarks.tls_files import BenchTLS

NODES = ("n1", "n2", "n3")
REPO = "bench"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
P50_GOAL_MS = 3.0
COMMITS_GOAL = 3000.0
REFERENCE = (
    "PySyncObj (no fsync, batching off) measured on this kind of machine: p50 0.84 ms, 3,800 ops/s"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--writes", type=int, default=2000, help="sequential writes per node")
    parser.add_argument("--warmup", type=int, default=200, help="untimed writes before each run")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="how long the concurrent runs last at most"
    )
    parser.add_argument(
        "--max-writes", type=int, default=20_000, help="concurrent runs stop after this many"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="processes the concurrent writers are spread over (default 1)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the temp folder goes (default: /tmp)"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after measuring, leave the nodes up until Ctrl-C (for attaching a profiler)",
    )


# -- the cluster ---------------------------------------------------------------


@dataclass
class Cluster:
    secret: bytes
    servers: dict[str, Server]

    def status(self, node_id: str) -> dict[str, Any]:
        url = f"{self.servers[node_id].url}/_cluster/status"
        response = call_sync(self.secret, "GET", url, timeout=5)
        response.raise_for_status()
        return response.json()

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        """The leader every node agrees on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                leaders = {self.status(n)["leader"] for n in self.servers}
            except httpx.HTTPError:
                leaders = set()
            if len(leaders) == 1 and None not in leaders:
                return leaders.pop()
            time.sleep(0.1)
        raise ServerFailed(f"the nodes did not agree on a leader within {timeout:.0f} s")


@contextlib.contextmanager
def local_group(
    workdir: Path, nodes: tuple[str, ...] = NODES, extra: list[str] | None = None,
    stack: contextlib.ExitStack | None = None, tls: BenchTLS | None = None,
) -> Iterator[Cluster]:
    """`nodes` bootstrapped as one group on loopback ports, with `extra` flags each;
    their processes end with `stack` when one is given (a node started later can
    join it), else when the block ends."""
    secret_file = workdir / "secret"
    secret = load_or_create_secret(secret_file)
    ports = {n: (processes.free_port(), processes.free_port()) for n in nodes}
    peers = ",".join(f"{n}=127.0.0.1:{raft}" for n, (_, raft) in ports.items())
    with contextlib.ExitStack() as own:
        servers = {
            n: (stack or own).enter_context(processes.flotilla_raft_member(
                workdir, n, http, raft, peers, secret_file, extra=extra or [], tls=tls,
            ))
            for n, (http, raft) in ports.items()
        }
        yield Cluster(secret, servers)


# -- what is written -------------------------------------------------------------


def _push_config(url: str) -> tuple[str, int]:
    """Push the one config blob every manifest names; returns its digest and size."""
    data = json.dumps({"architecture": "amd64", "os": "linux", "bench": "raft"}).encode()
    with RegistryClient(url, repo=REPO) as client:
        deadline = time.monotonic() + 30
        while (status := client.push_bytes(data)) != 201:
            if time.monotonic() > deadline:
                raise FlowFailed(f"config blob push answered {status}")
            time.sleep(0.2)
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def _manifest(config_digest: str, config_size: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config_size},
            "layers": [],
        }
    ).encode()


def _check(response: httpx.Response) -> None:
    if response.status_code != 201:
        raise FlowFailed(
            f"PUT {response.request.url}: expected 201, got {response.status_code}: "
            f"{response.text[:300]}"
        )


# -- sequential writes -----------------------------------------------------------


@dataclass
class Latencies:
    seconds: list[float]
    client_cpu: float
    wall: float

    def ms(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.seconds) * 1000


def sequential_writes(url: str, body: bytes, label: str, count: int, warmup: int) -> Latencies:
    """One PUT at a time over one keep-alive connection; the first `warmup` are not kept."""
    headers = {"Content-Type": MANIFEST_TYPE}
    kept: list[float] = []
    with httpx.Client(base_url=url, trust_env=False, timeout=30.0) as http:
        for i in range(warmup):
            _check(
                http.put(f"/v2/{REPO}/manifests/{label}-warm-{i}", content=body, headers=headers)
            )
        cpu = time.process_time()
        wall = time.perf_counter()
        for i in range(count):
            started = time.perf_counter()
            response = http.put(f"/v2/{REPO}/manifests/{label}-{i}", content=body, headers=headers)
            kept.append(time.perf_counter() - started)
            _check(response)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    return Latencies(kept, cpu, wall)


def sequential_reads(url: str, tag: str, count: int, warmup: int) -> Latencies:
    """GET one existing tag's manifest, one at a time: the HTTP path without Raft."""
    kept: list[float] = []
    path = f"/v2/{REPO}/manifests/{tag}"
    headers = {"Accept": MANIFEST_TYPE}
    with httpx.Client(base_url=url, trust_env=False, timeout=30.0) as http:
        for _ in range(warmup):
            http.get(path, headers=headers).raise_for_status()
        cpu = time.process_time()
        wall = time.perf_counter()
        for _ in range(count):
            started = time.perf_counter()
            response = http.get(path, headers=headers)
            kept.append(time.perf_counter() - started)
            response.raise_for_status()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    return Latencies(kept, cpu, wall)


# -- concurrent writers ------------------------------------------------------------


@dataclass
class WriterShare:
    """What one client process did during the timed window."""

    commits: int
    started: float  # time.time() at the first timed request
    ended: float
    client_cpu: float
    latencies: list[float]


async def _request_concurrently(
    url: str,
    body: bytes,
    label: str,
    writers: int,
    start_at: float,
    seconds: float,
    max_writes: int,
    read_path: str | None,
) -> WriterShare:
    """Each writer PUTs a manifest under a new tag, or GETs `read_path` when given."""
    headers = {"Content-Type": MANIFEST_TYPE}
    latencies: list[float] = []
    serial = 0
    # One client (one connection) per writer: httpcore's pool checks every pooled
    # connection on every request, so one client with 64 connections spends more
    # CPU choosing a connection than sending on it and becomes the bottleneck.
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, trust_env=False, timeout=30.0)
            )
            for _ in range(writers)
        ]

        async def one_request(http: httpx.AsyncClient, tag: str) -> None:
            if read_path is not None:
                response = await http.get(read_path, headers={"Accept": MANIFEST_TYPE})
                if response.status_code != 200:
                    raise FlowFailed(f"GET {read_path}: expected 200, got {response.status_code}")
                return
            response = await http.put(f"/v2/{REPO}/manifests/{tag}", content=body, headers=headers)
            _check(response)

        # Open every connection before the clock starts.
        async with trio.open_nursery() as nursery:
            for w, http in enumerate(clients):
                nursery.start_soon(one_request, http, f"{label}-warm-{w}")
        await trio.sleep(max(0.0, start_at - time.time()))
        cpu = time.process_time()
        started = time.time()
        deadline = trio.current_time() + seconds

        async def writer(http: httpx.AsyncClient) -> None:
            nonlocal serial
            while trio.current_time() < deadline and serial < max_writes:
                serial += 1
                tag = f"{label}-{serial}"
                t0 = time.perf_counter()
                await one_request(http, tag)
                latencies.append(time.perf_counter() - t0)

        async with trio.open_nursery() as nursery:
            for http in clients:
                nursery.start_soon(writer, http)
        ended = time.time()
        cpu = time.process_time() - cpu
    return WriterShare(len(latencies), started, ended, cpu, latencies)


def _writer_process(
    url: str,
    body: bytes,
    label: str,
    writers: int,
    start_at: float,
    seconds: float,
    max_writes: int,
    read_path: str | None,
) -> WriterShare:
    return trio.run(
        _request_concurrently,
        url, body, label, writers, start_at, seconds, max_writes, read_path,
    )


@dataclass
class Throughput:
    commits: int
    wall: float
    client_cpu: float  # CPU seconds of all client processes together
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.commits / self.wall


def concurrent_writes(
    url: str,
    body: bytes,
    label: str,
    writers: int,
    seconds: float,
    max_writes: int,
    client_processes: int,
    read_path: str | None = None,
) -> Throughput:
    if client_processes <= 1:
        shares = [
            _writer_process(
                url, body, label, writers, time.time() + 0.5, seconds, max_writes, read_path
            )
        ]
    else:
        # Spawned, not forked: a fork of this process would inherit its server handles.
        context = multiprocessing.get_context("spawn")
        start_at = time.time() + 3.0  # every process has connected and warmed up by then
        split = [
            writers // client_processes + (i < writers % client_processes)
            for i in range(client_processes)
        ]
        with concurrent.futures.ProcessPoolExecutor(client_processes, mp_context=context) as pool:
            futures = [
                pool.submit(
                    _writer_process,
                    url,
                    body,
                    f"{label}-p{i}",
                    n,
                    start_at,
                    seconds,
                    max_writes // client_processes,
                    read_path,
                )
                for i, n in enumerate(split)
            ]
            shares = [f.result() for f in futures]
    wall = max(s.ended for s in shares) - min(s.started for s in shares)
    return Throughput(
        sum(s.commits for s in shares),
        wall,
        sum(s.client_cpu for s in shares),
        [x for s in shares for x in s.latencies],
    )


# -- a bare fsync for reference -------------------------------------------------------


def fdatasync_ms(directory: Path, count: int = 500) -> tuple[float, float]:
    """p50 and p99 of appending 200 bytes and fdatasync-ing, on the nodes' disk."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    times.sort()
    return statistics.median(times) * 1000, times[int(0.99 * len(times))] * 1000


# -- the run -----------------------------------------------------------------------------


@dataclass
class ServerCpu:
    """CPU seconds each node spent during one measurement."""

    by_node: dict[str, float]

    @classmethod
    def during(cls, servers: dict[str, Server], action: Any) -> tuple[Any, ServerCpu]:
        before = {n: processes.cpu_seconds(s.pid) for n, s in servers.items()}
        result = action()
        after = {n: processes.cpu_seconds(s.pid) for n, s in servers.items()}
        return result, cls({n: after[n] - before[n] for n in before})


def _cpu_cell(cpu: ServerCpu, leader: str, commits: int) -> str:
    """Leader's and followers' CPU µs per commit."""
    lead = cpu.by_node[leader] / commits * 1e6
    rest = [v / commits * 1e6 for n, v in cpu.by_node.items() if n != leader]
    return f"{lead:.0f} / " + " / ".join(f"{v:.0f}" for v in rest)


def _report(
    args: argparse.Namespace,
    leader: str,
    follower: str,
    seq: dict[str, tuple[Latencies, ServerCpu]],
    conc: dict[str, tuple[Throughput, ServerCpu]],
    fsync: tuple[float, float],
    load_before: float,
) -> str:
    lat_rows = []
    for where, node in (("leader", leader), ("follower", follower), ("read", leader)):
        lat, cpu = seq[where]
        if where == "leader":
            goal = f"p50 ≤ {P50_GOAL_MS:g} ms: {verdict(lat.p50_ms <= P50_GOAL_MS)}"
        else:
            goal = "(no goal)" if where == "follower" else "(HTTP alone, no Raft)"
        label = (
            f"(ref) GET of one tag on leader ({node})"
            if where == "read"
            else f"(a/b) sequential on {where} ({node})"
        )
        lat_rows.append(
            [
                label,
                str(len(lat.seconds)),
                f"{lat.p50_ms:.2f}",
                f"{lat.ms(0.99):.2f}",
                f"{lat.mean_ms:.2f}",
                f"{len(lat.seconds) / lat.wall:.0f}",
                f"{lat.client_cpu / lat.wall * 100:.0f}%",
                _cpu_cell(cpu, leader, len(lat.seconds)),
                goal,
            ]
        )
    thr_rows = []
    for where, node in (
        ("leader", leader), ("follower", follower), ("read", leader), ("noop", "")
    ):
        thr, cpu = conc[where]
        cpu_cell = _cpu_cell(cpu, leader, thr.commits) if where != "noop" else (
            f"{cpu.by_node['noop'] / thr.commits * 1e6:.0f} (that server)"
        )
        goal = {
            "leader": f"≥ {COMMITS_GOAL:,.0f}/s: {verdict(thr.per_second >= COMMITS_GOAL)}",
            "follower": "(no goal)",
            "read": "(HTTP alone, no Raft)",
            "noop": "(Hypercorn's floor)",
        }[where]
        label = {
            "leader": f"(c/d) {args.writers} writers on leader ({node})",
            "follower": f"(c/d) {args.writers} writers on follower ({node})",
            "read": f"(ref) {args.writers} readers of one tag on leader ({node})",
            "noop": f"(ref) {args.writers} readers, Hypercorn + no-op app",
        }[where]
        ordered = sorted(thr.latencies)
        thr_rows.append(
            [
                label,
                str(thr.commits),
                f"{thr.wall:.1f}",
                f"{thr.per_second:,.0f}",
                f"{statistics.median(ordered) * 1000:.1f}",
                f"{ordered[int(0.99 * len(ordered))] * 1000:.1f}",
                f"{thr.client_cpu / thr.wall * 100:.0f}%",
                cpu_cell,
                goal,
            ]
        )
    lat_table = render(
        [
            "sequential tag writes",
            "writes",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "writes/s",
            "client CPU",
            "server CPU µs/commit L / F / F",
            "goal",
        ],
        lat_rows,
    )
    thr_table = render(
        [
            "concurrent tag writes",
            "commits",
            "seconds",
            "commits/s",
            "p50 ms",
            "p99 ms",
            "client CPU",
            "server CPU µs/commit L / F / F",
            "goal",
        ],
        thr_rows,
    )
    procs = args.client_processes
    lines = [
        "scripts/bench raft — 3 Flotilla nodes on 127.0.0.1, Raft WAL fsync on, "
        f"{os.cpu_count()} CPUs shared by nodes and client",
        "each write = PUT /v2/<repo>/manifests/<new tag> answered 201 "
        "(committed through Raft, applied on the answering node)",
        "",
        lat_table,
        "",
        thr_table,
        "",
        f"client: httpx, {procs} process{'es' if procs > 1 else ''}; client CPU = % of one "
        "core (100% per process means the client is the bottleneck)",
        f"bare write+fdatasync on this disk: p50 {fsync[0]:.2f} ms, p99 {fsync[1]:.2f} ms",
        f"1-min load average when the run started: {load_before:.2f} (it decays slowly; "
        "a high figure means other work may have shared the CPUs)",
        f"reference — {REFERENCE}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-bench-raft-", dir=args.workdir))
    try:
        print(f"bench raft: temp folder {workdir}", file=sys.stderr)
        load_before = os.getloadavg()[0]
        fsync = fdatasync_ms(workdir)
        with local_group(workdir) as cluster:
            for name, server in cluster.servers.items():
                print(f"  {name} at {server.url} (pid {server.pid})", file=sys.stderr)
            leader = cluster.wait_for_leader()
            follower = next(n for n in NODES if n != leader)
            print(f"  leader {leader}, follower used {follower}", file=sys.stderr)
            urls = {
                "leader": cluster.servers[leader].url,
                "follower": cluster.servers[follower].url,
            }
            body = _manifest(*_push_config(urls["leader"]))

            seq: dict[str, tuple[Latencies, ServerCpu]] = {}
            for where, url in urls.items():
                seq[where] = ServerCpu.during(
                    cluster.servers,
                    lambda u=url, w=where: sequential_writes(
                        u, body, f"seq-{w}", args.writes, args.warmup
                    ),
                )
                print(
                    f"  sequential on {where}: p50 {seq[where][0].p50_ms:.2f} ms", file=sys.stderr
                )
            seq["read"] = ServerCpu.during(
                cluster.servers,
                lambda: sequential_reads(urls["leader"], "seq-leader-0", args.writes, args.warmup),
            )
            conc: dict[str, tuple[Throughput, ServerCpu]] = {}
            for where, url in urls.items():
                conc[where] = ServerCpu.during(
                    cluster.servers,
                    lambda u=url, w=where: concurrent_writes(
                        u,
                        body,
                        f"conc-{w}",
                        args.writers,
                        args.seconds,
                        args.max_writes,
                        args.client_processes,
                    ),
                )
                print(
                    f"  {args.writers} writers on {where}: "
                    f"{conc[where][0].per_second:,.0f} commits/s",
                    file=sys.stderr,
                )
            # The same clients on paths without Raft: a GET of one tag on the leader,
            # then Hypercorn alone serving an app that does nothing.
            conc["read"] = ServerCpu.during(
                cluster.servers,
                lambda: concurrent_writes(
                    urls["leader"], body, "conc-read", args.writers, args.seconds,
                    args.max_writes, args.client_processes, f"/v2/{REPO}/manifests/seq-leader-0",
                ),
            )
            with processes.noop_hypercorn(workdir) as noop:
                conc["noop"] = ServerCpu.during(
                    {"noop": noop},
                    lambda: concurrent_writes(
                        noop.url, body, "noop", args.writers, args.seconds, args.max_writes,
                        args.client_processes, "/v2/",
                    ),
                )
            for where in ("read", "noop"):
                print(f"  {args.writers} readers ({where}): "
                      f"{conc[where][0].per_second:,.0f} requests/s", file=sys.stderr)
            if cluster.wait_for_leader() != leader:
                print("  warning: leadership moved during the run", file=sys.stderr)
            print()
            print(_report(args, leader, follower, seq, conc, fsync, load_before))
            if args.keep_running:
                print("nodes still running; Ctrl-C to stop", file=sys.stderr)
                while True:
                    time.sleep(3600)
    except (ServerFailed, FlowFailed) as exc:
        print(f"bench raft: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
