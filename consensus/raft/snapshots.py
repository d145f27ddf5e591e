"""Snapshots of the applied state: taken here, streamed to followers, received, installed.

Every `snapshot_every` applied entries the applier copies its state into a
file beside the loop; the core then compacts its log to the copy's index,
the copy becomes a durable snapshot file (`snapshot_files.py`) and only then
is the write-ahead log compacted. A follower too far behind is sent the
newest snapshot file over a connection of its own, in pieces, with TCP's
back-pressure; the receiver writes the pieces to a temporary file, makes it a
durable snapshot file and only then steps the snapshot message into its
core, which asks for the install in a later Ready. A transfer that stops
half way is let go: when the connection it came on closes, or once it had no
piece for `TRANSFER_IDLE_SECONDS` (seen by the next piece or closed connection
to reach the receiver, which needs no timer of its own); one sender holds at most
`TRANSFERS_PER_SENDER` at a time, so dropped transfers cannot pile up open
files and temp files. Each piece names its offset, so a piece of a transfer
that was let go is refused instead of starting a truncated copy. The last
piece carries the BLAKE3 digest of every byte the sender read from its
snapshot file; the receiver hashes its temp file before anything is made
durable, and a mismatch drops the transfer and its connection, so a copy
that differs from the sender's by one byte is never saved nor stepped into
the core. At start, `open_log` reconciles the log with the newest snapshot
file, so a crash between saving a snapshot and compacting the log, or before
the state took in a received snapshot, is finished on the way up.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import trio
from blake3 import blake3

from consensus.raft.applier import Applier
from consensus.raft.disk_threads import DiskThreads
from consensus.raft.errors import MalformedMessage
from consensus.raft.messages import Message
from consensus.raft.snapshot_files import file_digest, load_latest_snapshot, save_snapshot
from consensus.raft.transport import PeerTransport, current_connection
from consensus.raft.types import SnapshotMeta
from consensus.raft.wal import Recovered, WriteAheadLog

log = logging.getLogger(__name__)

SNAPSHOT_PIECE = 1 << 20
# A leader sends one snapshot to a follower at a time; a few more leave room
# for one whose connection died unnoticed while the next one starts.
TRANSFERS_PER_SENDER = 4
# Pieces follow each other as fast as the disks allow; this long without one
# means the sender is gone or stuck, and will start over if it comes back.
TRANSFER_IDLE_SECONDS = 60.0
_TRANSFER_ID_MAX = 64
_DIGEST_BYTES = 32  # BLAKE3's default output


def open_log(
    wal_dir: Path, snapshot_dir: Path, applier: Applier
) -> tuple[WriteAheadLog, Recovered]:
    """Open the write-ahead log, finishing whatever a crash left of a snapshot."""
    wal, recovered = WriteAheadLog.open(wal_dir)
    latest = load_latest_snapshot(snapshot_dir)
    if latest is not None and (
        recovered.snapshot is None or latest[0].index > recovered.snapshot.index
    ):
        # A crash came between saving a snapshot and compacting the log.
        wal.compact(latest[0])
        wal.close()
        wal, recovered = WriteAheadLog.open(wal_dir)
    if recovered.snapshot is not None and applier.applied_index < recovered.snapshot.index:
        assert latest is not None
        applier.import_snapshot(latest[1])
    return wal, recovered


def _save_copy(directory: Path, meta: SnapshotMeta, copy: Path) -> None:
    """Make the file at `copy` the durable snapshot at `meta`; `copy` is moved there."""
    save_snapshot(directory, meta, copy)


def _save_received(directory: Path, meta: SnapshotMeta, copy: Path, digest: bytes) -> bool:
    """Make the received `copy` the durable snapshot at `meta` if it hashes to
    `digest`; False, and nothing saved, when it does not."""
    if file_digest(copy) != digest:
        return False
    _save_copy(directory, meta, copy)
    return True


@dataclass
class _Transfer:
    """A snapshot being received: its temp file and how far it got."""

    sender: str
    connection: int | None  # the transport's connection it arrives on, if it has ids
    path: Path
    handle: BinaryIO
    received: int = 0  # bytes written so far: the offset the next piece must have
    last_piece: float = 0.0  # trio.current_time() when the newest piece arrived
    busy: bool = False  # a piece is being written or the file saved, in a thread

    def discard(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


def _parse_piece(frame: dict[str, Any]) -> tuple[str, bytes, int, bool]:
    """(transfer id, bytes, offset, last?) of a `snap` frame, or MalformedMessage."""
    transfer, piece = frame.get("x"), frame.get("d")
    offset, done = frame.get("o"), frame.get("done")
    if not isinstance(transfer, str) or not 0 < len(transfer) <= _TRANSFER_ID_MAX:
        raise MalformedMessage("snapshot piece without a usable transfer id")
    if not isinstance(piece, bytes) or type(offset) is not int or type(done) is not bool:
        raise MalformedMessage("snapshot piece without bytes, offset and end flag")
    return transfer, piece, offset, done


def _parse_digest(frame: dict[str, Any]) -> bytes:
    """The digest the last piece of a transfer vouches for the whole file with."""
    digest = frame.get("h")
    if not isinstance(digest, bytes) or len(digest) != _DIGEST_BYTES:
        raise MalformedMessage("last snapshot piece without the snapshot's BLAKE3 digest")
    return digest


class Snapshots:
    """This member's snapshot files and the transfers of them.

    `wal_lock` is the driver's: a compaction of the log waits its turn with
    the loop's saves. `compact_core(index)` asks the core, on its loop, to
    drop the log up to `index`, and returns the snapshot's metadata, or None
    when the core refused. It attaches itself to the transport's `on_closed`
    to let go of the transfers a closed connection brought.
    """

    def __init__(
        self,
        *,
        directory: Path,
        incoming: Path,
        applier: Applier,
        wal: WriteAheadLog,
        wal_lock: trio.Lock,
        threads: DiskThreads,
        transport: PeerTransport,
        compact_core: Callable[[int], Awaitable[SnapshotMeta | None]],
        index: int,
    ) -> None:
        self.directory = directory
        self.incoming = incoming
        self.applier = applier
        self.wal = wal
        self.wal_lock = wal_lock
        self.threads = threads
        self.transport = transport
        self.compact_core = compact_core
        self.index = index  # the newest snapshot the log is compacted to
        self._taking = False
        self.taken = 0  # snapshots taken here since start (not received), for the metrics
        self._files = trio.Lock()  # one snapshot file written at a time
        self._receiving: dict[tuple[str, str], _Transfer] = {}  # (sender, transfer id)
        self.transfer_idle_seconds = TRANSFER_IDLE_SECONDS
        self.transfers_per_sender = TRANSFERS_PER_SENDER
        transport.on_closed = self.connection_closed

    def start_if_due(self, nursery: trio.Nursery, applied: int, every: int) -> None:
        """Take a snapshot in the background once `every` entries were applied since the last."""
        if self._taking or applied - self.index < every:
            return
        self._taking = True
        nursery.start_soon(self._take, applied)

    async def _take(self, applied: int) -> None:
        """Copy the state, let the core drop the log it covers, make both durable.

        The copy runs beside the loop (a database of any size must not hold up
        heartbeats); the core is asked to compact from the loop, like every
        other call into it. Until the snapshot file is durable, a follower that
        needs it is simply asked again later.
        """
        copy = self.incoming / f"export-{os.urandom(6).hex()}"
        try:
            index = await self.threads.run_beside_loop(self.applier.export_snapshot, copy)
            meta = await self.compact_core(index)
            if meta is None:
                return
            # Writing the snapshot file leaves the log alone; only the short
            # compaction of the log itself waits its turn with the loop's saves.
            async with self._files:
                await self.threads.run_beside_loop(_save_copy, self.directory, meta, copy)
            async with self.wal_lock:
                await self.threads.run(self.wal.compact, meta)
            self.index = max(self.index, index)
            self.taken += 1
            log.info("snapshot at index %d; log compacted", index)
        except OSError as exc:
            log.error("snapshot at %d failed, will try again: %r", applied, exc)
        finally:
            copy.unlink(missing_ok=True)
            self._taking = False

    async def send(self, msg: Message) -> None:
        """Stream the newest snapshot file to `msg.to`, for the core's SNAPSHOT message."""
        latest = await self.threads.run_beside_loop(
            lambda: load_latest_snapshot(self.directory, verify=False)
        )
        if latest is None or msg.snapshot is None or latest[0].index < msg.snapshot.index:
            return  # the core asks again later
        meta, path = latest
        wire = Message(msg.type, msg.from_id, msg.to, term=msg.term, snapshot=meta).to_wire()
        transfer = os.urandom(8).hex()
        hasher = blake3()

        def read_piece(f: BinaryIO) -> bytes:
            piece = f.read(SNAPSHOT_PIECE)
            hasher.update(piece)
            return piece

        try:
            async with self.transport.stream_to(msg.to) as send:
                with open(path, "rb") as f:
                    offset = 0
                    while piece := await self.threads.run_beside_loop(read_piece, f):
                        await send({"t": "snap", "x": transfer, "d": piece, "o": offset,
                                    "done": False, "m": None})
                        offset += len(piece)
                    await send({"t": "snap", "x": transfer, "d": b"", "o": offset,
                                "done": True, "m": wire, "h": hasher.digest()})
            log.info("sent snapshot at %d to %s", meta.index, msg.to)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            log.warning("snapshot to %s failed: %r", msg.to, exc)

    async def receive_piece(self, sender: str, frame: dict[str, Any]) -> Message | None:
        """Take one piece of a snapshot from `sender`.

        Returns the snapshot message for the core once the last piece is in and
        the snapshot file is durable; None while pieces are still coming.
        Raises MalformedMessage for a piece that cannot be taken, which drops
        the connection it came on; the sender starts over later.
        """
        transfer_id, piece, offset, done = _parse_piece(frame)
        now = trio.current_time()
        self._drop_idle(now)
        key = (sender, transfer_id)
        transfer = self._receiving.get(key)
        if transfer is None:
            if offset != 0:
                raise MalformedMessage(f"piece at {offset} of a transfer not being received")
            transfer = self._begin(key, sender)
        if transfer.busy:  # its previous piece, sent on another connection, is being written
            raise MalformedMessage("pieces of one transfer on two connections at once")
        if offset != transfer.received:
            self._end(key)
            raise MalformedMessage(f"piece at {offset}, expected {transfer.received}")
        transfer.last_piece = now
        transfer.busy = True
        try:
            if not done:
                await self.threads.run_beside_loop(transfer.handle.write, piece)
                transfer.received += len(piece)
                transfer.busy = False
                return None
            transfer.handle.close()
            msg = Message.from_wire(frame.get("m"))
            if msg.snapshot is None or msg.from_id != sender:
                raise MalformedMessage("snapshot frame without metadata")
            digest = _parse_digest(frame)
            async with self._files:
                saved = await self.threads.run_beside_loop(
                    _save_received, self.directory, msg.snapshot, transfer.path, digest
                )
            if not saved:
                raise MalformedMessage(
                    f"snapshot at {msg.snapshot.index} from {sender} does not match its digest;"
                    " not installed"
                )
        except BaseException:
            self._end(key)
            raise
        self._end(key)
        return msg

    def connection_closed(self, sender: str, connection: int) -> None:
        """Let go of what `sender` had half sent on the connection that just closed."""
        for key, transfer in list(self._receiving.items()):
            came_on_it = transfer.sender == sender and transfer.connection == connection
            if came_on_it and not transfer.busy:
                self._end(key)
        self._drop_idle(trio.current_time())

    def _begin(self, key: tuple[str, str], sender: str) -> _Transfer:
        open_here = sum(1 for t in self._receiving.values() if t.sender == sender)
        if open_here >= self.transfers_per_sender:
            raise MalformedMessage(f"{sender} already has {open_here} snapshot transfers open")
        fd, name = tempfile.mkstemp(dir=self.incoming, prefix="recv-")
        transfer = _Transfer(sender, current_connection(), Path(name), os.fdopen(fd, "wb"))
        self._receiving[key] = transfer
        return transfer

    def _drop_idle(self, now: float) -> None:
        for key, transfer in list(self._receiving.items()):
            if not transfer.busy and now - transfer.last_piece > self.transfer_idle_seconds:
                log.warning("snapshot transfer from %s went quiet; dropped", transfer.sender)
                self._end(key)

    def _end(self, key: tuple[str, str]) -> None:
        transfer = self._receiving.pop(key, None)
        if transfer is not None:
            transfer.discard()

    async def install(self, meta: SnapshotMeta) -> None:
        """Replace the state by the received snapshot at `meta` and compact the log to it."""
        latest = await self.threads.run(load_latest_snapshot, self.directory)
        if latest is None or latest[0].index != meta.index:
            raise RuntimeError(f"snapshot {meta.index} to install is not on disk")
        data = latest[1]

        def install() -> None:
            self.applier.import_snapshot(data)
            self.wal.compact(meta)

        async with self.wal_lock:
            await self.threads.run(install)
        self.index = meta.index
        log.info("installed snapshot at index %d", meta.index)
