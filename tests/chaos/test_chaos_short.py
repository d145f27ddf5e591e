"""The chaos harness's short profile, as CI runs it: a real 5-node cluster in
network namespaces, every fault kind at least once while clients push, move
tags and pull, then healing, convergence and the checks of the history.

The harness runs as `scripts/chaos` does, in a process of its own (it needs
root, `ip`, `tc` and `iptables`); on failure the assertion carries its report,
with the seed and the command that replays it. The plan tests beside it check,
without a cluster, that the short profile's plan is what the run relies on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.chaos_harness.__main__ import PROFILES
from scripts.chaos_harness.converge import FINAL_PROCESS
from scripts.chaos_harness.history import History
from scripts.chaos_harness.plan import KINDS, OUTAGE_KINDS, kinds_injected, make_plan, minority
from tests.conftest import ROOT

EVERY_SHAPE = ("kill", "pause", "partition/one", "partition/split", "partition/leader",
               "netem/delay", "netem/loss", "netem/reorder", "disk")


def _short_plan(seed: int, nodes: int = 5) -> list:
    short = PROFILES["short"]
    return make_plan(seed, short["duration"], nodes, KINDS, short["fault_seconds"],
                     short["gap_seconds"])


def test_short_profile_plans_every_fault_kind_and_shape_within_its_duration() -> None:
    for seed in range(50):
        plan = _short_plan(seed)
        assert set(EVERY_SHAPE) <= set(kinds_injected(plan)), (seed, kinds_injected(plan))
        assert max(f.end for f in plan) <= PROFILES["short"]["duration"]


def test_plan_never_has_two_outages_at_once_nor_cuts_a_majority() -> None:
    for seed in range(50):
        for nodes in (3, 5, 7):
            outages = [f for f in _short_plan(seed, nodes) if f.kind in OUTAGE_KINDS]
            for before, after in zip(outages, outages[1:], strict=False):
                assert before.end <= after.start
            assert all(len(f.targets) <= minority(nodes) for f in outages)


def test_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert _short_plan(7) == _short_plan(7)
    assert _short_plan(7) != _short_plan(8)


def _check_saved(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.chaos_harness", "--check", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_check_of_a_saved_history_passes_a_sound_one_and_names_a_lost_write(
    tmp_path: Path,
) -> None:
    history = History()
    write = history.invoke(0, "write", "chaos/app:t0", "sha256:" + "a" * 64, node="n1")
    history.ok(write)
    read = history.invoke(FINAL_PROCESS, "read", "chaos/app:t0", None, node="n2")
    history.ok(read, "sha256:" + "a" * 64)
    history.save(tmp_path / "sound.jsonl")
    sound = _check_saved(tmp_path / "sound.jsonl")
    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert "chaos: check PASS" in sound.stdout

    lost = History()
    write = lost.invoke(0, "write", "chaos/app:t0", "sha256:" + "b" * 64, node="n1")
    lost.ok(write)
    read = lost.invoke(FINAL_PROCESS, "read", "chaos/app:t0", None, node="n3")
    lost.ok(read, None)  # the acknowledged tag is gone after healing
    lost.save(tmp_path / "lost.jsonl")
    result = _check_saved(tmp_path / "lost.jsonl")
    assert result.returncode == 1
    assert "linearizable: no" in result.stdout
    assert "1 lost" in result.stdout
    assert "chaos/app:t0" in result.stdout


def _missing_privileges() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, tmpfs mounts, iptables)"
    missing = [t for t in ("ip", "tc", "iptables") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.mark.chaos
@pytest.mark.slow
def test_cluster_loses_nothing_and_stays_linearizable_under_the_short_chaos_profile() -> None:
    reason = _missing_privileges()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, "-m", "scripts.chaos_harness", "--profile", "short", "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20000:]
    assert "chaos: PASS" in report
