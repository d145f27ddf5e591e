"""Where the nodes of a local cluster listen and keep their data.

Node k of a cluster with base port P serves HTTP on 127.0.0.1:(P+k), Raft on
P+1000+k and its chunk data plane on P+2000+k — the same offsets `flotilla
serve` derives by default (node/config.py), passed explicitly so a node never
depends on that default. Its data lives in DATA/node-k/, its log in
DATA/node-k.log; every node shares DATA/secret.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from node.config import DATA_PLANE_PORT_OFFSET, RAFT_PORT_OFFSET

HOST = "127.0.0.1"
MAX_NODES = 99


@dataclass(frozen=True)
class NodeLayout:
    """One node's id, addresses and files."""

    index: int
    base_port: int
    data_root: Path

    @property
    def node_id(self) -> str:
        return f"n{self.index}"

    @property
    def http(self) -> str:
        return f"{HOST}:{self.base_port + self.index}"

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    @property
    def raft(self) -> str:
        return f"{HOST}:{self.base_port + RAFT_PORT_OFFSET + self.index}"

    @property
    def data_listen(self) -> str:
        return f"{HOST}:{self.base_port + DATA_PLANE_PORT_OFFSET + self.index}"

    @property
    def data(self) -> Path:
        return self.data_root / f"node-{self.index}"

    @property
    def log(self) -> Path:
        return self.data_root / f"node-{self.index}.log"


@dataclass(frozen=True)
class ClusterLayout:
    """Every node of the cluster, and the files they share."""

    data_root: Path
    base_port: int
    count: int
    auth: str | None = None  # passed to every node as --auth (none by default: loopback)

    @property
    def nodes(self) -> list[NodeLayout]:
        return [NodeLayout(k, self.base_port, self.data_root) for k in range(1, self.count + 1)]

    @property
    def secret(self) -> Path:
        return self.data_root / "secret"

    @property
    def peers(self) -> str:
        return ",".join(f"{n.node_id}={n.raft}" for n in self.nodes)

    def serve_argv(self, node: NodeLayout) -> list[str]:
        """The `flotilla serve` command line of one node, the same on every (re)start."""
        return [sys.executable, "-m", "node.cli", "serve", "--data", str(node.data),
                "--listen", node.http, "--raft", node.raft, "--data-listen", node.data_listen,
                "--node-id", node.node_id, "--peers", self.peers,
                "--secret-file", str(self.secret),
                *(("--auth", self.auth) if self.auth else ())]


def layout_problem(count: int, base_port: int) -> str | None:
    """Why this node count and base port cannot work, or None."""
    if count < 1:
        return "--nodes must be at least 1"
    if count > MAX_NODES:
        return f"--nodes: at most {MAX_NODES} on one machine"
    if base_port < 1 or base_port + DATA_PLANE_PORT_OFFSET + count > 65535:
        return f"--base-port {base_port}: node ports must stay within 1..65535"
    return None
