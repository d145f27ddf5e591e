"""The Raft write-ahead log: entries and hard state made durable before they count.

The log is a directory of append-only segment files named ``<seq>.wal`` (16
lower-case hex digits, replayed in ``seq`` order). A segment is a run of
records, each framed as::

    offset  size  field
    0       4     magic        b"\\xc1FLW" (0xc1: never a msgpack type byte)
    4       8     checksum     BLAKE3 of bytes 12..end, truncated to 8 bytes
    12      4     length       payload length, little-endian u32
    16      8     batch_start  offset in this segment of the first record of
                               the save() call that wrote this one, u64 LE
    24      n     payload      a msgpack array whose first item is the kind

Payloads: ``[1, term, index, kind, data]`` an entry, ``[2, term, vote,
commit]`` the hard state, ``[3, index, term, voters, keep_log]`` a snapshot
marker (entries at or below ``index`` are gone; when ``keep_log`` is false the
entries above it are gone too, because they contradicted the snapshot). There
is no separate truncate record: an entry whose index is at or below the last
stored index replaces that stored suffix, on disk exactly as in memory. One
``save()`` writes its hard state record first and its entries after it, in
one ``write`` followed by one ``fdatasync`` (group commit), so any prefix of a
batch that survives a crash still carries the hard state its entries need.
Every segment is started with a snapshot marker (when there is a snapshot) and
the current hard state, so the oldest surviving segment is a valid start.

Recovery replays every segment. A damaged record in the last segment is a
torn tail, and is cut off, when no intact record of a *later* batch follows it
(``batch_start`` tells which batch a record belongs to): a later batch is only
written after the earlier one was fsynced and acknowledged, so damage before
it is corruption and raises :class:`WalCorrupt` naming file and offset, as
does any damage in an earlier segment; acknowledged entries are never dropped
silently. Compaction starts a new segment with the snapshot marker and hard
state, makes it durable (file, then directory), and only then unlinks the
older segments whose entries all sit at or below the snapshot, oldest first.
"""

from __future__ import annotations

import enum
import errno
import os
import struct
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack
from blake3 import blake3

from consensus.raft.errors import StorageFull
from consensus.raft.timings import Timings
from consensus.raft.types import Entry, EntryKind, HardState, SnapshotMeta

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "Recovered",
    "WalClosed",
    "WalCorrupt",
    "WalError",
    "WalFailed",
    "WalOrderError",
    "WriteAheadLog",
    "fsync_directory",
]

# Compaction can unlink only whole segments, so a segment still holding one
# entry past the snapshot stays: small segments keep the log on disk close to
# the entries since the snapshot (a rotation costs one fsync of the directory).
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024

MAGIC = b"\xc1FLW"
CHECKSUM_BYTES = 8
_HEADER = struct.Struct("<4s8sIQ")
_CHECKED_FIELDS = struct.Struct("<IQ")
HEADER_BYTES = _HEADER.size
_CHECKED_FROM = 4 + CHECKSUM_BYTES
_MAX_PAYLOAD = 2**32 - 1
_SEGMENT_SUFFIX = ".wal"


class RecordKind(enum.IntEnum):
    ENTRY = 1
    HARD_STATE = 2
    SNAPSHOT = 3


# Plain ints for the hot encoding path (msgpack packs them without a subclass check).
_ENTRY = RecordKind.ENTRY.value
_HARD_STATE = RecordKind.HARD_STATE.value
_SNAPSHOT = RecordKind.SNAPSHOT.value


class WalError(Exception):
    """Base of every error the write-ahead log raises on purpose."""


class WalCorrupt(WalError):
    """The log on disk cannot be trusted: starting would lose or invent state.

    Raised instead of guessing, so an operator restores the node from its
    peers rather than the node silently forgetting entries it acknowledged.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalOrderError(WalError, ValueError):
    """The caller asked for something that would leave a hole in the log:
    entries that are not consecutive, start past the end of the log, or fall
    inside the snapshot. This is a bug in the caller, not a disk problem."""


class WalClosed(WalError):
    """The log was used after close()."""


class WalFailed(WalError):
    """An earlier write or fsync failed, so what is on disk is unknown.

    Retrying an fsync after a failure can report success for data the kernel
    already dropped, so the log refuses all further work; reopening it (which
    re-reads the disk) is the only way on.
    """


@dataclass(frozen=True, slots=True)
class Recovered:
    """What the log held when it was opened: the state the Raft core restarts from.

    If the newest snapshot file is newer than ``snapshot``, a crash came
    between save_snapshot and compact: restore that snapshot, skip the
    entries it covers, and call compact again.
    """

    hard_state: HardState
    snapshot: SnapshotMeta | None
    entries: list[Entry]
    torn_bytes: int = 0
    """Bytes of an unacknowledged torn tail that recovery cut off (for logs and metrics)."""


def fsync_directory(directory: Path) -> None:
    """Make creations, renames and unlinks inside ``directory`` durable;
    fsyncing a file does not persist its name."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- encoding --------------------------------------------------------------------


def _entry_payload(entry: Entry) -> bytes:
    return msgpack.packb((_ENTRY, entry.term, entry.index, int(entry.kind), entry.data))


def _hard_state_payload(hard_state: HardState) -> bytes:
    return msgpack.packb((_HARD_STATE, hard_state.term, hard_state.vote, hard_state.commit))


def _snapshot_payload(meta: SnapshotMeta, keep_log: bool) -> bytes:
    return msgpack.packb((_SNAPSHOT, meta.index, meta.term, list(meta.voters), keep_log))


def _frame(payload: bytes, batch_start: int) -> bytes:
    if len(payload) > _MAX_PAYLOAD:
        raise WalError(f"record of {len(payload)} bytes exceeds the 4 GiB frame limit")
    checked = _CHECKED_FIELDS.pack(len(payload), batch_start)
    hasher = blake3(checked)
    hasher.update(payload)
    return b"".join((MAGIC, hasher.digest(CHECKSUM_BYTES), checked, payload))


# -- decoding and replay -----------------------------------------------------------


def _intact_frame(data: bytes, view: memoryview, offset: int) -> tuple[int, int] | None:
    """Return (end, batch_start) of the record at ``offset`` if it is whole and
    its checksum matches, else None."""
    if len(data) - offset < HEADER_BYTES:
        return None
    magic, checksum, length, batch_start = _HEADER.unpack_from(data, offset)
    end = offset + HEADER_BYTES + length
    if magic != MAGIC or end > len(data):
        return None
    if blake3(view[offset + _CHECKED_FROM : end]).digest(CHECKSUM_BYTES) != checksum:
        return None
    return end, batch_start


def _later_batch_follows(data: bytes, view: memoryview, damaged_at: int) -> bool:
    """Whether an intact record of a batch that began after ``damaged_at``
    exists further on; such a batch was written only once the damaged one was
    fsynced, so the damage cannot be an interrupted write."""
    candidate = data.find(MAGIC, damaged_at + 1)
    while candidate != -1:
        frame = _intact_frame(data, view, candidate)
        if frame is None:
            candidate = data.find(MAGIC, candidate + 1)
            continue
        end, batch_start = frame
        if damaged_at < batch_start <= candidate:
            return True
        candidate = data.find(MAGIC, end)
    return False


class _Replay:
    """Rebuilds the log state record by record, in the order they were written.

    The oldest segments may have been unlinked by compaction (and after a
    crash, not necessarily all of them), so the first entry seen, or one after
    a gap, restarts the log; the final consistency check against the snapshot
    catches a log that really is missing entries.
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.log: list[Entry] = []

    def apply(self, payload: memoryview, path: Path, offset: int) -> int:
        """Apply one record; return the entry index it stored, or 0."""
        try:
            record = msgpack.unpackb(payload)
            kind = record[0]
            if kind == RecordKind.ENTRY:
                _, term, index, entry_kind, data = record
                entry = Entry(int(term), int(index), EntryKind(entry_kind), bytes(data))
            elif kind == RecordKind.HARD_STATE:
                _, term, vote, commit = record
                self.hard_state = HardState(int(term), vote, int(commit))
                return 0
            elif kind == RecordKind.SNAPSHOT:
                _, index, term, voters, keep_log = record
                self._apply_snapshot(SnapshotMeta(int(index), int(term), tuple(voters)), keep_log)
                return 0
            else:
                raise WalCorrupt(path, offset, f"unknown record kind {kind!r}")
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            raise WalCorrupt(path, offset, f"undecodable record: {exc!r}") from exc
        if self.snapshot is not None and entry.index <= self.snapshot.index:
            raise WalCorrupt(path, offset, f"entry {entry.index} lies inside the snapshot")
        log = self.log
        if log and log[0].index <= entry.index <= log[-1].index + 1:
            del log[entry.index - log[0].index :]
        else:
            log.clear()
        log.append(entry)
        return entry.index

    def _apply_snapshot(self, meta: SnapshotMeta, keep_log: bool) -> None:
        if self.snapshot is not None and meta.index <= self.snapshot.index:
            return
        self.snapshot = meta
        log = self.log
        if not keep_log:
            log.clear()
        elif log and log[0].index <= meta.index:
            del log[: meta.index - log[0].index + 1]

    def check_consistent(self, directory: Path) -> None:
        expected_first = (self.snapshot.index if self.snapshot else 0) + 1
        if self.log and self.log[0].index != expected_first:
            raise WalCorrupt(
                directory,
                0,
                f"log starts at entry {self.log[0].index} but the snapshot ends at "
                f"{expected_first - 1}: a segment is missing",
            )


# -- the log -----------------------------------------------------------------------


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    max_index: int = 0
    """Highest entry index recorded in this segment (0: none). Compaction may
    unlink the segment once the snapshot covers it."""


def _segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:016x}{_SEGMENT_SUFFIX}"


def _list_segments(directory: Path) -> list[_Segment]:
    segments = []
    for path in directory.iterdir():
        if path.suffix != _SEGMENT_SUFFIX or len(path.stem) != 16:
            continue
        try:
            seq = int(path.stem, 16)
        except ValueError:
            continue
        segments.append(_Segment(seq, path))
    segments.sort(key=lambda segment: segment.seq)
    return segments


def _open_for_append(path: Path, *, create: bool) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT | os.O_EXCL
    return os.open(path, flags, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _ensure_directory(directory: Path) -> None:
    if directory.is_dir():
        return
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_directory(created.parent)


class WriteAheadLog:
    """Blocking, single-caller access to the log directory.

    Every method does disk I/O and may block for an fsync: the trio driver
    calls them through ``trio.to_thread.run_sync``, one call at a time (the
    log holds no lock). Build it with :meth:`open`.
    """

    def __init__(
        self,
        directory: Path,
        segment_bytes: int,
        segments: list[_Segment],
        fd: int,
        size: int,
        replay: _Replay,
    ) -> None:
        self._directory = directory
        self._segment_bytes = segment_bytes
        self._segments = segments
        self._fd: int | None = fd
        self._size = size
        self._failed: BaseException | None = None
        self._hard_state = replay.hard_state
        self._snapshot = replay.snapshot
        # Terms of the stored entries, first_index onwards: enough to validate
        # appends and to decide at compaction whether the log agrees with the
        # snapshot, without keeping the entries themselves in memory twice.
        self._first_index = (replay.snapshot.index if replay.snapshot else 0) + 1
        self._terms = array("Q", (entry.term for entry in replay.log))
        self.fsync_seconds = Timings()  # each append's fdatasync, for the node's metrics

    # -- opening ----------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> tuple[WriteAheadLog, Recovered]:
        """Open (or create) the log in ``directory`` and replay it.

        A torn tail is cut off and the cut fsynced before this returns, so the
        next append lands right after the last intact record.
        """
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        directory = Path(directory)
        _ensure_directory(directory)
        segments = _list_segments(directory)
        replay = _Replay()
        torn_bytes = 0
        size = 0
        for position, segment in enumerate(segments):
            is_last = position == len(segments) - 1
            size, torn_bytes = cls._replay_segment(segment, replay, is_last=is_last)
        replay.check_consistent(directory)
        recovered = Recovered(
            replay.hard_state, replay.snapshot, list(replay.log), torn_bytes=torn_bytes
        )
        if segments:
            last = segments[-1]
            fd = _open_for_append(last.path, create=False)
            if torn_bytes:
                try:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                except BaseException:
                    os.close(fd)
                    raise
            wal = cls(directory, segment_bytes, segments, fd, size, replay)
        else:
            wal = cls(directory, segment_bytes, [], -1, 0, replay)
            wal._fd = None
            wal._start_segment(keep_log=True)
        return wal, recovered

    @staticmethod
    def _replay_segment(segment: _Segment, replay: _Replay, *, is_last: bool) -> tuple[int, int]:
        """Replay one segment; return (intact length, torn bytes cut off)."""
        data = segment.path.read_bytes()
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            frame = _intact_frame(data, view, offset)
            if frame is None:
                if not is_last:
                    raise WalCorrupt(segment.path, offset, "damaged record in a sealed segment")
                if _later_batch_follows(data, view, offset):
                    raise WalCorrupt(
                        segment.path,
                        offset,
                        "damaged record followed by a later, acknowledged batch",
                    )
                return offset, len(data) - offset
            end, _ = frame
            stored = replay.apply(view[offset + HEADER_BYTES : end], segment.path, offset)
            segment.max_index = max(segment.max_index, stored)
            offset = end
        return offset, 0

    # -- state ------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot(self) -> SnapshotMeta | None:
        return self._snapshot

    @property
    def first_index(self) -> int:
        """Index of the first stored entry (snapshot index + 1, even when empty)."""
        return self._first_index

    @property
    def last_index(self) -> int:
        """Index of the last stored entry, or the snapshot's when the log is empty."""
        return self._first_index + len(self._terms) - 1

    def segment_paths(self) -> list[Path]:
        """The segment files in replay order (for tests and status pages)."""
        return [segment.path for segment in self._segments]

    # -- writing ----------------------------------------------------------------

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Append the hard state and entries and make them durable with one fsync.

        Only when this returns may the Raft core send the messages that depend
        on them. An entry at or below the last stored index replaces the
        stored suffix from that index on. A hard state equal to the stored one
        is not written again, so a call that changes nothing costs no fsync.
        """
        self._check_usable()
        if hard_state == self._hard_state:
            hard_state = None  # already durable: no record, and no fsync if that is all
        if hard_state is None and not entries:
            return
        if entries:
            self._check_follows(entries)
        if self._size >= self._segment_bytes:
            self._start_segment(keep_log=True)
        batch_start = self._size
        payloads = []
        if hard_state is not None:
            payloads.append(_hard_state_payload(hard_state))
        payloads.extend(_entry_payload(entry) for entry in entries)
        batch = b"".join(_frame(payload, batch_start) for payload in payloads)
        self._append_durably(batch)
        if hard_state is not None:
            self._hard_state = hard_state
        if entries:
            del self._terms[entries[0].index - self._first_index :]
            self._terms.extend(entry.term for entry in entries)
            segment = self._segments[-1]
            segment.max_index = max(segment.max_index, entries[-1].index)

    def compact(self, meta: SnapshotMeta) -> None:
        """Forget entries up to ``meta.index`` now that a snapshot holding them is durable.

        Call it only after the snapshot file is durable (save_snapshot returned).
        Entries above the snapshot are kept when the stored entry at
        ``meta.index`` has ``meta.term``; otherwise they contradict the
        snapshot (a follower installing its leader's snapshot) and are dropped,
        as the Raft paper's InstallSnapshot rule says. A snapshot no newer than
        the current one is ignored.
        """
        self._check_usable()
        if self._snapshot is not None and meta.index <= self._snapshot.index:
            return
        keep_log = self._term_at(meta.index) == meta.term
        self._snapshot = meta
        self._start_segment(keep_log=keep_log)
        if keep_log and meta.index < self.last_index:
            del self._terms[: meta.index - self._first_index + 1]
        else:
            del self._terms[:]
        self._first_index = meta.index + 1
        self._unlink_covered_segments(meta.index, keep_log=keep_log)

    def close(self) -> None:
        """Close the segment file. Everything saved is already durable."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._fd is None:
            raise WalClosed(f"write-ahead log in {self._directory} is closed")
        if self._failed is not None:
            raise WalFailed(
                f"write-ahead log in {self._directory} failed earlier: {self._failed!r}"
            ) from self._failed

    def _check_follows(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        for offset, entry in enumerate(entries):
            if entry.index != first + offset:
                raise WalOrderError(
                    f"entries are not consecutive: {entry.index} follows {first + offset - 1}"
                )
        if first < self._first_index:
            raise WalOrderError(
                f"entry {first} lies inside the snapshot (log starts at {self._first_index})"
            )
        if first > self.last_index + 1:
            raise WalOrderError(f"entry {first} leaves a gap after {self.last_index}")

    def _term_at(self, index: int) -> int | None:
        if self._snapshot is not None and index == self._snapshot.index:
            return self._snapshot.term
        position = index - self._first_index
        if 0 <= position < len(self._terms):
            return self._terms[position]
        return None

    def _append_durably(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # A write refused for room, before any fsync: cut back to what was
                # durable and the log is exactly as it was, so the caller may retry.
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
                raise StorageFull(f"no room to append to {self._directory}: {exc}") from exc
            started = time.perf_counter()
            os.fdatasync(self._fd)
            self.fsync_seconds.observe(time.perf_counter() - started)
        except StorageFull:
            raise
        except BaseException as exc:
            self._failed = exc
            raise
        self._size += len(data)

    def _start_segment(self, *, keep_log: bool) -> None:
        """Begin a new segment headed by the snapshot marker and hard state, and
        make the file and its name durable before anything relies on it."""
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = _segment_path(self._directory, seq)
        head = []
        if self._snapshot is not None:
            head.append(_snapshot_payload(self._snapshot, keep_log))
        head.append(_hard_state_payload(self._hard_state))
        data = b"".join(_frame(payload, 0) for payload in head)
        try:
            fd = _open_for_append(path, create=True)
        except BaseException as exc:
            self._failed = exc
            raise
        try:
            _write_all(fd, data)
            os.fsync(fd)
            fsync_directory(self._directory)
        except BaseException as exc:
            os.close(fd)
            self._failed = exc
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._size = len(data)
        self._segments.append(_Segment(seq, path))

    def _unlink_covered_segments(self, snapshot_index: int, *, keep_log: bool) -> None:
        """Unlink the oldest segments whose entries the snapshot covers.

        Only a prefix goes, oldest first, so a crash part-way still leaves
        segments that replay to the same state; the newest segment (the one
        just started) always stays.
        """
        unlinked = 0
        try:
            for segment in self._segments[:-1]:
                if keep_log and segment.max_index > snapshot_index:
                    break
                segment.path.unlink(missing_ok=True)
                unlinked += 1
        finally:
            if unlinked:
                del self._segments[:unlinked]
                fsync_directory(self._directory)
