"""The Raft write-ahead log and snapshot files: what survives a reopen, a crash
and a damaged disk, checked against the files themselves and an in-memory model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.raft.snapshot_files import (
    SnapshotCorrupt,
    load_latest_snapshot,
    save_snapshot,
)
from consensus.raft.types import Entry, EntryKind, HardState, SnapshotMeta
from consensus.raft.wal import (
    WalClosed,
    WalCorrupt,
    WalOrderError,
    WriteAheadLog,
)


def entry(index: int, term: int = 1, data: bytes | None = None) -> Entry:
    return Entry(term, index, EntryKind.NORMAL, data if data is not None else b"cmd-%d" % index)


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [entry(index, term) for index in range(first, last + 1)]


def reopen(directory: Path, **options: int):
    wal, recovered = WriteAheadLog.open(directory, **options)
    wal.close()
    return recovered


def only_segment(directory: Path) -> Path:
    (segment,) = sorted(directory.glob("*.wal"))
    return segment


def three_single_entry_saves(directory: Path) -> tuple[Path, list[int]]:
    """Three saves of one entry each; returns the segment and each record's start."""
    wal, _ = WriteAheadLog.open(directory)
    wal.save(HardState(term=1, vote="a", commit=0), [])
    starts = []
    for index in (1, 2, 3):
        starts.append(os.path.getsize(only_segment(directory)))
        wal.save(None, [entry(index)])
    wal.close()
    return only_segment(directory), starts


# -- round trips ---------------------------------------------------------------------


def test_new_directory_opens_empty(tmp_path: Path) -> None:
    wal, recovered = WriteAheadLog.open(tmp_path / "wal")
    wal.close()
    assert recovered.hard_state == HardState()
    assert recovered.snapshot is None
    assert recovered.entries == []


def test_saved_entries_and_hard_state_survive_reopen(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    batch = [
        Entry(1, 1, EntryKind.NOOP, b""),
        Entry(1, 2, EntryKind.NORMAL, b"\x00\xc1binary\xff" * 10),
        Entry(1, 3, EntryKind.CONF_CHANGE, b"add c"),
    ]
    wal.save(HardState(term=1, vote="node-a", commit=2), batch)
    wal.close()

    recovered = reopen(tmp_path)

    assert recovered.hard_state == HardState(term=1, vote="node-a", commit=2)
    assert recovered.entries == batch
    assert recovered.torn_bytes == 0


def test_reopen_after_many_saves_across_segments_returns_every_entry(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=1024)
    for index in range(1, 301):
        wal.save(HardState(term=3, vote=None, commit=index - 1), [entry(index, term=3)])
    assert len(wal.segment_paths()) > 10
    wal.close()

    recovered = reopen(tmp_path, segment_bytes=1024)

    assert recovered.entries == entries(1, 300, term=3)
    assert recovered.hard_state == HardState(term=3, vote=None, commit=299)


def test_appending_after_reopen_continues_the_log(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(None, entries(1, 3))
    wal.close()
    wal, _ = WriteAheadLog.open(tmp_path)
    assert wal.last_index == 3
    wal.save(None, entries(4, 5))
    wal.close()

    assert reopen(tmp_path).entries == entries(1, 5)


def test_hard_state_alone_is_saved(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(HardState(term=7, vote="b", commit=0), [])
    wal.close()

    assert reopen(tmp_path).hard_state == HardState(term=7, vote="b", commit=0)


# -- suffix replacement --------------------------------------------------------------


def test_entry_at_a_stored_index_replaces_the_stored_suffix(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(None, entries(1, 5, term=1))
    wal.save(HardState(term=2), entries(3, 4, term=2))
    assert wal.last_index == 4
    wal.close()

    recovered = reopen(tmp_path)

    assert recovered.entries == entries(1, 2, term=1) + entries(3, 4, term=2)


def test_replacing_from_the_first_entry_across_segments(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=200)
    for index in range(1, 30):
        wal.save(None, [entry(index, term=1)])
    wal.save(None, entries(1, 2, term=5))
    wal.close()

    assert reopen(tmp_path, segment_bytes=200).entries == entries(1, 2, term=5)


def test_entries_that_would_leave_a_hole_are_refused(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(None, entries(1, 3))
    with pytest.raises(WalOrderError):
        wal.save(None, [entry(5)])
    with pytest.raises(WalOrderError):
        wal.save(None, [entry(4), entry(6)])
    wal.compact(SnapshotMeta(2, 1, ("a",)))
    with pytest.raises(WalOrderError):
        wal.save(None, [entry(2)])
    wal.close()

    assert reopen(tmp_path).entries == entries(3, 3)


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.close()
    with pytest.raises(WalClosed):
        wal.save(HardState(term=1), [])


# -- compaction ----------------------------------------------------------------------


def test_compaction_keeps_entries_after_the_snapshot_and_the_hard_state(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=256)
    wal.save(HardState(term=4, vote="a", commit=0), [])
    for index in range(1, 101):
        wal.save(None, [entry(index, term=4)])
    wal.save(HardState(term=4, vote="a", commit=90), [])
    before = set(wal.segment_paths())

    wal.compact(SnapshotMeta(90, 4, ("a", "b", "c")))

    after = set(wal.segment_paths())
    assert len(after) < len(before) / 2, "covered segments are unlinked"
    assert {path for path in before if path.exists()} == after & before
    assert wal.first_index == 91
    wal.close()

    recovered = reopen(tmp_path, segment_bytes=256)

    assert recovered.snapshot == SnapshotMeta(90, 4, ("a", "b", "c"))
    assert recovered.entries == entries(91, 100, term=4)
    assert recovered.hard_state == HardState(term=4, vote="a", commit=90)


def test_compaction_past_the_end_leaves_an_empty_log_that_resumes_after_it(
    tmp_path: Path,
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(HardState(term=1), entries(1, 3))
    wal.compact(SnapshotMeta(50, 2, ("a",)))
    wal.save(None, [entry(51, term=2)])
    wal.close()

    recovered = reopen(tmp_path)

    assert recovered.snapshot == SnapshotMeta(50, 2, ("a",))
    assert recovered.entries == [entry(51, term=2)]


def test_compaction_drops_entries_that_contradict_the_snapshot(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(HardState(term=1), entries(1, 10, term=1))
    # A leader's snapshot at index 5 of term 2: our entry 5 is of term 1, so
    # our entries after it come from a different history.
    wal.compact(SnapshotMeta(5, 2, ("a",)))
    assert wal.last_index == 5
    wal.close()

    recovered = reopen(tmp_path)

    assert recovered.snapshot == SnapshotMeta(5, 2, ("a",))
    assert recovered.entries == []


def test_stale_compaction_is_ignored(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.save(None, entries(1, 10))
    wal.compact(SnapshotMeta(6, 1, ("a",)))
    wal.compact(SnapshotMeta(3, 1, ("a",)))
    wal.close()

    recovered = reopen(tmp_path)

    assert recovered.snapshot == SnapshotMeta(6, 1, ("a",))
    assert recovered.entries == entries(7, 10)


@pytest.mark.parametrize(
    ("snapshot_term", "expected"),
    [(2, entries(31, 40, term=2)), (3, [])],
    ids=["log-agrees-with-snapshot", "log-contradicts-snapshot"],
)
def test_crash_before_compaction_unlinked_old_segments_replays_the_same(
    tmp_path: Path, snapshot_term: int, expected: list[Entry]
) -> None:
    directory = tmp_path / "wal"
    wal, _ = WriteAheadLog.open(directory, segment_bytes=128)
    wal.save(HardState(term=2, vote="a", commit=0), [])
    for index in range(1, 41):
        wal.save(None, [entry(index, term=2)])
    saved = tmp_path / "before-compaction"
    shutil.copytree(directory, saved)
    wal.compact(SnapshotMeta(30, snapshot_term, ("a",)))
    wal.close()
    unlinked = sorted(path.name for path in saved.iterdir() if not (directory / path.name).exists())
    assert len(unlinked) >= 3

    # Unlinks are not ordered on every file system: bring back every other one.
    for name in unlinked[::2]:
        shutil.copy(saved / name, directory / name)

    recovered = reopen(directory, segment_bytes=128)

    assert recovered.snapshot == SnapshotMeta(30, snapshot_term, ("a",))
    assert recovered.entries == expected
    assert recovered.hard_state == HardState(term=2, vote="a", commit=0)


# -- torn tails and corruption -------------------------------------------------------


def test_crash_at_every_byte_of_the_last_record_keeps_exactly_the_records_before_it(
    tmp_path: Path,
) -> None:
    segment, starts = three_single_entry_saves(tmp_path / "wal")
    last_start, end = starts[-1], os.path.getsize(segment)

    for cut in range(last_start, end):
        crashed = tmp_path / f"cut-{cut}"
        shutil.copytree(segment.parent, crashed)
        os.truncate(crashed / segment.name, cut)

        wal, recovered = WriteAheadLog.open(crashed)

        assert recovered.entries == entries(1, 2), f"cut at {cut}"
        assert recovered.hard_state == HardState(term=1, vote="a", commit=0)
        assert recovered.torn_bytes == cut - last_start
        assert os.path.getsize(crashed / segment.name) == last_start
        # The log goes on right after the last intact record.
        wal.save(None, [entry(3, term=2)])
        wal.close()
        assert reopen(crashed).entries == entries(1, 2) + [entry(3, term=2)]
        shutil.rmtree(crashed)


def test_crash_inside_a_batch_keeps_whole_records_and_the_hard_state_first(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "wal"
    wal, _ = WriteAheadLog.open(directory)
    wal.save(HardState(term=1), entries(1, 2))
    batch_start = os.path.getsize(only_segment(directory))
    wal.save(HardState(term=2, vote="b", commit=2), entries(3, 6, term=2))
    wal.close()
    segment = only_segment(directory)

    seen = set()
    for cut in range(batch_start, os.path.getsize(segment)):
        crashed = tmp_path / "crashed"
        shutil.copytree(directory, crashed)
        os.truncate(crashed / segment.name, cut)

        recovered = reopen(crashed)

        kept = len(recovered.entries) - 2
        assert recovered.entries == entries(1, 2) + entries(3, 2 + kept, term=2)
        if kept > 0:
            assert recovered.hard_state == HardState(term=2, vote="b", commit=2)
        seen.add(kept)
        shutil.rmtree(crashed)
    assert seen == {0, 1, 2, 3}


def test_lost_page_inside_the_last_batch_is_a_torn_tail(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    wal, _ = WriteAheadLog.open(directory)
    wal.save(HardState(term=1), entries(1, 2))
    batch_start = os.path.getsize(only_segment(directory))
    wal.save(None, [entry(3, data=b"a" * 100), entry(4, data=b"b" * 100), entry(5)])
    wal.close()
    segment = only_segment(directory)
    damaged = bytearray(segment.read_bytes())
    # The second record of the unacknowledged batch never reached the disk,
    # the third did: nothing from the hole on was acknowledged.
    hole = batch_start + 24 + 100 + 20
    damaged[hole : hole + 60] = bytes(60)
    segment.write_bytes(damaged)

    recovered = reopen(directory)

    assert [kept.index for kept in recovered.entries] == [1, 2, 3]


def test_flipped_byte_in_the_middle_record_is_corruption(tmp_path: Path) -> None:
    segment, starts = three_single_entry_saves(tmp_path / "wal")
    middle_start, middle_end = starts[1], starts[2]
    original = segment.read_bytes()

    for position in range(middle_start, middle_end):
        damaged = bytearray(original)
        damaged[position] ^= 0x40
        segment.write_bytes(damaged)

        with pytest.raises(WalCorrupt) as raised:
            WriteAheadLog.open(segment.parent)

        assert raised.value.path == segment
        assert raised.value.offset == middle_start
    segment.write_bytes(original)
    assert reopen(segment.parent).entries == entries(1, 3)


def test_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    segment, starts = three_single_entry_saves(tmp_path / "wal")
    original = segment.read_bytes()

    for position in range(starts[-1], len(original)):
        damaged = bytearray(original)
        damaged[position] ^= 0x01
        segment.write_bytes(damaged)

        recovered = reopen(segment.parent)

        assert recovered.entries == entries(1, 2)
        assert recovered.torn_bytes == len(original) - starts[-1]


def test_damage_in_an_earlier_segment_is_corruption(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=128)
    for index in range(1, 20):
        wal.save(None, [entry(index)])
    first, *_ = wal.segment_paths()
    wal.close()
    # Cutting the end off a sealed segment is not a torn tail: it was fsynced.
    os.truncate(first, os.path.getsize(first) - 1)

    with pytest.raises(WalCorrupt) as raised:
        WriteAheadLog.open(tmp_path, segment_bytes=128)

    assert raised.value.path == first


def test_zeroed_tail_after_the_last_record_is_cut_off(tmp_path: Path) -> None:
    segment, _ = three_single_entry_saves(tmp_path / "wal")
    with open(segment, "ab") as file:
        file.write(b"\x00" * 4096)

    recovered = reopen(segment.parent)

    assert recovered.entries == entries(1, 3)
    assert recovered.torn_bytes == 4096


# -- snapshot files ------------------------------------------------------------------


def test_snapshot_round_trip_streams_its_data(tmp_path: Path) -> None:
    meta = SnapshotMeta(120, 3, ("a", "b", "c"))
    chunk = os.urandom(64 * 1024)

    def write_data(file) -> None:
        for _ in range(16):
            file.write(chunk)

    data_path = save_snapshot(tmp_path, meta, write_data)

    loaded = load_latest_snapshot(tmp_path)
    assert loaded == (meta, data_path)
    assert data_path.read_bytes() == chunk * 16


def test_a_database_copy_becomes_the_snapshot_by_moving_not_copying(tmp_path: Path) -> None:
    # A snapshot of a large state must not cost a second full write of it.
    copy = tmp_path / "export"
    copy.write_bytes(os.urandom(256 * 1024))
    inode, content = copy.stat().st_ino, copy.read_bytes()
    meta = SnapshotMeta(7, 2, ("a",))
    data_path = save_snapshot(tmp_path / "snapshots", meta, copy)
    assert not copy.exists()
    assert data_path.stat().st_ino == inode
    assert load_latest_snapshot(tmp_path / "snapshots") == (meta, data_path)
    assert data_path.read_bytes() == content


def test_no_snapshot_loads_as_none(tmp_path: Path) -> None:
    assert load_latest_snapshot(tmp_path / "absent") is None
    assert load_latest_snapshot(tmp_path) is None


def test_newer_snapshot_prunes_older_ones(tmp_path: Path) -> None:
    save_snapshot(tmp_path, SnapshotMeta(10, 1, ("a",)), b"ten")
    save_snapshot(tmp_path, SnapshotMeta(20, 1, ("a",)), b"twenty")
    newest = save_snapshot(tmp_path, SnapshotMeta(30, 2, ("a", "b")), b"thirty")

    assert sorted(tmp_path.iterdir()) == sorted([newest, tmp_path / (newest.name[:38] + ".meta")])
    assert load_latest_snapshot(tmp_path) == (SnapshotMeta(30, 2, ("a", "b")), newest)


def test_saving_the_same_index_twice_keeps_one_consistent_snapshot(tmp_path: Path) -> None:
    meta = SnapshotMeta(10, 1, ("a",))
    save_snapshot(tmp_path, meta, b"first copy")
    second = save_snapshot(tmp_path, meta, b"second copy")

    assert load_latest_snapshot(tmp_path) == (meta, second)
    assert len(list(tmp_path.iterdir())) == 2


def test_crash_mid_snapshot_leaves_temp_files_that_load_ignores(tmp_path: Path) -> None:
    older = SnapshotMeta(10, 1, ("a",))
    older_path = save_snapshot(tmp_path, older, b"durable")
    # What a crash leaves: half-written data, a meta never renamed, and data
    # renamed into place whose meta file was never written.
    (tmp_path / "snap-0000000000000014-0000000000000001.data.tmp").write_bytes(b"half")
    (tmp_path / "snap-0000000000000030-0000000000000001.meta.tmp").write_bytes(b"\x81")
    (tmp_path / "snap-0000000000000030-0000000000000001-00.data").write_bytes(b"orphan")

    assert load_latest_snapshot(tmp_path) == (older, older_path)

    newest = save_snapshot(tmp_path, SnapshotMeta(40, 2, ("a",)), b"next")
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".data", ".meta"]
    assert load_latest_snapshot(tmp_path) == (SnapshotMeta(40, 2, ("a",)), newest)


def test_failed_snapshot_writer_leaves_the_previous_snapshot_alone(tmp_path: Path) -> None:
    older = SnapshotMeta(10, 1, ("a",))
    older_path = save_snapshot(tmp_path, older, b"durable")

    def failing_writer(file) -> None:
        file.write(b"half of the new snapshot")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_snapshot(tmp_path, SnapshotMeta(20, 1, ("a",)), failing_writer)

    assert load_latest_snapshot(tmp_path) == (older, older_path)
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".data", ".meta"]


def test_damaged_snapshot_data_is_reported_not_skipped(tmp_path: Path) -> None:
    data_path = save_snapshot(tmp_path, SnapshotMeta(10, 1, ("a",)), b"x" * 1000)
    damaged = bytearray(data_path.read_bytes())
    damaged[500] ^= 0xFF
    data_path.write_bytes(damaged)

    with pytest.raises(SnapshotCorrupt):
        load_latest_snapshot(tmp_path)
    assert load_latest_snapshot(tmp_path, verify=False) is not None


# -- the log against a model ---------------------------------------------------------


class LogModel:
    """What the log should hold, kept in memory the obvious way."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.entries: list[Entry] = []

    @property
    def first_index(self) -> int:
        return (self.snapshot.index if self.snapshot else 0) + 1

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    def term_at(self, index: int) -> int | None:
        if self.snapshot is not None and index == self.snapshot.index:
            return self.snapshot.term
        if self.first_index <= index <= self.last_index:
            return self.entries[index - self.first_index].term
        return None

    def save(self, hard_state: HardState | None, batch: list[Entry]) -> None:
        if hard_state is not None:
            self.hard_state = hard_state
        if batch:
            del self.entries[batch[0].index - self.first_index :]
            self.entries.extend(batch)

    def compact(self, meta: SnapshotMeta) -> None:
        if self.snapshot is not None and meta.index <= self.snapshot.index:
            return
        if self.term_at(meta.index) == meta.term:
            self.entries = [kept for kept in self.entries if kept.index > meta.index]
        else:
            self.entries = []
        self.snapshot = meta


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_random_saves_compactions_and_reopens_match_a_model(data: st.DataObject) -> None:
    segment_bytes = data.draw(st.sampled_from([64, 300, 4096]), label="segment_bytes")
    model = LogModel()
    # What reaches the disk before a crash is checked by the tests above; here
    # the question is only whether replay rebuilds the model, so skip the
    # fsyncs and run many more sequences in the same time.
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as scratch:
        patch.setattr(os, "fsync", lambda fd: None)
        patch.setattr(os, "fdatasync", lambda fd: None)
        directory = Path(scratch) / "wal"
        wal, _ = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
        try:
            for _ in range(data.draw(st.integers(1, 40), label="steps")):
                action = data.draw(st.sampled_from(["save", "save", "save", "compact", "reopen"]))
                if action == "save":
                    first = data.draw(
                        st.integers(model.first_index, model.last_index + 1), label="first"
                    )
                    count = data.draw(st.integers(0, 4), label="count")
                    term = data.draw(st.integers(1, 3), label="term")
                    batch = [
                        entry(first + k, term, data.draw(st.binary(max_size=40)))
                        for k in range(count)
                    ]
                    hard_state = data.draw(
                        st.none()
                        | st.builds(
                            HardState,
                            st.integers(0, 2**40),
                            st.none() | st.sampled_from(["a", "b", "ü"]),
                            st.integers(0, 2**40),
                        ),
                        label="hard_state",
                    )
                    wal.save(hard_state, batch)
                    model.save(hard_state, batch)
                elif action == "compact":
                    index = data.draw(st.integers(0, model.last_index + 2), label="index")
                    known = model.term_at(index)
                    term = data.draw(
                        st.sampled_from([known])
                        if known and data.draw(st.booleans())
                        else st.integers(1, 3),
                        label="snapshot term",
                    )
                    meta = SnapshotMeta(index, term, ("a", "b"))
                    wal.compact(meta)
                    model.compact(meta)
                else:
                    wal.close()
                    wal, recovered = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
                    assert recovered.hard_state == model.hard_state
                    assert recovered.snapshot == model.snapshot
                    assert recovered.entries == model.entries
                assert (wal.first_index, wal.last_index) == (model.first_index, model.last_index)
        finally:
            wal.close()
        recovered = reopen(directory, segment_bytes=segment_bytes)
    assert recovered.hard_state == model.hard_state
    assert recovered.snapshot == model.snapshot
    assert recovered.entries == model.entries
