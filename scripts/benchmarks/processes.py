"""Starting and stopping the servers a benchmark measures, and watching their memory.

Every server runs in its own session with its output in a log file in the
benchmark's temp folder; leaving the `with` block stops it (SIGTERM, then
SIGKILL after a grace period), and the kernel sends it SIGTERM should this
process die without unwinding. Traffic stays on 127.0.0.1, unless a server
is started inside a network namespace (`netns=`, see `netns`), where it
listens on that namespace's address and is checked from inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.benchmarks import netns as namespaces
from scripts.benchmarks.tls_files import BenchTLS

REPO_ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION_BINARY = "/usr/bin/docker-registry"
PR_SET_PDEATHSIG = 1


class ServerFailed(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    verify: ssl.SSLContext | bool = True  # what a client checks its certificate against

    @property
    def pid(self) -> int:
        return self.process.pid


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out below the kernel's ephemeral range, each at most once per
# process: a port the kernel picked for `bind(0)` can be taken again by any
# outgoing connection (a running node dials its peers all the time) before the
# server meant to listen on it has started.
_EPHEMERAL_FLOOR = _ephemeral_floor()
_next_port = itertools.count(random.randrange(10000, max(10001, _EPHEMERAL_FLOOR - 8000)))


def free_port() -> int:
    """A loopback port nobody listens on, that no outgoing connection will take."""
    for port in _next_port:
        if port >= _EPHEMERAL_FLOOR:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # used up: any free port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2.0, verify=server.verify) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerFailed(
                    f"{server.name} exited with {server.process.returncode}:\n"
                    + _log_tail(server.log_path)
                )
            try:
                # 401: up, with access control on (a login is the benchmark's business).
                if client.get(f"{server.url}/v2/").status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise ServerFailed(
        f"{server.name} not ready after {timeout:.0f} s:\n" + _log_tail(server.log_path)
    )


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _running(
    name: str, argv: list[str], url: str, log_path: Path, netns: str | None = None,
    verify: ssl.SSLContext | bool = True,
) -> Iterator[Server]:
    if netns is not None:
        argv = namespaces.exec_argv(netns, argv)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
            preexec_fn=die_with_parent,
        )
    server = Server(name, url, process, log_path, verify)
    try:
        if netns is None:
            _wait_until_ready(server)
        else:
            namespaces.run_in(netns, lambda: _wait_until_ready(server))
        yield server
    finally:
        _stop(process)


def _serve_argv(data: Path, port: int, *extra: str, host: str = "127.0.0.1") -> list[str]:
    """`flotilla serve` with quiet logs, its data in `data`, HTTP on `host`:`port`."""
    return [
        sys.executable, "-m", "node.cli", "serve",
        "--data", str(data),
        "--listen", f"{host}:{port}",
        "--log-level", "warning",
        # Open, as Distribution is here; on a namespace address that must be said.
        *(("--auth", "none") if serve_accepts("--auth") and not host.startswith("127.") else ()),
        *extra,
    ]


@functools.cache
def serve_accepts(flag: str) -> bool:
    """Whether this tree's `flotilla serve` knows `flag` (benchmarks run on branches that
    may not have every setting yet)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "node.cli", "serve", "--help"], cwd=REPO_ROOT,
        capture_output=True, text=True, check=False,
    ).stdout
    return flag in help_text


@contextlib.contextmanager
def flotilla_node(workdir: Path, *, chunk_size: int | None = None) -> Iterator[Server]:
    """`flotilla serve` on a free loopback port with its data under `workdir`."""
    port = free_port()
    extra = ["--chunk-size", str(chunk_size)] if chunk_size is not None else []
    if serve_accepts("--data-listen"):
        extra += ["--data-listen", f"127.0.0.1:{free_port()}"]
    argv = _serve_argv(workdir / "flotilla-data", port, *extra)
    with _running("Flotilla", argv, f"http://127.0.0.1:{port}", workdir / "flotilla.log") as s:
        yield s


@contextlib.contextmanager
def flotilla_raft_member(
    workdir: Path, node_id: str, http_port: int, raft_port: int, peers: str, secret_file: Path,
    *, extra: list[str] | None = None, host: str = "127.0.0.1", netns: str | None = None,
    tls: BenchTLS | None = None,
) -> Iterator[Server]:
    """One member of a bootstrapped Raft group: `flotilla serve --node-id … --peers …`,
    data in `workdir/<node_id>`, log in `workdir/<node_id>.log`. Ready once it answers
    /v2/, which comes before the group has a leader. With `tls`, HTTPS on its port and
    TLS between nodes."""
    extra = list(extra or []) + (tls.flotilla_flags if tls else [])
    if netns is None and "--data-listen" not in extra and serve_accepts("--data-listen"):
        # On the shared loopback the default (the HTTP port + 2000) may be in use.
        extra += ["--data-listen", f"{host}:{free_port()}"]
    argv = _serve_argv(
        workdir / node_id, http_port,
        "--node-id", node_id,
        "--raft", f"{host}:{raft_port}",
        "--peers", peers,
        "--secret-file", str(secret_file),
        *extra,
        host=host,
    )
    url = f"{'https' if tls else 'http'}://{host}:{http_port}"
    log_path = workdir / f"{node_id}.log"
    with _running(f"Flotilla {node_id}", argv, url, log_path, netns,
                  verify=tls.context() if tls else True) as s:
        yield s


DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}:{port}
"""
DISTRIBUTION_TLS = """\
  tls:
    certificate: {cert}
    key: {key}
"""


@contextlib.contextmanager
def distribution(
    workdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
    netns: str | None = None, tls: BenchTLS | None = None,
) -> Iterator[Server]:
    """CNCF Distribution (`docker-registry serve`) with a filesystem store under `workdir`;
    with `tls`, serving HTTPS with that certificate."""
    if not shutil.which(DISTRIBUTION_BINARY):
        raise ServerFailed(
            f"{DISTRIBUTION_BINARY} not found: install the Debian package "
            "(sudo apt-get install docker-registry)"
        )
    port = port or free_port()
    root = workdir / "distribution-data"
    root.mkdir()
    config = workdir / "distribution.yml"
    text = DISTRIBUTION_CONFIG.format(root=root, host=host, port=port)
    if tls:
        text += DISTRIBUTION_TLS.format(cert=tls.cert, key=tls.key)
    config.write_text(text)
    argv = [DISTRIBUTION_BINARY, "serve", str(config)]
    with _running(
        "Distribution", argv, f"{'https' if tls else 'http'}://{host}:{port}",
        workdir / "distribution.log", netns, verify=tls.context() if tls else True,
    ) as s:
        yield s


@contextlib.contextmanager
def noop_hypercorn(workdir: Path) -> Iterator[Server]:
    """Hypercorn configured as a node's, serving an app that does nothing."""
    port = free_port()
    argv = [sys.executable, "-m", "scripts.benchmarks.noop_asgi", f"127.0.0.1:{port}"]
    with _running(
        "Hypercorn (no-op app)", argv, f"http://127.0.0.1:{port}", workdir / "noop.log"
    ) as s:
        yield s


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_seconds(pid: int) -> float:
    """The part of `cpu_seconds` spent in the kernel on the process's behalf."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """The peak resident set of a process over a `with` block, in MiB.

    The kernel's high-water mark (VmHWM) is reset on entry (clear_refs 5) and
    read on exit; a thread polling VmRSS every few milliseconds backs it up
    where resetting is not allowed.
    """

    def __init__(self, pid: int, every: float = 0.005) -> None:
        self.pid = pid
        self.every = every
        self.before_mib = 0.0
        self.polled_mib = 0.0
        self.hwm_mib: float | None = None
        self._reset_ok = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.before_mib = _status_kib(self.pid, "VmRSS") / 1024
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self._reset_ok = True
        except OSError:
            self._reset_ok = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._reset_ok:
            self.hwm_mib = _status_kib(self.pid, "VmHWM") / 1024

    @property
    def peak_mib(self) -> float:
        return max(self.polled_mib, self.hwm_mib or 0.0)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                rss = _status_kib(self.pid, "VmRSS") / 1024
            except (OSError, KeyError):
                return
            self.polled_mib = max(self.polled_mib, rss)
            self._stop.wait(self.every)


def wait_until_writable(url: str, name: str, timeout: float = 30.0,
                        verify: ssl.SSLContext | bool = True) -> None:
    """Push tiny blobs until one is stored: a Flotilla node answers /v2/ before its
    Raft group has a leader, and the first timed push must not wait for the election."""
    from scripts.benchmarks.client import RegistryClient

    deadline = time.monotonic() + timeout
    with RegistryClient(url, repo="bench-warmup", verify=verify) as client:
        attempt = 0
        while True:
            attempt += 1
            status = client.push_bytes(f"warm-up {attempt}".encode())
            if status == 201:
                return
            if time.monotonic() > deadline:
                raise ServerFailed(f"{name} still cannot store a blob (last status {status})")
            time.sleep(0.2)
