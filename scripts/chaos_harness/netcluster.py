"""The chaos cluster: N `flotilla serve` processes, each on a host of its own.

Host k (1..N) is the network namespace `chaos-hk` at 10.78.0.k on one bridge
(the `Fabric` of `scripts.benchmarks.netns`); the harness's clients live on
host 200 (`chaos-h200`), so a partition between nodes leaves every node
reachable from the clients. Each node's data directory is a tmpfs of its own
(`--disk-mib`), so filling it is a real full disk, and `--min-free-bytes` is
small enough for such a disk to hold pushes (there is no flag for it, so
through `FLOTILLA_MIN_FREE_BYTES`). The nodes run with
`--consistency linearizable` unless told otherwise, `--chunk-size 1 MiB` so
blobs of a few MiB have several chunks, and R=2.

A node is started with `ip netns exec` (which execs, so the process's pid is
the node's) in a session of its own, its output appended to `node-k.log`
across restarts. `close()` stops everything this module made: processes,
mounts, namespaces and the work folder (unless it is to be kept);
`remove_leftovers()` does the same for a run that crashed before its own
cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync
from scripts.benchmarks import netns, processes

FABRIC = netns.Fabric(prefix="chaos-", dev="ch", subnet="10.78.0")
CLIENT_HOST = 200
HTTP_PORT = 5000  # every namespace has its own ports
RAFT_PORT = 6001
DATA_PORT = 7001
MiB = 1 << 20
MIN_FREE_BYTES = 8 * MiB  # no flag for it: set through the environment
MOUNT_MARK = "flotilla-chaos-"  # work folders are named so leftovers can be found


class ClusterFailed(RuntimeError):
    """The cluster could not be built or did not come up; the message says why."""


@dataclass
class Node:
    k: int
    node_id: str
    data: Path
    log_path: Path
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://{FABRIC.host_ip(self.k)}:{HTTP_PORT}"

    @property
    def ns(self) -> str:
        return FABRIC.host_ns(self.k)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def in_client_ns(action: Any) -> Any:
    """`action()` on a thread inside the clients' namespace."""
    return netns.run_in(FABRIC.host_ns(CLIENT_HOST), action)


@dataclass
class ChaosCluster:
    workdir: Path
    nodes: dict[int, Node] = field(default_factory=dict)
    secret: bytes = b""
    mounted: list[Path] = field(default_factory=list)

    @classmethod
    def build(cls, workdir: Path, count: int, disk_mib: int, consistency: str,
              chunk_size: int) -> ChaosCluster:
        cluster = cls(workdir)
        secret_file = workdir / "secret"
        cluster.secret = load_or_create_secret(secret_file)
        FABRIC.create([*range(1, count + 1), CLIENT_HOST], rate_mbit=None)
        peers = ",".join(f"n{k}={FABRIC.host_ip(k)}:{RAFT_PORT}" for k in range(1, count + 1))
        for k in range(1, count + 1):
            data = workdir / f"n{k}"
            data.mkdir()
            netns.run_command("mount", "-t", "tmpfs", "-o", f"size={disk_mib}m",
                              f"{MOUNT_MARK}n{k}", str(data))
            cluster.mounted.append(data)
            host = FABRIC.host_ip(k)
            argv = [
                sys.executable, "-m", "node.cli", "serve",
                "--data", str(data / "node"),
                "--listen", f"{host}:{HTTP_PORT}",
                "--auth", "none",  # a private network of the harness's own
                "--raft", f"{host}:{RAFT_PORT}",
                "--data-listen", f"{host}:{DATA_PORT}",
                "--node-id", f"n{k}",
                "--peers", peers,
                "--secret-file", str(secret_file),
                "--replication", "2",
                "--chunk-size", str(chunk_size),
                "--consistency", consistency,
                "--cache-bytes", str(64 * MiB),
                "--propose-timeout", "5",
                "--repair-interval", "20",
                "--log-level", "warning",
            ]
            cluster.nodes[k] = Node(k, f"n{k}", data, workdir / f"node-{k}.log", argv)
        return cluster

    # -- processes --------------------------------------------------------------

    def start(self, k: int) -> None:
        node = self.nodes[k]
        with open(node.log_path, "ab") as log:
            log.write(f"--- chaos: start n{k} at {time.time():.1f}\n".encode())
            log.flush()
            node.process = subprocess.Popen(
                netns.exec_argv(node.ns, node.argv), cwd=processes.REPO_ROOT,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "FLOTILLA_MIN_FREE_BYTES": str(MIN_FREE_BYTES)},
                start_new_session=True,
                # The kernel's parent-death signal follows the thread that forked: only
                # the main thread lives as long as the harness. A node restarted by the
                # fault thread is stopped by `close()` or, after a crash, by the next
                # run's `remove_leftovers()`.
                preexec_fn=processes.die_with_parent
                if threading.current_thread() is threading.main_thread() else None,
            )
        node.paused = False

    def kill(self, k: int) -> None:
        node = self.nodes[k]
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()
        node.paused = False

    def pause(self, k: int) -> None:
        node = self.nodes[k]
        if node.alive:
            node.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            node.paused = True

    def resume(self, k: int) -> None:
        node = self.nodes[k]
        if node.alive and node.paused:
            node.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        node.paused = False

    def unexpected_exits(self) -> list[str]:
        """Nodes that died without the harness killing them, with their exit code."""
        return [f"n{n.k} exited with {n.process.returncode}" for n in self.nodes.values()
                if n.process is not None and n.process.poll() is not None]

    # -- questions --------------------------------------------------------------

    def ready(self, k: int, timeout: float = 3.0) -> bool:
        def ask() -> bool:
            try:
                return httpx.get(f"{self.nodes[k].url}/readyz", timeout=timeout,
                                 trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False
        return bool(in_client_ns(ask))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.ready(k) for k in self.nodes):
                return
            dead = [f"n{k}" for k, n in self.nodes.items() if not n.alive]
            if dead:
                raise ClusterFailed(f"{', '.join(dead)} exited while starting; see the logs")
            time.sleep(0.3)
        raise ClusterFailed(f"the nodes were not all ready within {timeout:.0f} s")

    def leader(self) -> int | None:
        """The node number most reachable nodes name as leader (None if none does)."""
        def ask() -> int | None:
            votes: dict[str, int] = {}
            for n in self.nodes.values():
                if not n.alive or n.paused:
                    continue
                try:
                    response = call_sync(self.secret, "GET", f"{n.url}/_cluster/status",
                                         node_id=n.node_id, timeout=3)
                    leader = response.json().get("leader") if response.status_code == 200 \
                        else None
                except (httpx.HTTPError, ValueError):
                    leader = None
                if leader:
                    votes[leader] = votes.get(leader, 0) + 1
            if not votes:
                return None
            best = max(votes, key=votes.__getitem__)
            return int(best.removeprefix("n")) if best.removeprefix("n").isdigit() else None
        return in_client_ns(ask)

    # -- cleanup ----------------------------------------------------------------

    def close(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                if node.paused:
                    node.process.send_signal(signal.SIGCONT)
                node.process.terminate()
        for node in self.nodes.values():
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
        FABRIC.remove_all()
        for path in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        self.mounted.clear()


def remove_leftovers() -> None:
    """Namespaces (and what runs in them) and tmpfs mounts of an earlier run that
    crashed before cleaning up."""
    FABRIC.remove_all()
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        parts = line.split()
        if len(parts) > 1 and parts[0].startswith(MOUNT_MARK):
            subprocess.run(["umount", "-l", parts[1].replace("\\040", " ")],
                           capture_output=True, check=False)

