"""A node that would expose an open registry beyond loopback refuses to start and says
why; said on purpose (`--auth none`), or with access control on, it starts there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

ANY_ADDRESS = "0.0.0.0"


def serve_command(data: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", "serve", "--data", str(data),
            "--listen", f"{ANY_ADDRESS}:{port}", "--raft", f"127.0.0.1:{free_port()}",
            "--data-listen", f"127.0.0.1:{free_port()}", *extra]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FLOTILLA_AUTH"}


def test_auth_unset_on_a_non_loopback_address_refuses_to_start_and_says_why(
    tmp_path: Path,
) -> None:
    port = free_port()
    result = subprocess.run(serve_command(tmp_path / "n1", port), cwd=ROOT, env=environment(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("flotilla: ")
    assert f"would listen on {ANY_ADDRESS}:{port} with no access control" in result.stderr
    assert 'auth = "none"' in result.stderr and '"token"' in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(("auth", "anonymous_base"), [("none", 200), ("token", 401),
                                                       ("basic", 401)])
def test_auth_said_explicitly_starts_on_a_non_loopback_address(
    tmp_path: Path, auth: str, anonymous_base: int
) -> None:
    port = free_port()
    log = open(tmp_path / "node.log", "wb")
    proc = subprocess.Popen(serve_command(tmp_path / "n1", port, "--auth", auth), cwd=ROOT,
                            env=environment(), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "node.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "node.log").read_text()
            time.sleep(0.05)
        assert httpx.get(f"{url}/v2/", timeout=10).status_code == anonymous_base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
