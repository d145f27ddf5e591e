"""The chaos checker on hand-made histories: linearizable ones pass, broken ones
are caught and explained, lost tag writes and lost or corrupted blobs counted."""

from __future__ import annotations

import itertools
import random

import pytest

from scripts.chaos_harness.checker import (
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN_BUDGET,
    check_blobs,
    check_history,
    check_lost_writes,
    check_register,
    final_reads_after,
)
from scripts.chaos_harness.history import Op

KEY = "library/app:latest"


class Ops:
    """Builds a history op by op: times are plain numbers, outcomes default to ok."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(
        self,
        process: int,
        kind: str,
        value: str | None,
        invoked: float,
        completed: float | None,
        outcome: str = "ok",
        key: str = KEY,
        node: str | None = "n1",
    ) -> Op:
        if outcome == "unknown":
            completed = None
        op = Op(len(self.ops), process, kind, key, value, invoked, completed, outcome, node)
        self.ops.append(op)
        return op


# --- hand-made histories --------------------------------------------------------
#
# One op per string: "<w|r><process> <value> <invoked>-<completed> [fail]", where
# value "-" is absent (a delete, or a 404) and completed "?" is an unknown outcome.

LINEARIZABLE_HISTORIES = {
    "sequential writes and reads": ["r1 - 0-1", "w1 a 2-3", "r2 a 4-5", "w2 b 6-7", "r1 b 8-9"],
    "a read concurrent with a write sees the old value": ["w1 a 0-1", "w1 b 2-6", "r2 a 3-5"],
    "a read concurrent with a write sees the new value": ["w1 a 0-1", "w1 b 2-6", "r2 b 3-5"],
    "an unknown write that took effect later": ["w1 a 0-1", "w1 b 2-?", "r2 a 3-4", "r2 b 10-11"],
    "an unknown write that never took effect": ["w1 a 0-1", "w1 b 2-?", "r2 a 3-4", "r2 a 10-11"],
    "a refused write is dropped": ["w1 a 0-1", "w1 b 2-3 fail", "r2 a 4-5"],
    "delete then read absent": ["w1 a 0-1", "r2 a 2-3", "w1 - 4-5", "r2 - 6-7"],
    "an unknown delete explains a later 404": ["w1 - 0-1", "w1 a 2-3", "w1 - 4-?", "r2 a 5-6",
                                               "r2 - 7-8"],
    "a tag moved back to a value it held": ["w1 a 0-1", "w1 b 2-3", "w1 a 4-?", "r2 b 5-6",
                                            "r2 a 7-8"],
}  # fmt: skip

NOT_LINEARIZABLE_HISTORIES = {
    "a read of a value never written": ["w1 a 0-1", "r2 z 2-3"],
    "a stale read after an acknowledged write": ["w1 a 0-1", "w1 b 2-3", "r2 a 4-5"],
    "reads in real-time order see new then old": ["w1 a 0-1", "w1 b 2-10", "r2 b 3-4",
                                                  "r3 a 5-6"],
    "an acknowledged write lost at the end": ["w1 a 0-1", "w2 b 2-3", "r1 b 4-5", "r3 a 20-21"],
    "a read sees a write invoked after it completed": ["w1 a 0-1", "r2 b 2-3", "w1 b 4-5"],
    "a read sees an unknown write invoked after it completed": ["w1 a 0-1", "r2 b 2-3",
                                                                "w1 b 4-?"],
    "a 404 after an acknowledged write, its delete refused": ["w1 a 0-1", "w1 - 2-3 fail",
                                                              "r2 - 4-5"],
    "a value read back after being overwritten": ["w1 a 0-1", "w1 b 2-3", "w1 a 4-5 fail",
                                                  "r2 b 6-7", "r2 a 8-9"],
}  # fmt: skip


def history_of(lines: list[str], key: str = KEY) -> list[Op]:
    h = Ops()
    for line in lines:
        op, value, interval, *outcome = line.split()
        invoked, completed = interval.split("-")
        h.add(
            int(op[1:]),
            {"w": "write", "r": "read"}[op[0]],
            None if value == "-" else value,
            float(invoked),
            None if completed == "?" else float(completed),
            outcome[0] if outcome else ("unknown" if completed == "?" else "ok"),
            key,
        )
    return h.ops


@pytest.mark.parametrize("name", LINEARIZABLE_HISTORIES)
def test_hand_made_linearizable_history_passes(name: str) -> None:
    assert check_register(history_of(LINEARIZABLE_HISTORIES[name])).result == LINEARIZABLE


@pytest.mark.parametrize("name", NOT_LINEARIZABLE_HISTORIES)
def test_hand_made_broken_history_is_caught(name: str) -> None:
    verdict = check_register(history_of(NOT_LINEARIZABLE_HISTORIES[name]))
    assert verdict.result == NOT_LINEARIZABLE
    assert verdict.linearizable is False
    assert KEY in verdict.explanation


def simulated_register_history(seed: int, processes: int, ops_per_process: int) -> list[Op]:
    """A history produced by a real atomic register: each op takes effect at a
    random instant inside its interval; some writes time out (taking effect
    later, or never) and some are refused."""
    rng = random.Random(seed)
    planned = []  # (effect time or None, invoked, completed, process, kind, value, outcome)
    serial = 0
    for process in range(processes):
        now = rng.uniform(0, 1)
        for _ in range(ops_per_process):
            invoked = now
            completed = invoked + rng.expovariate(1.0)
            kind = "write" if rng.random() < 0.5 else "read"
            outcome = "ok"
            value = None
            effect: float | None = rng.uniform(invoked, completed)
            if kind == "write":
                serial += 1
                value = None if rng.random() < 0.15 else f"sha256:{serial:04x}"
                roll = rng.random()
                if roll < 0.08:
                    outcome = "unknown"
                    effect = rng.choice([None, invoked + rng.expovariate(0.2)])
                elif roll < 0.12:
                    outcome, effect = "fail", None
            elif rng.random() < 0.05:
                outcome = "unknown"
            planned.append([effect, invoked, completed, process, kind, value, outcome])
            now = completed + rng.expovariate(4.0)
    # Apply the effects in time order to find what each read returned.
    register: str | None = None
    for entry in sorted((e for e in planned if e[0] is not None), key=lambda e: e[0]):
        if entry[4] == "write":
            register = entry[5]
        else:
            entry[5] = register
    ops = []
    for index, (_, invoked, completed, process, kind, value, outcome) in enumerate(
        sorted(planned, key=lambda e: e[1])
    ):
        end = None if outcome == "unknown" else completed
        ops.append(Op(index, process, kind, KEY, value, invoked, end, outcome, f"n{process % 3}"))
    return ops


def test_random_histories_of_a_real_register_are_linearizable() -> None:
    for seed in range(8):
        ops = simulated_register_history(seed, processes=5, ops_per_process=80)
        verdict = check_register(ops)
        assert verdict.result == LINEARIZABLE, (seed, verdict.explanation)


def test_a_few_thousand_ops_on_one_key_are_checked_within_the_budget() -> None:
    ops = simulated_register_history(seed=99, processes=4, ops_per_process=800)
    verdict = check_register(ops)
    assert verdict.result == LINEARIZABLE
    assert verdict.ops_checked > 2500


def test_a_corrupted_random_history_is_caught() -> None:
    ops = simulated_register_history(seed=7, processes=5, ops_per_process=80)
    reads = [op for op in ops if op.kind == "read" and op.outcome == "ok"]
    broken = reads[len(reads) // 2]
    ops[broken.id] = Op(**{**broken.__dict__, "value": "sha256:never-written"})
    verdict = check_register(ops)
    assert verdict.result == NOT_LINEARIZABLE
    assert f"#{broken.id} " in verdict.explanation


def brute_force_linearizable(ops: list[Op]) -> bool:
    """The definition, by enumeration: some subset of the unknown writes and
    some order of the ops, respecting real time, that a register accepts."""
    sure = [op for op in ops if op.outcome == "ok"]
    maybe = [op for op in ops if op.outcome == "unknown" and op.kind == "write"]

    def end(op: Op) -> float:
        return float("inf") if op.completed is None else op.completed

    for size in range(len(maybe) + 1):
        for chosen in itertools.combinations(maybe, size):
            for order in itertools.permutations(sure + list(chosen)):
                if any(end(b) < a.invoked for i, a in enumerate(order) for b in order[i + 1 :]):
                    continue
                register: str | None = None
                for op in order:
                    if op.kind == "write":
                        register = op.value
                    elif op.value != register:
                        break
                else:
                    return True
    return False


def test_verdicts_agree_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(2026)
    disagreements = []
    verdicts = set()
    for case in range(400):
        h = Ops()
        for process in range(3):
            now = rng.randint(0, 3)
            for _ in range(rng.randint(1, 2)):
                kind = rng.choice(["write", "read"])
                value = rng.choice(["a", "b", "c", None])
                outcome = rng.choices(["ok", "unknown", "fail"], [6, 2, 1])[0]
                completed = now + rng.randint(1, 4)
                h.add(process, kind, value, now, completed, outcome)
                now = completed + rng.randint(1, 2)
        expected = brute_force_linearizable(h.ops)
        got = check_register(h.ops, explain=False).linearizable
        verdicts.add(got)
        if got != expected:
            disagreements.append((case, expected, got, h.ops))
    assert not disagreements, disagreements[0]
    assert verdicts == {True, False}  # the cases exercise both answers


# --- budget, explanation, whole histories ----------------------------------------


def test_an_adversarial_history_runs_out_of_budget_instead_of_hanging() -> None:
    # 22 concurrent writes, then two sequential reads that disagree: refuting
    # it means trying every order of the writes.
    h = Ops()
    for process in range(22):
        h.add(process, "write", f"v{process}", 0, 10)
    h.add(30, "read", "v0", 11, 12)
    h.add(30, "read", "v1", 13, 14)
    verdict = check_register(h.ops, budget=20_000)
    assert verdict.result == UNKNOWN_BUDGET
    assert verdict.linearizable is None
    assert check_history(h.ops, budget=20_000).linearizable == "unknown"


def test_a_violation_is_explained_by_key_and_ops() -> None:
    h = Ops()
    for i in range(30):  # a long quiet run before the bug
        h.add(1, "write", f"old{i}", 2 * i, 2 * i + 1)
    h.add(1, "write", "a", 100, 101)
    h.add(2, "write", "b", 102, 103)
    stale = h.add(3, "read", "a", 104, 105)
    h.add(3, "read", "b", 106, 107)
    verdict = check_register(h.ops)
    assert verdict.result == NOT_LINEARIZABLE
    text = verdict.explanation
    assert KEY in text
    assert f"!! #{stale.id} process 3 read a" in text
    assert "process 2 write b" in text
    assert "old3 " not in text  # the quiet past is not printed


def test_check_history_judges_each_key_on_its_own() -> None:
    h = Ops()
    h.add(1, "write", "a", 0, 1, key="r:good")
    h.add(2, "read", "a", 2, 3, key="r:good")
    h.add(1, "write", "x", 0, 1, key="r:bad")
    h.add(1, "write", "y", 2, 3, key="r:bad")
    h.add(2, "read", "x", 4, 5, key="r:bad")
    h.add(1, "blob_push", "sha256:b", 0, 1, key="sha256:b")
    report = check_history(h.ops)
    assert report.linearizable == "no"
    assert report.verdicts["r:good"].result == LINEARIZABLE
    assert [v.key for v in report.violations()] == ["r:bad"]
    assert "sha256:b" not in report.verdicts
    assert "key r:bad: not linearizable" in report.render()


def test_a_clean_history_reports_yes() -> None:
    ops = simulated_register_history(seed=3, processes=3, ops_per_process=30)
    assert check_history(ops).linearizable == "yes"


# --- lost writes ---------------------------------------------------------------


def test_a_final_read_may_show_the_last_acknowledged_write_or_a_concurrent_one() -> None:
    h = Ops()
    h.add(1, "write", "a", 0, 1, key="r:t")
    h.add(1, "write", "b", 2, 5, key="r:t")
    h.add(2, "write", "c", 3, 4, key="r:t")  # concurrent with b: either may be last
    h.add(3, "write", "d", 6, None, outcome="unknown", key="r:t")
    h.add(3, "write", "e", 7, 8, outcome="fail", key="r:t")
    for final in ("b", "c", "d"):
        assert check_lost_writes(h.ops, {"r:t": final}).lost_keys == 0, final
    for final in ("a", "e", None):
        report = check_lost_writes(h.ops, {"r:t": final})
        assert report.lost_keys == 1, final
        assert report.lost_writes == 2  # b and c: neither is visible
    assert check_lost_writes(h.ops, {}).unread_keys == ["r:t"]
    assert "key r:t: final read absent, expected one of b, c, d" in report.render()


def test_final_reads_are_the_last_reads_of_the_verification() -> None:
    h = Ops()
    h.add(1, "write", "a", 0, 1, key="r:t")
    h.add(2, "read", "a", 2, 3, key="r:t")  # during the run: not a final read
    h.add(2, "read", None, 2, 3, key="r:u")
    h.add(2, "read", "b", 10, 11, key="r:t", outcome="unknown")
    h.add(2, "read", "a", 12, 13, key="r:t")
    assert final_reads_after(h.ops, since=10) == {"r:t": "a"}


def test_a_final_read_that_went_back_to_an_older_value_counts_a_lost_write() -> None:
    ops = history_of(NOT_LINEARIZABLE_HISTORIES["an acknowledged write lost at the end"])
    report = check_lost_writes(ops, {KEY: "a"})
    assert report.lost_keys == 1
    assert [w.value for w in report.lost[0].lost] == ["b"]
    assert check_lost_writes(ops, {KEY: "b"}).lost_keys == 0


def test_a_deleted_tag_is_expected_absent_and_an_unwritten_one_too() -> None:
    h = Ops()
    h.add(1, "write", "a", 0, 1, key="r:gone")
    h.add(1, "write", None, 2, 3, key="r:gone")
    report = check_lost_writes(h.ops, {"r:gone": None, "r:never": None})
    assert report.lost_keys == 0
    assert report.acknowledged_writes == 2
    assert check_lost_writes(h.ops, {"r:never": "sha256:x"}).lost_keys == 1


# --- blobs -----------------------------------------------------------------------


def test_blob_report_counts_verified_lost_and_wrong_bytes() -> None:
    h = Ops()
    for digest in ("sha256:1", "sha256:2", "sha256:3"):
        h.add(1, "blob_push", digest, 0, 1, key=digest)
    h.add(1, "blob_push", "sha256:4", 0, None, outcome="unknown", key="sha256:4")
    h.add(2, "blob_pull", "sha256:1", 5, 6, key="sha256:1")  # intact
    h.add(2, "blob_pull", "sha256:9", 7, 8, key="sha256:2")  # wrong bytes
    h.add(2, "blob_pull", None, 9, 10, key="sha256:3")  # 404: lost
    h.add(2, "blob_pull", "sha256:3", 0.5, 0.9, key="sha256:3")  # before the ack: no proof
    report = check_blobs(h.ops)
    assert (report.acknowledged, report.verified, report.lost, report.wrong_bytes) == (3, 1, 2, 1)
    assert report.lost_digests == ["sha256:2", "sha256:3"]
    assert check_blobs(h.ops, verify_from=7).verified == 0
    assert "pull of sha256:2 via n1 returned sha256:9" in report.render()
