"""The chaos checker on hand-made histories: linearizable ones pass, broken ones
are caught and explained, lost tag writes and lost or corrupted blobs counted."""

from __future__ import annotations

import itertools
import random

from scripts.chaos_harness.checker import (
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN_BUDGET,
    check_blobs,
    check_history,
    check_lost_writes,
    check_register,
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

    def write(self, process: int, value: str | None, invoked: float, completed: float | None,
              outcome: str = "ok", key: str = KEY) -> Op:  # fmt: skip
        return self.add(process, "write", value, invoked, completed, outcome, key)

    def read(self, process: int, value: str | None, invoked: float, completed: float,
             outcome: str = "ok", key: str = KEY) -> Op:  # fmt: skip
        return self.add(process, "read", value, invoked, completed, outcome, key)


def verdict_of(history: Ops) -> str:
    return check_register(history.ops).result


# --- linearizable ------------------------------------------------------------


def test_sequential_writes_and_reads_are_linearizable() -> None:
    h = Ops()
    h.read(1, None, 0, 1)
    h.write(1, "a", 2, 3)
    h.read(2, "a", 4, 5)
    h.write(2, "b", 6, 7)
    h.read(1, "b", 8, 9)
    assert verdict_of(h) == LINEARIZABLE


def test_a_read_concurrent_with_a_write_may_see_the_old_or_the_new_value() -> None:
    for seen in ("a", "b"):
        h = Ops()
        h.write(1, "a", 0, 1)
        h.write(1, "b", 2, 6)
        h.read(2, seen, 3, 5)
        h.read(2, "b", 7, 8)
        assert verdict_of(h) == LINEARIZABLE, seen


def test_an_unknown_write_that_took_effect_later_is_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, "b", 2, None, outcome="unknown")  # the client timed out
    h.read(2, "a", 3, 4)  # not yet applied...
    h.read(2, "b", 10, 11)  # ...applied long after the client gave up
    assert verdict_of(h) == LINEARIZABLE


def test_an_unknown_write_that_never_took_effect_is_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, "b", 2, None, outcome="unknown")
    h.read(2, "a", 3, 4)
    h.read(2, "a", 10, 11)
    assert verdict_of(h) == LINEARIZABLE


def test_a_refused_write_is_dropped() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, "b", 2, 3, outcome="fail")
    h.read(2, "a", 4, 5)
    assert verdict_of(h) == LINEARIZABLE


def test_delete_then_read_absent_is_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.read(2, "a", 2, 3)
    h.write(1, None, 4, 5)
    h.read(2, None, 6, 7)
    assert verdict_of(h) == LINEARIZABLE


def test_an_unknown_delete_can_explain_a_later_404() -> None:
    h = Ops()
    h.write(1, None, 0, 1)  # delete of nothing: the tag is absent either way
    h.write(1, "a", 2, 3)
    h.write(1, None, 4, None, outcome="unknown")
    h.read(2, "a", 5, 6)
    h.read(2, None, 7, 8)
    assert verdict_of(h) == LINEARIZABLE


def test_a_value_written_twice_may_be_read_after_either_write() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, "b", 2, 3)
    h.write(1, "a", 4, None, outcome="unknown")  # a tag moved back
    h.read(2, "b", 5, 6)
    h.read(2, "a", 7, 8)
    assert verdict_of(h) == LINEARIZABLE


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


# --- not linearizable ----------------------------------------------------------


def test_a_read_of_a_value_never_written_is_not_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.read(2, "z", 2, 3)
    assert verdict_of(h) == NOT_LINEARIZABLE


def test_a_stale_read_after_an_acknowledged_write_is_not_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, "b", 2, 3)
    h.read(2, "a", 4, 5)
    assert verdict_of(h) == NOT_LINEARIZABLE


def test_reads_in_real_time_order_seeing_new_then_old_are_not_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, "b", 2, 10)  # concurrent with both reads
    h.read(2, "b", 3, 4)
    h.read(3, "a", 5, 6)
    assert verdict_of(h) == NOT_LINEARIZABLE


def test_an_acknowledged_write_lost_at_the_end_is_not_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(2, "b", 2, 3)
    h.read(1, "b", 4, 5)
    h.read(3, "a", 20, 21)  # the final read after healing went back to "a"
    assert verdict_of(h) == NOT_LINEARIZABLE
    lost = check_lost_writes(h.ops, {KEY: "a"})
    assert lost.lost_keys == 1
    assert [w.value for w in lost.lost[0].lost] == ["b"]


def test_a_read_seeing_a_write_invoked_after_it_completed_is_not_linearizable() -> None:
    for outcome in ("ok", "unknown"):
        h = Ops()
        h.write(1, "a", 0, 1)
        h.read(2, "b", 2, 3)
        h.write(1, "b", 4, 5, outcome=outcome)
        assert verdict_of(h) == NOT_LINEARIZABLE, outcome


def test_a_404_after_an_acknowledged_write_without_a_delete_is_not_linearizable() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, None, 2, 3, outcome="fail")  # refused: cannot explain the 404
    h.read(2, None, 4, 5)
    assert verdict_of(h) == NOT_LINEARIZABLE


def test_a_value_written_once_cannot_be_read_back_after_being_overwritten() -> None:
    h = Ops()
    h.write(1, "a", 0, 1)
    h.write(1, "b", 2, 3)
    h.write(1, "a", 4, 5, outcome="fail")
    h.read(2, "b", 6, 7)
    h.read(2, "a", 8, 9)
    assert verdict_of(h) == NOT_LINEARIZABLE


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
        h.write(process, f"v{process}", 0, 10)
    h.read(30, "v0", 11, 12)
    h.read(30, "v1", 13, 14)
    verdict = check_register(h.ops, budget=20_000)
    assert verdict.result == UNKNOWN_BUDGET
    assert verdict.linearizable is None
    assert check_history(h.ops, budget=20_000).linearizable == "unknown"


def test_a_violation_is_explained_by_key_and_ops() -> None:
    h = Ops()
    for i in range(30):  # a long quiet run before the bug
        h.write(1, f"old{i}", 2 * i, 2 * i + 1)
    h.write(1, "a", 100, 101)
    h.write(2, "b", 102, 103)
    stale = h.read(3, "a", 104, 105)
    h.read(3, "b", 106, 107)
    verdict = check_register(h.ops)
    assert verdict.result == NOT_LINEARIZABLE
    text = verdict.explanation
    assert KEY in text
    assert f"!! #{stale.id} process 3 read a" in text
    assert "process 2 write b" in text
    assert "old3 " not in text  # the quiet past is not printed


def test_check_history_judges_each_key_on_its_own() -> None:
    h = Ops()
    h.write(1, "a", 0, 1, key="r:good")
    h.read(2, "a", 2, 3, key="r:good")
    h.write(1, "x", 0, 1, key="r:bad")
    h.write(1, "y", 2, 3, key="r:bad")
    h.read(2, "x", 4, 5, key="r:bad")
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
    h.write(1, "a", 0, 1, key="r:t")
    h.write(1, "b", 2, 5, key="r:t")
    h.write(2, "c", 3, 4, key="r:t")  # concurrent with b: either may be last
    h.write(3, "d", 6, None, outcome="unknown", key="r:t")
    h.write(3, "e", 7, 8, outcome="fail", key="r:t")
    for final in ("b", "c", "d"):
        assert check_lost_writes(h.ops, {"r:t": final}).lost_keys == 0, final
    for final in ("a", "e", None):
        report = check_lost_writes(h.ops, {"r:t": final})
        assert report.lost_keys == 1, final
        assert report.lost_writes == 2  # b and c: neither is visible
    assert check_lost_writes(h.ops, {}).unread_keys == ["r:t"]


def test_a_deleted_tag_is_expected_absent_and_an_unwritten_one_too() -> None:
    h = Ops()
    h.write(1, "a", 0, 1, key="r:gone")
    h.write(1, None, 2, 3, key="r:gone")
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
