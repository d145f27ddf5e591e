"""`scripts/bench single`: one Flotilla node against one CNCF Distribution.

Both run on this machine with their stores in one temp folder on the same
disk, and are driven by the same client. For each of monolithic push,
chunked push (16 MiB PATCHes) and whole-blob GET, every system gets the same
salted random blob, each measurement is repeated and the median kept, and the
systems alternate so neither always goes first. `sync` runs before every
timed operation (outside the timing), so writeback left over from one system
never lands in the other's measurement. Last, Flotilla's peak RSS is taken
over one push of a larger blob. Goals (issue 2): Flotilla/Distribution ≥ 1.0
on every line, peak RSS ≤ 200 MiB during a 1 GiB push.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from scripts.benchmarks import processes
from scripts.benchmarks.client import FlowFailed, RegistryClient
from scripts.benchmarks.payload import Blob, MiB, write_random_file
from scripts.benchmarks.processes import PeakMemory, Server, ServerFailed, wait_until_writable
from scripts.benchmarks.table import render, verdict

PATCH_PIECE = 16 * MiB
RSS_GOAL_MIB = 200
RATIO_GOAL = 1.0
SYSTEMS = ("Flotilla", "Distribution")
OPERATIONS = {
    "monolithic": "push: POST + monolithic PUT",
    "chunked": "push: POST + PATCH 16 MiB pieces + PUT",
    "pull": "pull: GET whole blob (sha256 checked)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=512, help="blob size (default 512)")
    parser.add_argument(
        "--rss-size-mib",
        type=int,
        default=1024,
        help="size of the push Flotilla's peak RSS is measured over (default 1024)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="Flotilla's chunk size in bytes (default: its own)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the temp folder goes (default: the system temp dir)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after measuring, leave both servers up until Ctrl-C (for attaching a profiler)",
    )


def _timed(server: Server, action: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock seconds of `action`, and the CPU seconds `server` spent meanwhile."""
    os.sync()
    cpu = processes.cpu_seconds(server.pid)
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    return wall, processes.cpu_seconds(server.pid) - cpu


def _distribution_version() -> str:
    try:
        out = subprocess.run(
            [processes.DISTRIBUTION_BINARY, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split()
        return out[2] if len(out) >= 3 else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class Measurements:
    """Seconds per run, by (operation, system), the bytes each run moved, server CPU."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.bytes: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.cpu: dict[tuple[str, str], list[float]] = defaultdict(list)

    def add(self, operation: str, system: str, size: int, timing: tuple[float, float]) -> None:
        seconds, cpu = timing
        self.seconds[operation, system].append(seconds)
        self.bytes[operation, system].append(size)
        self.cpu[operation, system].append(cpu)
        print(
            f"  {operation:<10} {system:<12} {size / seconds / 1e6:8.1f} MB/s  ({seconds:.2f} s, "
            f"server CPU {cpu:.2f} s)",
            file=sys.stderr,
        )

    def median_cpu_per_gib(self, operation: str, system: str) -> float:
        per_gib = [
            c / (b / (1 << 30))
            for b, c in zip(self.bytes[operation, system], self.cpu[operation, system], strict=True)
        ]
        return statistics.median(per_gib)

    def median_mb_s(self, operation: str, system: str) -> float:
        rates = [
            b / s / 1e6
            for b, s in zip(
                self.bytes[operation, system], self.seconds[operation, system], strict=True
            )
        ]
        return statistics.median(rates)


def _measure(
    servers: dict[str, Server], random_file: Path, repeat: int, results: Measurements
) -> None:
    clients = {name: RegistryClient(server.url) for name, server in servers.items()}
    serial = 0
    pulled: Blob | None = None
    try:
        for run in range(repeat):
            order = SYSTEMS if run % 2 == 0 else SYSTEMS[::-1]
            for mode in ("monolithic", "chunked"):
                serial += 1
                blob = Blob.salted(random_file, f"{mode} run {run}", serial)
                for system in order:
                    client = clients[system]
                    if mode == "monolithic":
                        timing = _timed(
                            servers[system], lambda c=client, b=blob: c.push_monolithic(b)
                        )
                        pulled = blob
                    else:
                        timing = _timed(
                            servers[system], lambda c=client, b=blob: c.push_chunked(b, PATCH_PIECE)
                        )
                    results.add(mode, system, blob.size, timing)
        assert pulled is not None
        for run in range(repeat):
            order = SYSTEMS if run % 2 == 0 else SYSTEMS[::-1]
            for system in order:
                client = clients[system]
                timing = _timed(servers[system], lambda c=client: c.pull(pulled))
                results.add("pull", system, pulled.size, timing)
    finally:
        for client in clients.values():
            client.close()


def _peak_rss(server: Server, blob: Blob) -> PeakMemory:
    with RegistryClient(server.url, repo="bench-rss") as client:
        os.sync()
        with PeakMemory(server.pid) as peak:
            client.push_monolithic(blob)
    return peak


def _report(
    args: argparse.Namespace,
    size: int,
    results: Measurements,
    flotilla_rss: PeakMemory,
    distribution_rss: PeakMemory,
) -> str:
    rows = []
    cpu_rows = []
    for op, label in OPERATIONS.items():
        f = results.median_mb_s(op, "Flotilla")
        d = results.median_mb_s(op, "Distribution")
        ratio = f / d
        rows.append([label, f"{f:.1f}", f"{d:.1f}", f"{ratio:.2f}", verdict(ratio >= RATIO_GOAL)])
        cpu_rows.append(
            [
                label,
                f"{results.median_cpu_per_gib(op, 'Flotilla'):.2f}",
                f"{results.median_cpu_per_gib(op, 'Distribution'):.2f}",
            ]
        )
    table = render(
        ["operation", "Flotilla MB/s", "Distribution MB/s", "ratio F/D", f"goal ≥ {RATIO_GOAL}"],
        rows,
    )
    cpu_table = render(["server CPU s per GiB (user+sys)", "Flotilla", "Distribution"], cpu_rows)
    rss = flotilla_rss.peak_mib
    hwm = f"{flotilla_rss.hwm_mib:.0f}" if flotilla_rss.hwm_mib is not None else "n/a"
    lines = [
        f"scripts/bench single — Flotilla vs CNCF Distribution {_distribution_version()}, "
        f"one node each on 127.0.0.1, same disk",
        f"blob {size / MiB:.0f} MiB random (+ a few salt bytes), same httpx client, "
        f"median of {args.repeat}, MB/s = 10^6 bytes/s",
        "",
        table,
        "",
        f"Flotilla peak RSS during a {args.rss_size_mib} MiB monolithic push: {rss:.0f} MiB "
        f"(VmHWM {hwm} MiB, polled VmRSS {flotilla_rss.polled_mib:.0f} MiB, "
        f"{flotilla_rss.before_mib:.0f} MiB before)   goal ≤ {RSS_GOAL_MIB} MiB: "
        f"{verdict(rss <= RSS_GOAL_MIB)}",
        f"(Distribution, same push, for reference: {distribution_rss.peak_mib:.0f} MiB)",
        "",
        cpu_table,
        "(informative: the client shares this machine's CPUs with both servers)",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    size = args.size_mib * MiB
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-bench-", dir=args.workdir))
    try:
        random_file = workdir / "random.bin"
        print(f"bench single: temp folder {workdir}", file=sys.stderr)
        write_random_file(random_file, size)
        with contextlib.ExitStack() as stack:
            servers = {
                "Flotilla": stack.enter_context(
                    processes.flotilla_node(workdir, chunk_size=args.chunk_size)
                ),
                "Distribution": stack.enter_context(processes.distribution(workdir)),
            }
            for name, server in servers.items():
                print(f"  {name} at {server.url} (pid {server.pid})", file=sys.stderr)
            for server in servers.values():
                wait_until_writable(server.url, server.name)
            results = Measurements()
            _measure(servers, random_file, args.repeat, results)
            rss_blob = Blob.salted(random_file, "rss", 0, size=args.rss_size_mib * MiB)
            flotilla_rss = _peak_rss(servers["Flotilla"], rss_blob)
            distribution_rss = _peak_rss(servers["Distribution"], rss_blob)
            print()
            print(_report(args, size, results, flotilla_rss, distribution_rss))
            if args.keep_running:
                print("servers still running; Ctrl-C to stop", file=sys.stderr)
                while True:
                    time.sleep(3600)
    except (ServerFailed, FlowFailed) as exc:
        print(f"bench single: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
