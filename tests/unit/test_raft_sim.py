"""Seeded simulations of whole Raft clusters under faults (see raftsim.py).

`--seeds N` runs seeds 0..N-1, half of them three-node and half five-node
clusters. A failing seed is named in the failure together with the command
that replays it alone (`FLOTILLA_RAFT_SEED=<seed> ... -k test_replay_one_seed -s`).
"""

from __future__ import annotations

import os
from dataclasses import astuple, fields

import pytest

from consensus.raft import log as raft_log
from tests.unit.raftsim import InvariantViolation, SimStats, Simulation, run_seed


def test_simulated_clusters_stay_safe_and_live(request: pytest.FixtureRequest) -> None:
    seeds = request.config.getoption("--seeds")
    totals = SimStats()
    failures: list[InvariantViolation] = []
    for seed in range(seeds):
        try:
            stats = run_seed(seed)
        except InvariantViolation as violation:
            failures.append(violation)
            continue
        for f in fields(SimStats):
            setattr(totals, f.name, getattr(totals, f.name) + getattr(stats, f.name))
    if failures:
        others = ", ".join(str(v.seed) for v in failures[1:20])
        pytest.fail(
            f"{len(failures)} of {seeds} seeds failed (also: {others or 'none'})\n{failures[0]}",
            pytrace=False,
        )
    if seeds >= 200:
        # The run must have exercised every feature, or its safety proves little.
        assert totals.committed and totals.reads and totals.snapshots_installed
        assert totals.conf_changes and totals.transfers and totals.elections


@pytest.mark.skipif("FLOTILLA_RAFT_SEED" not in os.environ, reason="set FLOTILLA_RAFT_SEED")
def test_replay_one_seed() -> None:
    seed = int(os.environ["FLOTILLA_RAFT_SEED"])
    size = 3 if seed % 2 == 0 else 5
    sim = Simulation(seed, size)
    sim.trace = type(sim.trace)(maxlen=None)  # keep the whole story for the reader
    try:
        stats = sim.run()
    finally:
        print("\n".join(sim.trace))
    print(stats)


def test_same_seed_gives_an_identical_run() -> None:
    first, second = Simulation(7, 5), Simulation(7, 5)
    assert astuple(first.run()) == astuple(second.run())
    assert list(first.trace) == list(second.trace)


def test_simulator_catches_a_core_that_votes_for_stale_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    for seed in range(200):
        try:
            run_seed(seed)
        except InvariantViolation as violation:
            assert f"seed {seed}" in str(violation)
            return
    pytest.fail("a core that ignores the election restriction survived 200 seeds")
