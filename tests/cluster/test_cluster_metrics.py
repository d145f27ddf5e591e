"""Watching a cluster: its nodes' logs stay quiet until something happens, then
say it once, and `/metrics` shows the same events as numbers."""

from __future__ import annotations

import random
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.conftest import Cluster, push_blob
from tests.conftest import NodeProcess

LEADER_LINE = re.compile(r"(?:leader is (\w+)|(\w+) is leader) \(term (\d+)\)")


def log_lines(node: NodeProcess) -> list[str]:
    assert node.log is not None
    return node.log.read_text().splitlines()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def leaders_logged(node: NodeProcess) -> list[tuple[str, int]]:
    """(leader, term) of every leader line in the node's log, in order."""
    found = []
    for line in log_lines(node):
        match = LEADER_LINE.search(line)
        if match:
            found.append((match.group(1) or match.group(2), int(match.group(3))))
    return found


def metric(node: NodeProcess, name: str, **labels: str) -> float | None:
    """The value of one sample of the node's metrics, None when there is none."""
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_an_idle_cluster_writes_no_log_line(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    # Up: every node knows the leader, and every peer has answered a health check.
    for node in cluster.nodes.values():
        wait_until(lambda node=node: leaders_logged(node))
    wait_until(lambda: all(
        metric(node, "flotilla_peer_rtt_seconds", peer=other) is not None
        for node_id, node in cluster.nodes.items()
        for other in cluster.nodes if other != node_id
    ))
    before = {node_id: len(log_lines(node)) for node_id, node in cluster.nodes.items()}
    time.sleep(10)
    after = {node_id: log_lines(node)[before[node_id]:] for node_id, node in cluster.nodes.items()}
    assert after == {node_id: [] for node_id in cluster.nodes}


def test_a_killed_leader_is_logged_down_once_then_up_once_and_its_successor_once(
    cluster_factory: Any,
) -> None:
    cluster: Cluster = cluster_factory(3)
    old = cluster.wait_for_leader()
    old_term = cluster.status(old)["term"]
    survivors = [n for n in cluster.nodes if n != old]
    witness = cluster.nodes[survivors[0]]
    wait_until(lambda: metric(witness, "flotilla_peer_up", peer=old) == 1)

    cluster.nodes[old].kill()
    new = cluster.wait_for_leader(among=survivors, not_=old)
    new_term = cluster.status(new)["term"]
    assert new_term > old_term
    down = re.compile(rf"peer {old} \(.*\) is down")
    for node_id in survivors:
        node = cluster.nodes[node_id]
        wait_until(lambda node=node: any(down.search(line) for line in log_lines(node)))
    assert metric(witness, "flotilla_peer_up", peer=old) == 0
    time.sleep(3)  # a few more failed health checks, which must not log again

    cluster.nodes[old].start()
    up = re.compile(rf"peer {old} \(.*\) is up again")
    for node_id in survivors:
        node = cluster.nodes[node_id]
        wait_until(lambda node=node: any(up.search(line) for line in log_lines(node)))
    wait_until(lambda: metric(witness, "flotilla_peer_up", peer=old) == 1)

    for node_id in survivors:
        lines = log_lines(cluster.nodes[node_id])
        assert len([line for line in lines if down.search(line)]) == 1, lines
        assert len([line for line in lines if up.search(line)]) == 1, lines
        assert leaders_logged(cluster.nodes[node_id]).count((new, new_term)) == 1, lines
    # The old leader, back, learns of its successor once too.
    wait_until(lambda: (new, new_term) in leaders_logged(cluster.nodes[old]))
    assert leaders_logged(cluster.nodes[old]).count((new, new_term)) == 1


def test_every_node_shows_the_same_leader_and_its_peers_in_its_metrics(
    cluster_factory: Any,
) -> None:
    cluster: Cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    first = cluster.nodes["n1"]
    push_blob(first.url, "team/app", b"x" * 100_000)
    for node_id, node in cluster.nodes.items():
        others = [n for n in cluster.nodes if n != node_id]
        wait_until(lambda node=node, others=others: all(
            metric(node, "flotilla_peer_up", peer=other) == 1 for other in others
        ))
        assert metric(node, "flotilla_raft_leader", leader=leader) == 1
        assert metric(node, "flotilla_raft_is_leader") == (1 if node_id == leader else 0)
        assert metric(node, "flotilla_raft_term") == cluster.status(node_id)["term"]
        wait_until(lambda node=node: (metric(node, "flotilla_raft_applied_index") or 0) > 0)
    # R=2 of 3: the blob's one chunk lives on two nodes.
    stored = [metric(node, "flotilla_chunks_stored") for node in cluster.nodes.values()]
    assert sum(s or 0 for s in stored) == 2


def test_a_node_that_lost_its_chunks_shows_them_missing_until_repair_fetched_them(
    cluster_factory: Any,
) -> None:
    chunk = 64 * 1024
    cluster: Cluster = cluster_factory(
        3, "--chunk-size", str(chunk),
        per_node={"n3": ["--repair-bytes-per-second", str(2 * chunk)]},
    )
    for seed in range(2):
        push_blob(cluster.nodes["n1"].url, "team/app", random.Random(seed).randbytes(10 * chunk))
    n3 = cluster.nodes["n3"]
    owned = len(list((n3.data / "chunks").glob("??/*")))
    assert owned > 0
    wait_until(lambda: metric(n3, "flotilla_chunks_missing") == 0)
    n3.stop()
    shutil.rmtree(n3.data / "chunks")  # its disk was replaced: everything it owns is gone
    n3.start()

    seen: list[float] = []

    def repaired() -> bool:
        missing = metric(n3, "flotilla_chunks_missing")
        if missing is not None:
            seen.append(missing)
        return missing == 0 and metric(n3, "flotilla_repair_fetched_chunks_total") == owned

    wait_until(repaired, timeout=60)
    assert max(seen) > 0  # an operator scraping meanwhile saw the copies missing
    assert metric(n3, "flotilla_chunks_stored") == owned
    assert metric(n3, "flotilla_repair_fetched_bytes_total") == owned * chunk


def test_an_upload_relayed_to_the_session_node_keeps_its_request_id(
    cluster_factory: Any,
) -> None:
    cluster: Cluster = cluster_factory(3, "--access-log")
    first, second = cluster.nodes["n1"], cluster.nodes["n2"]
    started = httpx.post(f"{first.url}/v2/team/app/blobs/uploads/", timeout=30)
    assert started.status_code == 202
    location = started.headers["Location"]
    path = location if location.startswith("/") else httpx.URL(location).path
    patched = httpx.patch(f"{second.url}{path}", content=b"relayed bytes",
                          headers={"X-Request-Id": "relay-42"}, timeout=30)
    assert patched.status_code == 202
    assert patched.headers["X-Request-Id"] == "relay-42"
    # Both nodes' access lines of the one request carry the client's id.
    for node in (first, second):
        wait_until(lambda node=node: any(
            "[relay-42]" in line and "PATCH" in line for line in log_lines(node)
        ), timeout=10)


def test_a_node_joining_is_logged_once_by_every_member(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    cluster.wait_for_leader()
    joined = cluster.add_process("n4", join_via=cluster.nodes["n1"].url)
    line = "voters are n1, n2, n3, n4; added n4"
    for node_id in ("n1", "n2", "n3"):
        node = cluster.nodes[node_id]
        wait_until(lambda node=node: any(line in li for li in log_lines(node)))
    # The newcomer says who the voters are, not that all of them arrived.
    wait_until(lambda: any(li.endswith("voters are n1, n2, n3, n4") for li in log_lines(joined)))
    time.sleep(2)
    for node_id in ("n1", "n2", "n3"):
        assert sum(line in li for li in log_lines(cluster.nodes[node_id])) == 1
    assert not [li for li in log_lines(joined) if "; added" in li]


def test_at_debug_level_a_node_logs_every_health_check(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3, per_node={"n1": ["--log-level", "debug"]})
    n1 = cluster.nodes["n1"]
    checks = re.compile(r"DEBUG node\.cluster\.peers: health check of (n2|n3): 200 in ")
    wait_until(lambda: len([li for li in log_lines(n1) if checks.search(li)]) >= 6)
    assert {checks.search(li).group(1) for li in log_lines(n1) if checks.search(li)} == {
        "n2", "n3"
    }
    assert not [li for li in log_lines(cluster.nodes["n2"]) if "health check" in li]
