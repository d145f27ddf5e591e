"""Hosts as Linux network namespaces on one bridge, each link rate-limited with `tc`.

`scripts/bench fanout` needs hosts whose links, not loopback, bound a
transfer. Each host is a namespace `fanout-hK` with one veth end `fo-hK`
(address 10.77.0.K/24); the other end `fo-bK` is a port of the bridge
`fo-br` inside the namespace `fanout-br`. The bridge lives in a namespace of
its own because dockerd sets the host's FORWARD policy to DROP, which, with
bridge netfilter on, would drop bridged frames too; a fresh namespace's
FORWARD accepts. A token bucket (`tbf`) on the egress of both ends limits
each host both ways: `fo-hK` its upload, `fo-bK` its download. Nothing is
created in the machine's own namespace, so nothing there needs cleaning.
Needs root, `ip` and `tc`. `run_in` runs a function on a thread that has
entered a namespace, so this process can open sockets there without a
helper process; sockets keep the namespace they were created in.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

PREFIX = "fanout-"
BRIDGE_NS = f"{PREFIX}br"
BRIDGE = "fo-br"
SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetnsUnavailable(RuntimeError):
    """This machine or user cannot build the namespaces (not root, no `ip` or `tc`)."""


class NetnsCommandFailed(RuntimeError):
    """An `ip` or `tc` command failed; the message carries its output."""


def require_root_and_tools() -> None:
    """Refuse early and clearly instead of failing half way through the setup."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("needs root (network namespaces and tc): run it with sudo")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise NetnsUnavailable(
            f"missing {' and '.join(missing)}: install iproute2 (sudo apt-get install iproute2)"
        )


def host_ns(k: int) -> str:
    return f"{PREFIX}h{k}"


def host_ip(k: int) -> str:
    return f"{SUBNET}.{k}"


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsCommandFailed(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout}")
    return result.stdout


def _ours() -> list[str]:
    """Namespaces this benchmark creates that exist right now."""
    names = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line]
    return [n for n in names if n == BRIDGE_NS or (n.startswith(f"{PREFIX}h")
                                                   and n[len(PREFIX) + 1:].isdigit())]


def remove_all() -> None:
    """Delete this benchmark's namespaces, first stopping what still runs inside them
    (servers of an earlier run that was interrupted before its own cleanup)."""
    for name in _ours():
        pids = [int(p) for p in _run("ip", "netns", "pids", name).split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _run("ip", "netns", "delete", name)


def create(hosts: int, rate_mbit: int) -> None:
    """The bridge namespace and `hosts` host namespaces, links limited both ways."""
    remove_all()
    _run("ip", "netns", "add", BRIDGE_NS)
    _run("ip", "-n", BRIDGE_NS, "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "-n", BRIDGE_NS, "link", "set", BRIDGE, "up")
    _run("ip", "-n", BRIDGE_NS, "link", "set", "lo", "up")
    for k in range(1, hosts + 1):
        ns, here, there = host_ns(k), f"fo-h{k}", f"fo-b{k}"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", here, "netns", ns, "type", "veth",
             "peer", "name", there, "netns", BRIDGE_NS)
        _run("ip", "-n", BRIDGE_NS, "link", "set", there, "master", BRIDGE)
        _run("ip", "-n", BRIDGE_NS, "link", "set", there, "up")
        _run("ip", "-n", ns, "addr", "add", f"{host_ip(k)}/24", "dev", here)
        _run("ip", "-n", ns, "link", "set", here, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        for side_ns, dev in ((ns, here), (BRIDGE_NS, there)):
            _run("tc", "-n", side_ns, "qdisc", "add", "dev", dev, "root", "tbf",
                 "rate", f"{rate_mbit}mbit", "burst", "256kb", "latency", "50ms")


def _setns(name: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def run_in(name: str, action: Callable[[], T]) -> T:
    """`action()` on a new thread inside namespace `name`; its result or its exception.
    Only that thread changes namespace (setns of a network namespace is per thread)."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _setns(name)
            outcome.append(action())
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns {name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def exec_argv(name: str, argv: list[str]) -> list[str]:
    """`argv` run inside namespace `name` (`ip netns exec` execs it: same pid)."""
    return ["ip", "netns", "exec", name, *argv]
