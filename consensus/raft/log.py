"""The in-memory Raft log: a snapshot offset, then entries, split into a
stable prefix (the driver has persisted it) and an unstable suffix (handed out
in the next Ready).

The log never touches a disk. It tracks three cursors the protocol needs —
`committed`, `applying` (handed to the driver to apply) and `applied` — and
the snapshot that replaced the compacted prefix. When a follower must
overwrite a conflicting suffix, `stable` moves back so the next Ready carries
the replacement entries and the driver overwrites the same suffix on disk.

It also knows how many bytes of entry data it holds, and how they split
between applied, committed and uncommitted entries: the driver snapshots by
bytes, not only by count, and a leader refuses proposals once its
uncommitted tail is too large. A running total per entry (`_ends`) makes
each of these figures O(1), kept up to date by append, truncation and
compaction without rescanning the entries.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from consensus.raft.errors import InconsistentStorage, InvalidCompaction
from consensus.raft.types import Entry, SnapshotMeta


class RaftLog:
    def __init__(
        self,
        snapshot: SnapshotMeta | None,
        entries: Sequence[Entry],
        commit: int,
        applied: int,
    ) -> None:
        self.snapshot: SnapshotMeta | None = snapshot
        self.offset = snapshot.index if snapshot is not None else 0
        self.offset_term = snapshot.term if snapshot is not None else 0
        self._entries: list[Entry] = []
        for entry in entries:
            if entry.index <= self.offset:
                continue  # already covered by the snapshot
            if entry.index != self.offset + len(self._entries) + 1:
                raise InconsistentStorage(
                    f"entry {entry.index} does not follow {self.last_index()}"
                )
            if entry.term < (self._entries[-1].term if self._entries else self.offset_term):
                raise InconsistentStorage(f"entry {entry.index} has a term lower than its prefix")
            self._entries.append(entry)
        # _ends[i]: bytes of entry data from the start of the log to entry
        # offset + 1 + i, inclusive; _base: the same figure at the offset.
        self._base = 0
        self._ends = array("Q")
        self._extend_ends(self._entries)
        if commit > self.last_index():
            raise InconsistentStorage(
                f"commit {commit} is beyond the last entry {self.last_index()}"
            )
        self.stable = self.last_index()
        self.committed = max(commit, self.offset)
        self.applied = min(max(applied, self.offset), self.committed)
        self.applying = self.applied
        # A snapshot received from the leader that the driver has not installed yet.
        self.pending_snapshot: SnapshotMeta | None = None

    # -- reading ---------------------------------------------------------

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`, or None when it is compacted away
        or not in the log yet."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.last_index():
            return None
        return self._entries[index - self.offset - 1].term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.offset - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate with this last entry has a log at least as
        up-to-date as ours (Raft §5.4.1)."""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi; `lo` must not be compacted.

        With `max_bytes`, only as many as fit in that many bytes of data, but
        always the first one, however large: an entry never splits, and a
        follower must get it to make progress.
        """
        if lo <= self.offset:
            raise InvalidCompaction(f"entries from {lo} are compacted (offset {self.offset})")
        entries = self._entries[lo - self.offset - 1 : hi - self.offset - 1]
        if max_bytes is None or not entries:
            return entries
        size = len(entries[0].data)
        for count, entry in enumerate(entries[1:], start=1):
            size += len(entry.data)
            if size > max_bytes:
                return entries[:count]
        return entries

    def bytes_through(self, index: int) -> int:
        """Bytes of entry data from the offset up to `index`, inclusive; an
        index at or below the offset holds none, one past the end all."""
        position = min(index, self.last_index()) - self.offset - 1
        return self._ends[position] - self._base if position >= 0 else 0

    def size_bytes(self) -> int:
        """Bytes of entry data the log holds in memory (everything since the snapshot)."""
        return self.bytes_through(self.last_index())

    def applied_bytes(self) -> int:
        """Bytes of the applied entries still held: what a snapshot now would drop."""
        return self.bytes_through(self.applied)

    def uncommitted_bytes(self) -> int:
        """Bytes of the entries not committed yet."""
        return self.size_bytes() - self.bytes_through(self.committed)

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.stable - self.offset :]

    def has_next_committed(self) -> bool:
        return self.committed > self.applying

    def next_committed(self, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(self.applying + 1, self.committed + 1, max_bytes)

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry that is new or conflicts with ours, or 0."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, with its term.

        This is the fast back-off of etcd-io/raft: a rejecting follower points
        the leader past a whole term of divergent entries at once.
        """
        while index > 0:
            ours = self.term(index)
            if ours is None:
                return index, 0  # compacted or missing: the leader decides
            if ours <= term:
                return index, ours
            index -= 1
        return 0, 0

    # -- writing ---------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, overwriting any suffix that starts at the first new index."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise AssertionError(f"overwriting committed entry {first} (commit {self.committed})")
        if first > self.last_index() + 1:
            raise AssertionError(f"gap before entry {first} (last {self.last_index()})")
        del self._entries[first - self.offset - 1 :]
        del self._ends[first - self.offset - 1 :]
        self._entries.extend(entries)
        self._extend_ends(entries)
        self.stable = min(self.stable, first - 1)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of AppendEntries: returns the last index the leader's
        message proves we share, or None when the consistency check fails."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to `index`; ignored if the log was
        rewritten in the meantime (the term at `index` no longer matches)."""
        if index > self.stable and self.term(index) == term:
            self.stable = index

    def applied_to(self, index: int) -> None:
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, self.applied)

    def restore(self, snapshot: SnapshotMeta) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        self.snapshot = snapshot
        self.offset = snapshot.index
        self.offset_term = snapshot.term
        self._entries = []
        self._base = 0
        self._ends = array("Q")
        self.stable = snapshot.index
        self.committed = snapshot.index
        self.applying = snapshot.index
        self.pending_snapshot = snapshot

    def snapshot_installed(self, snapshot: SnapshotMeta) -> None:
        if self.pending_snapshot == snapshot:
            self.pending_snapshot = None
        self.applied = max(self.applied, snapshot.index)
        self.applying = max(self.applying, self.applied)

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Drop entries up to the snapshot the application just took."""
        index = snapshot.index
        if index <= self.offset:
            raise InvalidCompaction(f"index {index} is already compacted (offset {self.offset})")
        if index > self.applied:
            raise InvalidCompaction(f"index {index} is not applied yet (applied {self.applied})")
        self._base = self._ends[index - self.offset - 1]
        del self._entries[: index - self.offset]
        del self._ends[: index - self.offset]
        self.offset = index
        self.offset_term = snapshot.term
        self.snapshot = snapshot

    def _extend_ends(self, entries: Sequence[Entry]) -> None:
        running = self._ends[-1] if self._ends else self._base
        for entry in entries:
            running += len(entry.data)
            self._ends.append(running)
