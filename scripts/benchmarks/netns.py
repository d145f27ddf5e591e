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
The names and the subnet are a `Fabric`, so
the chaos harness builds its own set (`chaos-…`, 10.78.0.K) beside it.
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
from dataclasses import dataclass
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetnsUnavailable(RuntimeError):
    """This machine or user cannot build the namespaces (not root, no `ip` or `tc`)."""


class NetnsCommandFailed(RuntimeError):
    """An `ip` or `tc` command failed; the message carries its output."""


def require_root_and_tools(tools: tuple[str, ...] = ("ip", "tc")) -> None:
    """Refuse early and clearly instead of failing half way through the setup."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("needs root (network namespaces and tc): run it with sudo")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise NetnsUnavailable(
            f"missing {' and '.join(missing)}: install them "
            "(sudo apt-get install iproute2 iptables)"
        )


def run_command(*argv: str) -> str:
    """Run `ip`, `tc` or `iptables`; its output, or NetnsCommandFailed with its error."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsCommandFailed(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout}")
    return result.stdout



@dataclass(frozen=True)
class Fabric:
    """One set of hosts on one bridge, named so that two users (the fanout benchmark,
    the chaos harness) never touch each other's: namespaces `<prefix>hK` and
    `<prefix>br`, veth ends `<dev>-hK` / `<dev>-bK`, bridge `<dev>-br`, addresses
    `<subnet>.K`."""

    prefix: str
    dev: str
    subnet: str

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}br"

    def host_ns(self, k: int) -> str:
        return f"{self.prefix}h{k}"

    def host_ip(self, k: int) -> str:
        return f"{self.subnet}.{k}"

    def host_dev(self, k: int) -> str:
        """Host k's end of its link, inside its namespace."""
        return f"{self.dev}-h{k}"

    def bridge_dev(self, k: int) -> str:
        """The bridge's end of host k's link, inside the bridge namespace."""
        return f"{self.dev}-b{k}"

    def ours(self) -> list[str]:
        """Namespaces of this fabric that exist right now."""
        listing = run_command("ip", "netns", "list").splitlines()
        names = [line.split()[0] for line in listing if line]
        return [n for n in names if n == self.bridge_ns or (
            n.startswith(f"{self.prefix}h") and n[len(self.prefix) + 1:].isdigit())]

    def remove_all(self) -> None:
        """Delete this fabric's namespaces, first stopping what still runs inside them
        (servers of an earlier run that was interrupted before its own cleanup)."""
        for name in self.ours():
            pids = [int(p) for p in run_command("ip", "netns", "pids", name).split()]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            run_command("ip", "netns", "delete", name)

    def create(self, hosts: list[int], rate_mbit: int | None) -> None:
        """The bridge namespace and one namespace per host number in `hosts`, links
        limited both ways to `rate_mbit` (None: not limited)."""
        self.remove_all()
        bridge = f"{self.dev}-br"
        run_command("ip", "netns", "add", self.bridge_ns)
        run_command("ip", "-n", self.bridge_ns, "link", "add", bridge, "type", "bridge")
        run_command("ip", "-n", self.bridge_ns, "link", "set", bridge, "up")
        run_command("ip", "-n", self.bridge_ns, "link", "set", "lo", "up")
        for k in hosts:
            ns, here, there = self.host_ns(k), self.host_dev(k), self.bridge_dev(k)
            run_command("ip", "netns", "add", ns)
            run_command("ip", "link", "add", here, "netns", ns, "type", "veth",
                 "peer", "name", there, "netns", self.bridge_ns)
            run_command("ip", "-n", self.bridge_ns, "link", "set", there, "master", bridge)
            run_command("ip", "-n", self.bridge_ns, "link", "set", there, "up")
            run_command("ip", "-n", ns, "addr", "add", f"{self.host_ip(k)}/24", "dev", here)
            run_command("ip", "-n", ns, "link", "set", here, "up")
            run_command("ip", "-n", ns, "link", "set", "lo", "up")
            if rate_mbit is None:
                continue
            for side_ns, dev in ((ns, here), (self.bridge_ns, there)):
                run_command("tc", "-n", side_ns, "qdisc", "add", "dev", dev, "root", "tbf",
                     "rate", f"{rate_mbit}mbit", "burst", "256kb", "latency", "50ms")


FANOUT = Fabric(prefix="fanout-", dev="fo", subnet="10.77.0")
PREFIX = FANOUT.prefix
BRIDGE_NS = FANOUT.bridge_ns
SUBNET = FANOUT.subnet


def host_ns(k: int) -> str:
    return FANOUT.host_ns(k)


def host_ip(k: int) -> str:
    return FANOUT.host_ip(k)


def remove_all() -> None:
    """Delete the fanout benchmark's namespaces (see `Fabric.remove_all`)."""
    FANOUT.remove_all()


def create(hosts: int, rate_mbit: int) -> None:
    """The fanout bridge and hosts 1..`hosts`, links limited both ways."""
    FANOUT.create(list(range(1, hosts + 1)), rate_mbit)


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
