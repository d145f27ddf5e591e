"""What the Raft driver needs from the application it replicates.

The driver knows a committed entry only as bytes at a log index. It hands
them to an `Applier`, which owns the replicated state: applies entries in
log order, says how far it got, copies its whole state into a snapshot file
and replaces it by one, and knows where the members' Raft endpoints are
(the application records those addresses in its own state). What the
entries mean, and what applying one produced, stays with the application.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Applier(Protocol):
    @property
    def applied_index(self) -> int:
        """The last log index whose entry is in the state, stored with it."""
        ...

    def apply_batch(self, entries: list[tuple[int, bytes | None]]) -> list[Any]:
        """Apply consecutive `(index, data)` entries, all or none; one result each.

        `data` is None for an entry that carries no command (a new leader's
        no-op, a membership change). Entries at or below `applied_index` are
        skipped: after a crash the log hands them over again. Called from
        the Ready loop or from a worker thread.
        """
        ...

    def export_snapshot(self, target: Path) -> int:
        """Copy the whole state, consistently, into a new file at `target`; return
        the applied index the copy holds. Runs in a worker thread while the
        loop goes on applying."""
        ...

    def import_snapshot(self, source: Path) -> None:
        """Replace the whole state, in one step, by a copy `export_snapshot` made
        (here or on another member). Runs in a worker thread."""
        ...

    def raft_addresses(self) -> dict[str, str]:
        """Member id -> Raft address (`host:port`), as the replicated state records them."""
        ...
