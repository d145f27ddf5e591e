"""The leader applies the retention policies by itself every `retention_interval`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.cluster.conftest import image_manifest, push_blob, put_manifest
from tests.conftest import ROOT, NodeProcess, free_port


def test_a_node_applies_its_policies_on_schedule_and_audits_what_went(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", free_port(), ["--retention-interval", "1"]).start()
    try:
        for i in range(3):
            config = push_blob(node.url, "app", json.dumps({"i": i}).encode())
            size = len(json.dumps({"i": i}).encode())
            assert put_manifest(node.url, "app", f"t{i}",
                                image_manifest(config, size, [])).status_code == 201
        done = subprocess.run(
            [sys.executable, "-m", "node.cli", "policy", "set", "app", "--keep-last", "1",
             "--url", node.url], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = httpx.get(f"{node.url}/v2/app/tags/list", timeout=10).json()["tags"]
            if len(left) == 1:
                break
            time.sleep(0.2)
        assert len(left) == 1
        audit = [json.loads(line) for line in (node.data / "audit.log").read_text().splitlines()]
        gone = {a["tag"] for a in audit if a["action"] == "retention_tag_deleted"}
        assert len(gone) == 2 and gone.isdisjoint(left)
        assert httpx.get(f"{node.url}/healthz", timeout=10).status_code == 200
    finally:
        node.stop()
