"""The fuzzing harness's short profile, as CI runs it: a few thousand generated
requests against a real node and a real 3-node cluster, and some hundred Raft
frames, after which every node must be up, clean and holding its fixture.

The harness runs as `scripts/fuzz` does, in a process of its own, so a node
it breaks cannot take the test run with it; on failure the assertion carries
the harness's report (counts by status, each failing request with its replay
command, the end of any traceback a node logged).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.fuzz
@pytest.mark.slow
def test_nodes_survive_the_short_fuzz_profile_unharmed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.fuzzing", "--profile", "short", "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20000:]
    assert "fuzz: PASS" in report
