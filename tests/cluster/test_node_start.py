"""A node that cannot start says why in one line, and exits."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, free_port


def test_a_data_plane_port_in_use_stops_the_node_with_a_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "node.cli", "serve", "--data", str(tmp_path / "n1"),
             "--listen", f"127.0.0.1:{free_port()}", "--raft", f"127.0.0.1:{free_port()}",
             "--data-listen", address],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"data plane cannot listen on {address}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Exceptions from Trio nursery" not in result.stderr
