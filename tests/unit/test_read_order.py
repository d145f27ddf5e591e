"""Which holder a node asks first for a chunk it lacks.

A node that is not an owner usually does not hold the chunk, so asking it
first costs a round trip that ends in a 404; owners come first however near
the others are. Among owners, a live one in this node's zone with the lowest
measured round trip is asked first.
"""

from __future__ import annotations

from node.cluster.peers import Peers, PeerState
from node.cluster.placement import Placed


def peers_seen_from(node_id: str, zone: str, states: list[PeerState]) -> Peers:
    peers = Peers(None, node_id=node_id, zone=zone, secret=b"s" * 32)  # type: ignore[arg-type]
    peers.state = {s.node_id: s for s in states}
    return peers


def test_owners_are_asked_before_nearer_nodes_that_do_not_own_the_chunk() -> None:
    peers = peers_seen_from("me", "a", [
        PeerState("o1", "h1", "a", rtt=0.010),
        PeerState("o2", "h2", "a", rtt=0.005),
        PeerState("x", "h3", "a", rtt=0.0001),
    ])
    candidates = [Placed("o1", "a"), Placed("o2", "a"), Placed("x", "a"), Placed("me", "a")]
    assert peers.read_order(candidates, owners=2) == ["o2", "o1", "x"]


def test_same_zone_then_round_trip_decide_among_owners_and_down_nodes_go_last() -> None:
    peers = peers_seen_from("me", "a", [
        PeerState("far", "h1", "b", rtt=0.001),
        PeerState("near", "h2", "a", rtt=0.020),
        PeerState("dead", "h3", "a", rtt=0.001, up=False),
        PeerState("spare", "h4", "b", rtt=0.002),
    ])
    candidates = [Placed("dead", "a"), Placed("far", "b"), Placed("near", "a"),
                  Placed("spare", "b")]
    assert peers.read_order(candidates, owners=3) == ["near", "far", "spare", "dead"]


def test_this_node_and_unknown_nodes_are_never_asked() -> None:
    peers = peers_seen_from("me", "a", [PeerState("o1", "h1", "a")])
    candidates = [Placed("me", "a"), Placed("gone", "a"), Placed("o1", "a")]
    assert peers.read_order(candidates, owners=2) == ["o1"]


def test_owners_at_about_the_same_distance_share_the_fetches_of_many_nodes() -> None:
    """Six nodes pulling one blob at once: round trips that differ by noise must not
    send every fetch to one owner, or that owner's link alone carries the blob."""
    chunks = [f"{k:064x}" for k in range(400)]
    candidates = [Placed("o1", "a"), Placed("o2", "a")]
    first: dict[str, int] = {"o1": 0, "o2": 0}
    for me in ("n3", "n4", "n5", "n6"):
        peers = peers_seen_from(me, "a", [
            PeerState("o1", "h1", "a", rtt=0.00031),
            PeerState("o2", "h2", "a", rtt=0.00042),
        ])
        for cid in chunks:
            first[peers.read_order(candidates, owners=2, chunk=cid)[0]] += 1
    assert 0.4 < first["o1"] / 1600 < 0.6
    # A clearly nearer owner still comes first for every chunk.
    peers = peers_seen_from("n3", "a", [
        PeerState("o1", "h1", "a", rtt=0.0003),
        PeerState("o2", "h2", "a", rtt=0.0300),
    ])
    assert {peers.read_order(candidates, owners=2, chunk=cid)[0] for cid in chunks} == {"o1"}
