"""Process-wide tuning happens when a node starts serving, never on import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from httpcore._async.http11 import AsyncHTTP11Connection
from hypercorn.trio import tcp_server

from node import tuning
from tests.conftest import Registry

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: this test process may already have served a node.
CHECK = """
from httpcore._async.http11 import AsyncHTTP11Connection
from hypercorn.trio import tcp_server

import node.app, node.cli, node.cluster.peers, node.tuning

untouched = (tcp_server.MAX_RECV, AsyncHTTP11Connection.READ_NUM_BYTES)
calls = []
node.tuning.keep_big_buffers_mapped = lambda: calls.append(1) or True
node.tuning.tune_process()
node.tuning.tune_process()
print(untouched, (tcp_server.MAX_RECV, AsyncHTTP11Connection.READ_NUM_BYTES), len(calls))
"""


def test_importing_the_node_tunes_nothing_and_tuning_twice_applies_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[0] == "(65536, 65536) (1048576, 1048576) 1"


async def test_a_node_started_in_process_through_serve_is_tuned(registry: Registry) -> None:
    assert tcp_server.MAX_RECV == AsyncHTTP11Connection.READ_NUM_BYTES == tuning.SOCKET_READ
    assert (await registry.client.get("/v2/")).status_code == 200
