"""`scripts/cluster` as a user runs it: a supervisor that outlives its nodes.

The supervisor runs as a subprocess of the test exactly as from a terminal
(`scripts/cluster --data TMP --base-port P --nodes 3`); the control commands
run as a second terminal would run them. The pure parts (what happens after
an exit, how output is cut into lines, which requests are refused) are
checked without processes at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.local_cluster.control import BadRequest, parse_request
from scripts.local_cluster.lifecycle import (
    AfterExit,
    State,
    after_exit,
    describe_exit,
    state_after_exit,
)
from scripts.local_cluster.output import LineSplitter
from tests.cluster.conftest import push_blob
from tests.conftest import ROOT, free_port

CLUSTER = str(ROOT / "scripts" / "cluster")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base_port(nodes: int) -> int:
    """A base port P with every node port free: P+k, P+1000+k, P+2000+k for k = 1..nodes."""
    for _ in range(100):
        base = free_port()
        ports = [base + offset + k for offset in (0, 1000, 2000) for k in range(1, nodes + 1)]
        if ports[-1] < 65536 and all(_port_free(p) for p in ports):
            return base
    raise RuntimeError("no free block of ports for a local cluster")


@dataclass
class LocalCluster:
    """A running `scripts/cluster` supervisor and what the user sees of it."""

    data: Path
    base_port: int
    process: subprocess.Popen[bytes]
    console: Path
    seen_pids: set[int] = field(default_factory=set)

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.base_port + int(node[1:])}"

    def control(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`scripts/cluster COMMAND …` from another terminal."""
        return subprocess.run([CLUSTER, *args, "--data", str(self.data)], capture_output=True,
                              text=True, timeout=60, check=False)

    def status(self) -> dict[str, dict[str, Any]]:
        done = self.control("status", "--json")
        assert done.returncode == 0, done.stderr
        nodes = {n["node"]: n for n in json.loads(done.stdout)}
        self.seen_pids |= {n["pid"] for n in nodes.values() if n["pid"]}
        return nodes

    def wait_for_console(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never printed; console:\n{self.console.read_text()}")

    def wait_until_ready(self, *nodes: str, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(nodes)
        while waiting and time.monotonic() < deadline:
            for node in list(waiting):
                try:
                    if httpx.get(f"{self.url(node)}/readyz", timeout=2).status_code == 200:
                        waiting.discard(node)
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        assert not waiting, f"{sorted(waiting)} not ready in time"

    def wait_for_state(self, node: str, state: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = self.status()[node]
            if report["state"] == state:
                return report
            time.sleep(0.1)
        raise AssertionError(f"{node} never {state}: {self.status()[node]}")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the supervisor; its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[Any]:
    started: list[LocalCluster] = []

    def start(*extra: str, nodes: int = 3) -> LocalCluster:
        data, base = tmp_path / "data", free_base_port(nodes)
        console = tmp_path / "console.txt"
        with open(console, "wb") as out:
            process = subprocess.Popen(
                [CLUSTER, "--data", str(data), "--base-port", str(base), "--nodes", str(nodes),
                 *extra], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        cluster = LocalCluster(data, base, process, console)
        started.append(cluster)
        cluster.wait_for_console(f"n{nodes} started")
        cluster.wait_until_ready(*(f"n{k}" for k in range(1, nodes + 1)))
        return cluster

    yield start
    for cluster in started:
        if cluster.process.poll() is None:
            cluster.process.send_signal(signal.SIGTERM)
            try:
                cluster.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cluster.process.kill()
        for pid in cluster.seen_pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_killed_node_leaves_the_others_serving_and_comes_back_with_its_data_on_start(
    start_cluster: Any,
) -> None:
    cluster = start_cluster()
    before = push_blob(cluster.url("n2"), "app/web", b"pushed before the kill" * 1000)
    n1 = cluster.status()["n1"]
    os.kill(n1["pid"], signal.SIGKILL)  # kill -9 from a terminal, not through the supervisor

    cluster.wait_for_console("n1 died (signal SIGKILL)")
    dead = cluster.wait_for_state("n1", "dead")
    assert dead["state_text"] == "dead: signal SIGKILL" and dead["pid"] is None
    status = cluster.status()
    assert [status[n]["state"] for n in ("n2", "n3")] == ["running", "running"]
    assert [status[n]["readyz"] for n in ("n2", "n3")] == ["ready", "ready"]
    pulled = httpx.get(f"{cluster.url('n3')}/v2/app/web/blobs/{before}", timeout=30)
    assert pulled.status_code == 200 and pulled.content == b"pushed before the kill" * 1000
    after = push_blob(cluster.url("n2"), "app/web", b"pushed while n1 is down" * 1000)
    assert (cluster.data / "node-1.log").stat().st_size > 0  # its last lines can be read

    started = cluster.control("start", "n1")
    assert started.returncode == 0, started.stderr
    cluster.wait_until_ready("n1")
    report = cluster.status()["n1"]
    assert report["state"] == "running" and report["pid"] != n1["pid"]
    assert report["url"] == n1["url"] and report["readyz"] == "ready"
    for digest, body in ((before, b"pushed before the kill"), (after, b"pushed while n1 is down")):
        pulled = httpx.get(f"{cluster.url('n1')}/v2/app/web/blobs/{digest}", timeout=30)
        assert pulled.status_code == 200 and pulled.content == body * 1000


def test_restart_option_brings_back_a_node_that_died_not_one_stopped_or_killed_on_purpose(
    start_cluster: Any,
) -> None:
    cluster = start_cluster("--restart", "--restart-delay", "0.5")
    first = cluster.status()
    os.kill(first["n2"]["pid"], signal.SIGKILL)
    cluster.wait_for_console("n2 died (signal SIGKILL); restarting in 0.5 s")
    deadline = time.monotonic() + 20
    while cluster.status()["n2"]["pid"] in (None, first["n2"]["pid"]):
        assert time.monotonic() < deadline, "n2 was not restarted"
        time.sleep(0.1)
    cluster.wait_until_ready("n2")

    stopped = cluster.control("stop", "n3")
    assert stopped.returncode == 0 and "n3 stopped" in stopped.stdout
    killed = cluster.control("kill", "n1")
    assert killed.returncode == 0 and "SIGKILL" in killed.stdout
    time.sleep(2)  # four restart delays: long enough for a restart that should not happen
    status = cluster.status()
    assert (status["n1"]["state"], status["n1"]["pid"]) == ("stopped", None)
    assert (status["n3"]["state"], status["n3"]["pid"]) == ("stopped", None)
    assert status["n2"]["state"] == "running"

    restarted = cluster.control("restart", "n3")
    assert restarted.returncode == 0 and "n3 started" in restarted.stdout
    assert cluster.status()["n3"]["state"] == "running"


def test_ctrl_c_stops_every_node_and_the_supervisor_exits_zero(start_cluster: Any) -> None:
    cluster = start_cluster()
    pids = [n["pid"] for n in cluster.status().values()]
    assert len(pids) == 3 and all(_alive(p) for p in pids)

    assert cluster.interrupt() == 0
    assert not [p for p in pids if _alive(p)]
    assert "every node stopped" in cluster.console.read_text()
    gone = cluster.control("status")
    assert gone.returncode == 1 and "no cluster supervisor runs" in gone.stderr


def test_a_supervisor_pauses_nodes_and_refuses_unknown_ids_with_exit_2_and_a_second_supervisor(
    start_cluster: Any,
) -> None:
    cluster = start_cluster(nodes=1)
    for command in (["kill", "n7"], ["start", "n7"]):
        refused = cluster.control(*command)
        assert refused.returncode == 2
        assert "unknown node 'n7'" in refused.stderr and "n1" in refused.stderr
    bad_signal = cluster.control("kill", "n1", "--signal", "NOPE")
    assert bad_signal.returncode == 2 and "unknown signal" in bad_signal.stderr
    assert cluster.control("kill", "n1", "--signal", "STOP").returncode == 0
    assert cluster.wait_for_state("n1", "paused")["readyz"] == "no answer"
    assert cluster.control("kill", "n1", "--signal", "CONT").returncode == 0
    cluster.wait_until_ready("n1")

    second = subprocess.run(
        [CLUSTER, "--data", str(cluster.data), "--base-port", str(free_base_port(1)),
         "--nodes", "1"], capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 1
    assert f"a cluster supervisor already runs for {cluster.data}" in second.stderr
    assert cluster.status()["n1"]["state"] == "running"


def test_control_commands_without_a_supervisor_say_so_and_exit_1(tmp_path: Path) -> None:
    for command in (["status"], ["kill", "n1"]):
        done = subprocess.run([CLUSTER, *command, "--data", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1
        assert f"no cluster supervisor runs for {tmp_path}" in done.stderr


def test_only_a_node_that_died_by_itself_is_restarted_and_only_with_restart_on() -> None:
    assert after_exit(restart=True, on_purpose=False, shutting_down=False) is AfterExit.RESTART
    assert after_exit(restart=False, on_purpose=False, shutting_down=False) is AfterExit.STAY_DOWN
    assert after_exit(restart=True, on_purpose=True, shutting_down=False) is AfterExit.STAY_DOWN
    assert after_exit(restart=True, on_purpose=False, shutting_down=True) is AfterExit.STAY_DOWN
    assert state_after_exit(AfterExit.STAY_DOWN, on_purpose=True) is State.STOPPED
    assert state_after_exit(AfterExit.STAY_DOWN, on_purpose=False) is State.DEAD


def test_exits_are_described_by_code_or_signal_name() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "signal SIGTERM"


def test_node_output_is_cut_into_lines_without_holding_a_long_line_in_memory() -> None:
    splitter = LineSplitter(max_line=8)
    assert splitter.feed(b"one\ntw") == [b"one"]
    assert splitter.feed(b"o\r\nthree") == [b"two"]
    assert splitter.feed(b"-is-long") == [b"three-is"]  # cut, never more than 8 bytes held
    assert splitter.flush() == [b"-long"]


@pytest.mark.parametrize("line", [
    b"not json", b"[1]", b'{"op": "format-disk"}', b'{"op": "kill"}',
    b'{"op": "stop", "node": "n1", "signal": "KILL"}',
])
def test_malformed_control_requests_are_refused(line: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(line)
