"""The cluster secret between real nodes: a request is for one node, once; an unsafe
secret file stops a node before it starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from node.cluster.auth import load_or_create_secret
from node.cluster.client import signed_headers
from tests.conftest import ROOT, free_port


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


def test_serve_refuses_a_secret_file_others_can_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    load_or_create_secret(secret)
    secret.chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "serve", "--data", str(tmp_path / "node"),
         "--listen", f"127.0.0.1:{free_port()}", "--secret-file", str(secret)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert str(secret) in done.stderr
    assert "Traceback" not in done.stderr
