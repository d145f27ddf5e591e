"""Injecting the planned faults into the chaos cluster, and healing them.

Each kind of `plan.Fault` has an `inject` and a `heal`:
- kill: SIGKILL the node; heal starts it again on the same data.
- pause: SIGSTOP; heal SIGCONT.
- partition: iptables DROP rules inside the node namespaces between the cut
  nodes and the others, both directions, so packets vanish (timeouts, as on
  a real network) instead of being refused; the clients' host is never cut.
  Heal deletes exactly the rules it added.
- netem: `tc netem` delay, loss or reordering on both ends of the node's
  link (what it sends and what it receives); heal deletes the qdisc. Some
  kernels are built without netem (CONFIG_NET_SCH_NETEM unset, as on the
  development machine): there loss becomes iptables random drops and delay a
  slow `tbf` link whose queue holds packets back; reordering has no stand-in
  and runs as loss plus delay. The report says which way each ran.
- disk: a file that takes the free room of the node's tmpfs, all of it
  (`--disk-fill full`, the default: pushes get 507, and the Raft log and the
  database find no room either, so the node waits for room without saving or
  applying) or all but half the node's free-space floor (`floor`: the node
  refuses pushes with 507 while its database and Raft log still have the room
  the floor keeps for them); heal deletes it.
`Injector.run(plan, stop)` walks the plan in real time on its own thread and
records what it did (with the node a "leader" target resolved to);
`heal_all()` undoes everything at the end, whatever is still active.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scripts.benchmarks import netns
from scripts.chaos_harness.netcluster import CLIENT_HOST, FABRIC, ChaosCluster
from scripts.chaos_harness.plan import Fault

FILL_NAME = "chaos-fill"


@dataclass
class Injected:
    """What was done for one planned fault: the nodes it hit and when (harness clock)."""

    fault: Fault
    nodes: list[int]
    started: float
    healed: float | None = None
    error: str | None = None
    via: str = ""  # how a netem fault was done where the kernel has no netem
    rules: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)  # iptables, by node

    def describe(self) -> str:
        what = self.fault.kind + (f"/{self.fault.shape}" if self.fault.shape else "")
        via = f" (as {self.via})" if self.via else ""
        return f"{what} on {','.join(f'n{k}' for k in self.nodes)}{via}"

    def to_json(self) -> dict[str, Any]:
        return {**self.fault.to_json(), "nodes": self.nodes, "started_at": self.started,
                "healed_at": self.healed, "error": self.error, "via": self.via}


@dataclass
class Injector:
    cluster: ChaosCluster
    t0: float
    netem: bool = True  # whether this kernel has the netem qdisc (see `netem_available`)
    fill_leaves: int = 0  # bytes a disk fault leaves free (see `--disk-fill`)
    done: list[Injected] = field(default_factory=list)
    died: list[str] = field(default_factory=list)  # nodes found dead that no fault killed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _resolve(self, fault: Fault) -> list[int]:
        nodes = []
        for target in fault.targets:
            if target == "leader":
                leader = self.cluster.leader()
                nodes.append(leader if leader is not None else 1)
            else:
                nodes.append(int(target))
        return nodes

    # -- each kind ----------------------------------------------------------------

    def _iptables(self, k: int, action: str, rule: tuple[str, ...]) -> None:
        netns.run_command("ip", "netns", "exec", FABRIC.host_ns(k), "iptables", action, *rule)

    def _add_rules(self, record: Injected, rules: list[tuple[int, tuple[str, ...]]]) -> None:
        for k, rule in rules:
            self._iptables(k, "-A", rule)
            record.rules.append((k, rule))

    def _remove_rules(self, record: Injected) -> None:
        for k, rule in record.rules:
            self._iptables(k, "-D", rule)
        record.rules.clear()

    def _partition(self, record: Injected) -> None:
        cut = record.nodes
        rest = [k for k in self.cluster.nodes if k not in cut]
        rules = []
        for inside, outside in ((cut, rest), (rest, cut)):
            for k in inside:
                for other in outside:
                    ip = FABRIC.host_ip(other)
                    rules += [(k, ("INPUT", "-s", ip, "-j", "DROP")),
                              (k, ("OUTPUT", "-d", ip, "-j", "DROP"))]
        self._add_rules(record, rules)

    @staticmethod
    def _netem_args(fault: Fault) -> list[str]:
        p = fault.params
        args = ["delay", f"{p.get('delay_ms', 50)}ms"]
        if fault.shape == "delay":
            args += [f"{p.get('delay_ms', 50) // 2}ms"]  # jitter
        if "loss_pct" in p:
            args += ["loss", f"{p['loss_pct']}%"]
        if "reorder_pct" in p:
            args += ["reorder", f"{p['reorder_pct']}%", "50%"]
        return args

    def _links(self, k: int) -> list[tuple[str, str]]:
        return [(FABRIC.host_ns(k), FABRIC.host_dev(k)), (FABRIC.bridge_ns, FABRIC.bridge_dev(k))]

    def _netem(self, record: Injected) -> None:
        k, fault = record.nodes[0], record.fault
        if self.netem:
            for ns, dev in self._links(k):
                netns.run_command("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root",
                                  "netem", *self._netem_args(fault))
            return
        # No netem in this kernel: loss as random drops, delay as a slow link whose queue
        # holds packets back; reordering has no stand-in (noted in the record).
        loss = fault.params.get("loss_pct", 0 if fault.shape != "reorder" else 5)
        if loss:
            probability = f"{loss / 100:.3f}"
            self._add_rules(record, [
                (k, (chain, "-m", "statistic", "--mode", "random", "--probability",
                     probability, "-j", "DROP")) for chain in ("INPUT", "OUTPUT")])
        rate = max(1, 2000 // int(fault.params.get("delay_ms", 50)))  # Mbit/s
        for ns, dev in self._links(k):
            netns.run_command("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                              "rate", f"{rate}mbit", "burst", "32kb", "latency",
                              f"{4 * int(fault.params.get('delay_ms', 50))}ms")
        record.via = f"tbf {rate}mbit" + (f" + {loss}% iptables drops" if loss else "")

    def _unnetem(self, k: int) -> None:
        for ns, dev in self._links(k):
            netns.run_command("tc", "-n", ns, "qdisc", "del", "dev", dev, "root")

    def _fill(self, k: int) -> None:
        path = self.cluster.nodes[k].data / FILL_NAME
        room = os.statvfs(path.parent)
        size = room.f_bavail * room.f_frsize - self.fill_leaves
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, max(size, 1))
        except OSError:
            pass  # whatever fitted stays: the disk is as full as it gets
        finally:
            os.close(fd)

    def _unfill(self, k: int) -> None:
        try:
            (self.cluster.nodes[k].data / FILL_NAME).unlink()
        except FileNotFoundError:
            pass

    # -- dispatch -----------------------------------------------------------------

    def inject(self, fault: Fault) -> Injected:
        nodes = self._resolve(fault)
        record = Injected(fault, nodes, time.monotonic() - self.t0)
        try:
            if fault.kind == "kill":
                self.cluster.kill(nodes[0])
            elif fault.kind == "pause":
                self.cluster.pause(nodes[0])
            elif fault.kind == "partition":
                self._partition(record)
            elif fault.kind == "netem":
                self._netem(record)
            elif fault.kind == "disk":
                self._fill(nodes[0])
        except (netns.NetnsCommandFailed, OSError) as exc:
            record.error = str(exc)
        with self.lock:
            self.done.append(record)
        return record

    def heal(self, record: Injected) -> None:
        fault, nodes = record.fault, record.nodes
        try:
            if fault.kind == "kill":
                self.cluster.start(nodes[0])
            elif fault.kind == "pause":
                self.cluster.resume(nodes[0])
            elif fault.kind == "partition":
                self._remove_rules(record)
            elif fault.kind == "netem":
                self._remove_rules(record)
                self._unnetem(nodes[0])
            elif fault.kind == "disk":
                self._unfill(nodes[0])
        except (netns.NetnsCommandFailed, OSError) as exc:
            record.error = (record.error or "") + f" heal: {exc}"
        record.healed = time.monotonic() - self.t0

    def run(self, plan: list[Fault], stop: threading.Event,
            say: Callable[[str], None] = print) -> None:
        """Inject and heal `plan` on time (seconds after `t0`) until done or `stop`."""
        events: list[tuple[float, int, Fault]] = []
        for i, fault in enumerate(plan):
            events += [(fault.start, i, fault), (fault.end, i, fault)]
        events.sort(key=lambda e: (e[0], e[1]))
        active: dict[int, Injected] = {}
        for at, i, fault in events:
            if stop.wait(max(0.0, self.t0 + at - time.monotonic())):
                return
            if i in active:
                record = active.pop(i)
                self.heal(record)
                say(f"chaos: {time.monotonic() - self.t0:7.1f}s  healed {record.describe()}")
            else:
                record = self.inject(fault)
                active[i] = record
                say(f"chaos: {record.started:7.1f}s  {record.describe()}"
                    f"{'  FAILED: ' + record.error if record.error else ''}")

    def heal_all(self) -> None:
        """Undo every fault still active, and anything a fault may have left."""
        with self.lock:
            pending = [r for r in self.done if r.healed is None]
        for record in pending:
            self.heal(record)
        for k, node in self.cluster.nodes.items():
            self.cluster.resume(k)
            if not node.alive:
                code = node.process.returncode if node.process is not None else None
                self.died.append(f"n{k} (exit {code})")
                self.cluster.start(k)
            self._unfill(k)
            try:
                self._unnetem(k)
            except netns.NetnsCommandFailed:
                pass  # no netem on this link: nothing to undo
            netns.run_command("ip", "netns", "exec", FABRIC.host_ns(k), "iptables", "-F")


def netem_available() -> bool:
    """Whether the kernel has the netem qdisc: tried on the clients' link."""
    ns, dev = FABRIC.host_ns(CLIENT_HOST), FABRIC.host_dev(CLIENT_HOST)
    try:
        netns.run_command("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem",
                          "delay", "1ms")
    except netns.NetnsCommandFailed:
        return False
    netns.run_command("tc", "-n", ns, "qdisc", "del", "dev", dev, "root")
    return True
