"""The chaos history: what the workload records is what the checker reads back,
from memory or from the saved file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from scripts.chaos_harness.checker import check_history
from scripts.chaos_harness.history import History, Op, load_ops


class Clock:
    """A clock the test moves by hand, so recorded times are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def recorded_history() -> History:
    history = History(clock=Clock())
    write = history.invoke(1, "write", "r:t", "sha256:aa", node="n1")
    read = history.invoke(2, "read", "r:t", None, node="n2")
    history.ok(write)
    history.ok(read, "sha256:aa")
    delete = history.invoke(1, "write", "r:t", None, node="n3")
    history.fail(delete, at=200.0)
    history.invoke(3, "write", "r:t", "sha256:bb")  # still in flight when the run ends
    timed_out = history.invoke(2, "blob_push", "sha256:cc", "sha256:cc")
    history.unknown(timed_out)
    return history


def test_recorded_ops_carry_times_values_and_outcomes() -> None:
    ops = recorded_history().ops()
    assert [(op.id, op.kind, op.value, op.outcome) for op in ops] == [
        (0, "write", "sha256:aa", "ok"),
        (1, "read", "sha256:aa", "ok"),
        (2, "write", None, "fail"),
        (3, "write", "sha256:bb", "unknown"),
        (4, "blob_push", "sha256:cc", "unknown"),
    ]
    assert (ops[0].invoked, ops[0].completed, ops[0].node) == (101.0, 103.0, "n1")
    assert ops[2].completed == 200.0
    assert ops[3].completed is None and ops[4].completed is None


def test_a_history_saved_and_loaded_round_trips(tmp_path: Path) -> None:
    history = recorded_history()
    path = tmp_path / "history.jsonl"
    history.save(path)
    assert len(path.read_text().splitlines()) == 5
    loaded = History.load(path)
    assert loaded.ops() == history.ops()
    assert check_history(loaded.ops()).linearizable == "yes"
    # A loaded history keeps recording with fresh ids.
    assert loaded.invoke(9, "read", "r:t", None) == 5


def test_an_op_is_answered_once() -> None:
    history = History()
    op = history.invoke(1, "write", "r:t", "sha256:aa")
    history.ok(op)
    with pytest.raises(ValueError):
        history.fail(op)
    with pytest.raises(ValueError):
        history.invoke(1, "delete", "r:t", None)


def test_a_hand_edited_line_that_makes_no_sense_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    bad = Op(0, 1, "read", "r:t", None, 5.0, 4.0, "ok")  # completed before invoked
    path.write_text(bad.to_json() + "\n")
    with pytest.raises(ValueError, match="completed before it was invoked"):
        load_ops(path)


def test_concurrent_clients_record_every_op_under_its_own_id() -> None:
    history = History()

    def client(process: int) -> None:
        for i in range(200):
            op = history.invoke(process, "write", f"r:{process}", f"sha256:{process}-{i}")
            history.ok(op)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ops = history.ops()
    assert [op.id for op in ops] == list(range(1600))
    assert all(op.outcome == "ok" for op in ops)
    assert check_history(ops).linearizable == "yes"
