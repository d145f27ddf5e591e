"""`scripts/bench cluster`: blobs spread over a Flotilla cluster versus CNCF Distribution.

Three Flotilla nodes form one group (replication R=2) and one Distribution
runs beside them, all on 127.0.0.1 and the same disk. Measured in one run,
the same httpx client for both systems, median of `--repeat`:

1. a push of one random blob through node 1 — its chunks land on 2 of the 3
   nodes before the push is acknowledged — versus a push to Distribution;
2. a pull through a fourth node that joined after the push and so holds none
   of the blob's chunks (every byte crosses from its holders), versus a pull
   from Distribution;
3. three clients pulling the blob at once, each through a different node,
   versus three clients pulling from Distribution at once (aggregate MB/s).

Nodes run with no chunk cache (`cache_bytes = 0`), so every repetition pays
the full fetch: the worst case for Flotilla, the steady state for a pull of
something new. Where nodes have a repair loop it is paced to a crawl: it
would otherwise give n4 its share of the chunks while (2) runs (the report
says what n4 stored when each pull began). Goals (issue 4): ratio ≥ 0.8 for
(1) and (2), ≥ 1.0 for (3).

Beside the ratios it prints what bounds them on one machine: the CPU seconds
per GiB every Flotilla node together, Distribution, and the client spent
(all share the same cores), and the disk's write rate with fsync (a push
with R=2 makes two fsynced copies on that one disk). A second table splits
the nodes' CPU by role, read from /proc/PID/stat around each transfer: for
the push, the receiving node and the other holders; for the pull through the
fourth node, that relaying node and each holder with their sum (the serving
holders' goal is ≤ 0.3 CPU s per GiB they serve).

With `--tls` the same run measures everything a second time over TLS: the
nodes serve HTTPS and encrypt Raft, the data plane and the peer API (their
default with a certificate), and Distribution serves HTTPS with the same
certificate, so the ratios compare like with like. A last table puts both
runs side by side, and the data plane's CPU per GiB with TLS against
`sendfile` (the serving holders of (2), the relaying node, the holders a
push places on).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.benchmarks import processes
from scripts.benchmarks.client import RegistryClient
from scripts.benchmarks.payload import Blob, MiB, write_random_file
from scripts.benchmarks.processes import Server, ServerFailed
from scripts.benchmarks.raft import Cluster, local_group
from scripts.benchmarks.table import render, verdict
from scripts.benchmarks.tls_files import BenchTLS, make_bench_tls

GOALS = {"push": 0.8, "pull": 0.8, "pull3": 1.0}
HOLDER_CPU_GOAL = 0.3  # CPU s per GiB a holder serves to a relaying node
LABELS = {
    "push": "(1) push through node 1, R=2  vs  push",
    "pull": "(2) pull through a node holding no chunk  vs  pull",
    "pull3": "(3) 3 clients, 3 nodes at once  vs  3 clients",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=512, help="blob size (default 512)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median)")
    parser.add_argument("--chunk-size", type=int, default=None, help="Flotilla chunk size")
    parser.add_argument("--workdir", type=Path, default=None, help="temp folder parent")
    parser.add_argument("--tls", action="store_true",
                        help="measure again over TLS (nodes: client and internal TLS; "
                             "Distribution: the same certificate) and compare")


@contextlib.contextmanager
def _cluster(
    workdir: Path, chunk_size: int | None, tls: BenchTLS | None = None,
) -> Iterator[tuple[Cluster, Callable[[], Server]]]:
    """Three bootstrapped members, and a function that starts a fourth that joins."""
    secret_file = workdir / "secret"
    extra = ["--cache-bytes", "0"]
    if processes.serve_accepts("--repair-bytes-per-second"):
        # 1 byte/s lets the repair loop move one chunk and then wait for days, so n4
        # stays a node holding (almost) nothing, as (2) means; bench repair times it.
        extra += ["--repair-bytes-per-second", "1"]
    if chunk_size:
        extra += ["--chunk-size", str(chunk_size)]
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(
            local_group(workdir, extra=extra, stack=stack, tls=tls)
        )
        servers = cluster.servers

        def join() -> Server:
            http, raft = processes.free_port(), processes.free_port()
            server = stack.enter_context(
                processes.flotilla_raft_member(
                    workdir, "n4", http, raft, "", secret_file,
                    extra=[*extra, "--join", servers["n1"].url], tls=tls,
                )
            )
            servers["n4"] = server
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                members = cluster.status("n1")["members"]
                if any(m["node_id"] == "n4" and m.get("http") and m["voter"] for m in members):
                    return server
                time.sleep(0.2)
            raise ServerFailed("n4 did not join in time")

        yield cluster, join


@dataclass
class Spent:
    """Wall seconds of one measured action, and the CPU seconds spent meanwhile."""

    wall: float
    servers: float  # all processes of the system measured (every Flotilla node)
    client: float  # this process, all threads
    per_server: dict[str, float]  # each measured process by its Server.name
    per_server_kernel: dict[str, float]  # the system-time part of per_server


def _timed(action: Callable[[], object], servers: list[Server]) -> Spent:
    before = {s.name: processes.cpu_seconds(s.pid) for s in servers}
    kernel = {s.name: processes.system_seconds(s.pid) for s in servers}
    client = time.process_time()
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    client = time.process_time() - client
    per_server = {s.name: processes.cpu_seconds(s.pid) - before[s.name] for s in servers}
    per_kernel = {s.name: processes.system_seconds(s.pid) - kernel[s.name] for s in servers}
    return Spent(wall, sum(per_server.values()), client, per_server, per_kernel)


def fsync_write_rate(directory: Path, size: int = 256 * MiB) -> float:
    """MB/s of writing `size` bytes to a new file and fsyncing it, on the nodes' disk."""
    path = directory / "fsync-rate-probe"
    block = os.urandom(MiB)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size // MiB):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink()
    return size / elapsed / 1e6


def _pull_at_once(urls: list[str], blob: Blob, verify: ssl.SSLContext | bool = True) -> float:
    """Wall time for one pull through each URL, all started together (the whole
    of it is the action `_timed` measures, so thread start-up counts too)."""
    clients = [RegistryClient(url, verify=verify) for url in urls]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(clients) + 1)

    def pull(client: RegistryClient) -> None:
        barrier.wait()
        try:
            client.pull(blob)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=pull, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    return elapsed


@dataclass
class Measured:
    """One run's timings, and what n4 stored as each of its pulls began."""

    spent: dict[tuple[str, str], list[Spent]]
    n4_stored: list[int]


def _measure(args: argparse.Namespace, random_file: Path, workdir: Path,
             tls: BenchTLS | None) -> Measured:
    """The three measurements, against a fresh cluster and Distribution in `workdir`."""
    spent: dict[tuple[str, str], list[Spent]] = defaultdict(list)
    verify: ssl.SSLContext | bool = tls.context() if tls else True
    with contextlib.ExitStack() as stack:
        cluster, join = stack.enter_context(_cluster(workdir, args.chunk_size, tls))
        dist = stack.enter_context(processes.distribution(workdir, tls=tls))
        cluster.wait_for_leader()
        for server in [*cluster.servers.values(), dist]:
            processes.wait_until_writable(server.url, server.name, verify=verify)
        n1 = cluster.servers["n1"].url
        nodes = list(cluster.servers.values())
        blobs = []
        for run_no in range(args.repeat):
            blob = Blob.salted(random_file, f"cluster run {run_no}", run_no + 1)
            blobs.append(blob)
            for system, url, servers in (("Flotilla", n1, nodes), ("Distribution",
                                                                    dist.url, [dist])):
                with RegistryClient(url, verify=verify) as client:
                    spent["push", system].append(
                        _timed(lambda c=client, b=blob: c.push_monolithic(b), servers)
                    )
        n4 = join().url
        nodes = list(cluster.servers.values())
        print(f"  n4 joined at {n4}", file=sys.stderr)
        n4_stored: list[int] = []
        for blob in blobs:
            n4_stored.append(int(cluster.status("n4")["chunks"]["stored_bytes"]))
            for system, url, servers in (("Flotilla", n4, nodes), ("Distribution",
                                                                    dist.url, [dist])):
                with RegistryClient(url, verify=verify) as client:
                    spent["pull", system].append(
                        _timed(lambda c=client, b=blob: c.pull(b), servers)
                    )
        three = [cluster.servers[n].url for n in ("n2", "n3", "n4")]
        for blob in blobs:
            spent["pull3", "Flotilla"].append(
                _timed(lambda b=blob: _pull_at_once(three, b, verify), nodes)
            )
            spent["pull3", "Distribution"].append(
                _timed(lambda b=blob: _pull_at_once([dist.url] * 3, b, verify), [dist])
            )
    return Measured(spent, n4_stored)


def run(args: argparse.Namespace) -> int:
    size = args.size_mib * MiB
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-bench-cluster-", dir=args.workdir))
    try:
        random_file = workdir / "random.bin"
        print(f"bench cluster: temp folder {workdir}", file=sys.stderr)
        write_random_file(random_file, size)
        disk_rate = fsync_write_rate(workdir)
        passes: list[BenchTLS | None] = [None]
        if args.tls:
            passes.append(make_bench_tls(workdir / "certificates"))
        measured: dict[bool, Measured] = {}
        for tls in passes:
            folder = workdir / ("over-tls" if tls else "plain")
            folder.mkdir()
            print(f"  measuring {'over TLS' if tls else 'without TLS'}", file=sys.stderr)
            measured[tls is not None] = result = _measure(args, random_file, folder, tls)
            print(_report(args, size, result.spent, disk_rate, result.n4_stored,
                          tls=tls is not None))
            print()
        if args.tls:
            print(_tls_cost(size, measured[False].spent, measured[True].spent))
        return 0
    except (ServerFailed, OSError) as exc:
        print(f"bench cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _rate(size: int, spent: dict[tuple[str, str], list[Spent]], op: str, system: str) -> float:
    volume = size * (3 if op == "pull3" else 1)
    return volume / 1e6 / statistics.median(x.wall for x in spent[op, system])


def _tls_cost(size: int, plain: dict[tuple[str, str], list[Spent]],
              tls: dict[tuple[str, str], list[Spent]]) -> str:
    """Both runs side by side, and what TLS costs the data plane in CPU."""
    rows = []
    for op, label in LABELS.items():
        row = [label]
        for spent in (plain, tls):
            f, d = _rate(size, spent, op, "Flotilla"), _rate(size, spent, op, "Distribution")
            row += [f"{f:.1f}", f"{d:.1f}", f"{f / d:.2f}"]
        rows.append(row)
    gib = size / (1 << 30)

    def holders(spent: dict[tuple[str, str], list[Spent]], op: str, names: tuple[str, ...]
                ) -> float:
        return sum(_node_per_gib(spent[op, "Flotilla"], n, size) for n in names)

    cpu = [
        ["(2) pull: holders serving chunks (data plane out)",
         f"{holders(plain, 'pull', ('n1', 'n2', 'n3')):.2f}",
         f"{holders(tls, 'pull', ('n1', 'n2', 'n3')):.2f}"],
        ["(2) pull: relaying node n4 (data plane in, client out)",
         f"{holders(plain, 'pull', ('n4',)):.2f}", f"{holders(tls, 'pull', ('n4',)):.2f}"],
        ["(1) push: holders placed on (data plane in)",
         f"{holders(plain, 'push', ('n2', 'n3')):.2f}",
         f"{holders(tls, 'push', ('n2', 'n3')):.2f}"],
        ["(2) pull: Distribution serving",
         f"{statistics.median(x.servers / gib for x in plain['pull', 'Distribution']):.2f}",
         f"{statistics.median(x.servers / gib for x in tls['pull', 'Distribution']):.2f}"],
    ]
    return "\n".join([
        "What TLS costs: the same measurements without and with TLS (Flotilla: client TLS,",
        "Raft, data plane and peer API in TLS; Distribution: HTTPS with the same certificate)",
        "",
        render(["operation", "plain F MB/s", "plain D MB/s", "plain F/D",
                "TLS F MB/s", "TLS D MB/s", "TLS F/D"], rows),
        "",
        render(["CPU s per GiB of the blob", "sendfile / plain", "TLS"], cpu),
    ])


def _report(
    args: argparse.Namespace, size: int, spent: dict[tuple[str, str], list[Spent]],
    disk_rate: float, n4_stored: list[int], *, tls: bool = False,
) -> str:
    rows, cpu_rows = [], []
    for op, label in LABELS.items():
        volume = size * (3 if op == "pull3" else 1)
        f = volume / 1e6 / statistics.median(x.wall for x in spent[op, "Flotilla"])
        d = volume / 1e6 / statistics.median(x.wall for x in spent[op, "Distribution"])
        rows.append([label, f"{f:.1f}", f"{d:.1f}", f"{f / d:.2f}",
                     f"≥ {GOALS[op]} {verdict(f / d >= GOALS[op])}"])
        per_gib = {
            (system, side): statistics.median(
                getattr(x, side) / (volume / (1 << 30)) for x in spent[op, system]
            )
            for system in ("Flotilla", "Distribution")
            for side in ("servers", "client")
        }
        cpu_rows.append([
            label,
            f"{per_gib['Flotilla', 'servers']:.2f}",
            f"{per_gib['Distribution', 'servers']:.2f}",
            f"{per_gib['Flotilla', 'client']:.2f} / {per_gib['Distribution', 'client']:.2f}",
        ])
    return "\n".join([
        f"scripts/bench cluster — 3 Flotilla nodes (R=2, no chunk cache) + a 4th that joins,"
        f" vs one CNCF Distribution; {args.size_mib} MiB random blob, median of "
        f"{args.repeat}, MB/s = 10^6 bytes/s (aggregate for 3 clients)"
        + (", everything over TLS" if tls else ""),
        "",
        render(["operation", "Flotilla MB/s", "Distribution MB/s", "ratio F/D", "goal"], rows),
        "",
        render(["CPU s per GiB moved (user+sys)", "Flotilla nodes", "Distribution",
                "client F / D"], cpu_rows),
        "",
        render(["CPU s per GiB of the blob, by node", "node", "CPU s/GiB", "goal"],
               _role_rows(size, spent)),
        "",
        _n4_note(n4_stored, size),
        "",
        f"{os.cpu_count()} CPUs shared by every node, Distribution and the clients; one disk "
        f"({disk_rate:.0f} MB/s written with fsync). With R=2 a push writes two fsynced copies",
        "on this one machine, plus the receiving node's spool of the chunks it does not own;",
        "Distribution writes one copy and does not fsync it.",
    ])


def _node_per_gib(spent: list[Spent], node_id: str, size: int, *, kernel: bool = False) -> float:
    """Median CPU seconds one node spent per GiB of the blob moved (only the
    kernel's part of them with `kernel`)."""
    return statistics.median(
        (x.per_server_kernel if kernel else x.per_server)[f"Flotilla {node_id}"]
        / (size / (1 << 30))
        for x in spent
    )


def _role_rows(size: int, spent: dict[tuple[str, str], list[Spent]]) -> list[list[str]]:
    """The push split into the receiving node and the other holders; the pull through
    n4 into that relaying node and each holder, with the holders' sum (what serving
    the blob's bytes cost the holders, per GiB served)."""
    push, pull = spent["push", "Flotilla"], spent["pull", "Flotilla"]
    rows = [["(1) push: receiving node", "n1", f"{_node_per_gib(push, 'n1', size):.2f}", ""]]
    others = [_node_per_gib(push, n, size) for n in ("n2", "n3")]
    rows += [["(1) push: other holder", n, f"{v:.2f}", ""]
             for n, v in zip(("n2", "n3"), others, strict=True)]
    rows.append(["(1) push: other holders, sum", "n2+n3", f"{sum(others):.2f}", ""])
    rows.append(["(2) pull: relaying node (no chunk)", "n4",
                 f"{_node_per_gib(pull, 'n4', size):.2f}", ""])
    holders = [_node_per_gib(pull, n, size) for n in ("n1", "n2", "n3")]
    rows += [["(2) pull: holder's share", n, f"{v:.2f}", ""]
             for n, v in zip(("n1", "n2", "n3"), holders, strict=True)]
    total = sum(holders)
    rows.append(["(2) pull: serving holders, sum", "n1+n2+n3", f"{total:.2f}",
                 f"≤ {HOLDER_CPU_GOAL} {verdict(total <= HOLDER_CPU_GOAL)}"])
    # On loopback the kernel time of a sender includes the receiver's TCP input,
    # which a network card and another machine would take off it.
    kernel = sum(_node_per_gib(pull, n, size, kernel=True) for n in ("n1", "n2", "n3"))
    rows.append(["(2) pull: serving holders, kernel part", "n1+n2+n3", f"{kernel:.2f}", ""])
    return rows


def _n4_note(stored: list[int], size: int) -> str:
    """Whether (2) still pulled through a node holding nothing: a repair loop gives a node
    that joined its share of the chunks, fetched in the background while (2) runs."""
    listed = ", ".join(f"{b / MiB:.0f}" for b in stored)
    if not any(stored):
        return "n4 stored no chunk when each of its pulls began."
    return (f"n4 stored {listed} MiB of owned chunks when its pulls of {size / MiB:.0f} MiB "
            "began (its repair loop, paced to a crawl,\nmoves its share to it after it "
            "joins): that much of (2) was local.")
