"""The cluster secret between real nodes: a request is for one node, once."""

from __future__ import annotations

import httpx

from node.cluster.client import signed_headers


def test_captured_request_for_one_node_is_refused_by_the_other_and_by_itself_again(
    cluster_factory,
) -> None:
    cluster = cluster_factory(2)
    n1, n2 = cluster.nodes["n1"].url, cluster.nodes["n2"].url
    headers = signed_headers(cluster.secret, "GET", f"{n1}/_cluster/status", node_id="n1")
    assert httpx.get(f"{n1}/_cluster/status", headers=headers, timeout=5).status_code == 200
    assert httpx.get(f"{n1}/_cluster/status", headers=headers, timeout=5).status_code == 401
    assert httpx.get(f"{n2}/_cluster/status", headers=headers, timeout=5).status_code == 401
    own = signed_headers(cluster.secret, "GET", f"{n2}/_cluster/status", node_id="n2")
    assert httpx.get(f"{n2}/_cluster/status", headers=own, timeout=5).status_code == 200

