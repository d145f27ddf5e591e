"""When a draining node counts as empty, and what `drain --wait` shows meanwhile."""

from __future__ import annotations

import io

from node.cluster.admin_cli import DrainProgress
from node.cluster.drain import pass_shows_empty

SEEN = 1000.0  # unix time the drain was seen on the node


def finished_pass(**changes: object) -> dict[str, object]:
    status: dict[str, object] = {
        "state": "idle", "passes": 3, "owned_missing_chunks": 0, "owned_missing_bytes": 0,
        "unowned_held_chunks": 0, "repaired_chunks": 0, "repaired_bytes": 0,
        "dropped_chunks": 40, "dropped_bytes": 40 << 20, "rate_bytes_per_second": None,
        "eta_seconds": 0.0, "last_pass_started": SEEN + 2, "last_pass_finished": SEEN + 5,
        "last_pass_complete": True,
    }
    status.update(changes)
    return status


def test_a_complete_pass_started_after_the_drain_that_left_nothing_shows_the_node_empty() -> None:
    assert pass_shows_empty(finished_pass(), SEEN)


def test_a_pass_started_before_the_drain_was_seen_does_not_count() -> None:
    assert not pass_shows_empty(
        finished_pass(last_pass_started=SEEN - 1, last_pass_finished=SEEN + 1), SEEN
    )


def test_a_pass_under_way_does_not_count_though_its_predecessor_left_nothing() -> None:
    # The fields still show the last pass's outcome; only its start is new.
    assert not pass_shows_empty(
        finished_pass(state="repairing", last_pass_started=SEEN + 9), SEEN
    )
    assert not pass_shows_empty(finished_pass(last_pass_started=SEEN + 9), SEEN)


def test_copies_still_held_or_an_incomplete_pass_do_not_show_the_node_empty() -> None:
    assert not pass_shows_empty(finished_pass(unowned_held_chunks=1), SEEN)
    assert not pass_shows_empty(finished_pass(owned_missing_chunks=2), SEEN)
    assert not pass_shows_empty(finished_pass(last_pass_complete=False), SEEN)
    assert not pass_shows_empty(finished_pass(unowned_held_chunks=None), SEEN)
    assert not pass_shows_empty({}, SEEN)


def test_progress_counts_the_bytes_left_against_the_most_the_node_held() -> None:
    progress = DrainProgress("n2", io.StringIO())
    first = progress.line(100 << 20, 12, 30.0)
    assert "0.0%" in first and "100.0 of 100.0 MiB still on n2" in first
    assert "copies missing: 12" in first and "ETA: 30 s" in first
    half = progress.line(50 << 20, 3, None)
    assert "50.0%" in half and "50.0 of 100.0 MiB" in half and "ETA: ?" not in half
    done = progress.line(0, 0, 0.0)
    assert "100.0%" in done and "#" * 30 in done


def test_progress_off_a_terminal_prints_whole_lines() -> None:
    out = io.StringIO()
    progress = DrainProgress("n2", out)
    progress.show(10 << 20, 1, None)
    progress.show(9 << 20, 1, None)  # within the line interval: not printed
    progress.finish("n2 drained and removed from the group")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[-1] == "n2 drained and removed from the group"
