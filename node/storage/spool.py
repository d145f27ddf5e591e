"""Uploads in progress: bytes spooled into chunk files while they are hashed.

An upload session receives the blob in any number of PATCH requests and a
final PUT. Each piece is cut at chunk boundaries and written to the current
chunk file while the whole-blob digest (sha256) and the chunk's BLAKE3 are
updated in the same pass. A full chunk that will stay on this node is handed
at once to the node's fsync threads, so the disk flushes it while the next
chunk streams in instead of stalling the upload (at most `FSYNCS_IN_FLIGHT`
per session); `finish` waits for every one of them, so the final PUT still
answers only after all chunks are durable. A chunk that only passes through
on its way to its holders is not flushed here: the caller says which chunks
stay, with a small pure callable on each write. The spool is never read back
to hash it (a client that closes with a sha512 digest is the one exception:
that hash is taken from the chunk files then).

Sessions live in memory on the node that received the POST; a restart
forgets them and the client starts its upload again, as the spec allows.
"""

from __future__ import annotations

import enum
import hashlib
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import trio

from node.storage.chunker import ChunkCutter
from node.storage.digest import Digest
from node.storage.disk_threads import DiskThreads
from node.storage.errors import DigestMismatch, TooManyUploads, UploadUnknown
from node.storage.layout import DataDir, FreeSpaceFloor

FSYNCS_IN_FLIGHT = 4  # full chunks of one session being flushed while it goes on

# Whether a finished chunk (by BLAKE3 id) stays on this node, so must be fsynced here.
StaysHere = Callable[[str], bool]


def _update_all(hasher: hashlib._Hash, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
    for data in pieces:
        hasher.update(data)


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UploadState(enum.Enum):
    RECEIVING = "receiving"  # PATCH and PUT may add bytes
    CLOSED = "closed"  # committed or cancelled: every further request is unknown


@dataclass
class SpooledBlob:
    """What a finished upload hands to the store: its digest, size and chunk files."""

    digest: Digest
    size: int
    chunk_size: int
    chunks: list[tuple[str, Path]]  # (BLAKE3 id, fsynced spool file), in blob order


@dataclass
class UploadSession:
    id: str
    repo: str
    folder: Path
    chunk_size: int
    created: float
    touched: float
    threads: DiskThreads
    floor: FreeSpaceFloor | None = None  # refuses a write that would leave too little disk
    state: UploadState = UploadState.RECEIVING
    lock: trio.Lock = field(default_factory=trio.Lock)  # one request at a time
    size: int = 0
    _sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    _cutter: ChunkCutter | None = None
    _chunk_hash: blake3.blake3 | None = None
    _chunk_fd: int | None = None
    _closed_chunks: list[tuple[str, Path]] = field(default_factory=list)
    _fsyncs: list[Future[None]] = field(default_factory=list)  # oldest first

    def __post_init__(self) -> None:
        self._cutter = ChunkCutter(self.chunk_size)

    # The methods below block (disk writes, fsync, hashing): run them in a thread.

    def write_all(
        self, pieces: Sequence[bytes | bytearray | memoryview], stays_here: StaysHere
    ) -> None:
        """Append several pieces, feeding the whole-blob digest from a second thread meanwhile.

        sha256 cannot be split, and it costs about a third of what writing and
        BLAKE3-hashing the same bytes does; beside them rather than before them
        it leaves the upload's critical path.
        """
        if self.state is not UploadState.RECEIVING:
            raise UploadUnknown()
        if self.floor is not None:
            # Before any byte of the batch: a refused batch leaves the session as it was.
            self.floor.check(sum(len(p) for p in pieces))
        digesting = self.threads.digest.submit(_update_all, self._sha256, pieces)
        try:
            for data in pieces:
                self._store(data, stays_here)
        finally:
            digesting.result()

    def _store(self, data: bytes | bytearray | memoryview, stays_here: StaysHere) -> None:
        """Cut `data` into the chunk files, feeding each chunk's BLAKE3."""
        assert self._cutter is not None
        for piece in self._cutter.cut(data):
            if self._chunk_fd is None:
                path = self._chunk_file(len(self._closed_chunks))
                self._chunk_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self._chunk_hash = blake3.blake3()
            view = piece.data
            while view:
                written = os.write(self._chunk_fd, view)
                view = view[written:]
            assert self._chunk_hash is not None
            self._chunk_hash.update(piece.data)
            if piece.closes:
                self._close_chunk(stays_here)
        self.size += len(data)

    def finish(self, expected: Digest, stays_here: StaysHere) -> SpooledBlob:
        """Close the last chunk and check the digest; DigestMismatch leaves nothing stored."""
        if self.state is not UploadState.RECEIVING:
            raise UploadUnknown()
        if self._chunk_fd is not None:
            self._close_chunk(stays_here)
        self._wait_for_fsyncs(0)
        if expected.algorithm == "sha256":
            actual = self._sha256.hexdigest()
        else:
            actual = self._rehash(expected.algorithm)
        if actual != expected.hex:
            raise DigestMismatch(
                "provided digest did not match uploaded content",
                expected=str(expected), size=self.size,
            )
        return SpooledBlob(expected, self.size, self.chunk_size, list(self._closed_chunks))

    @property
    def closed_chunks(self) -> list[tuple[str, Path]]:
        """The chunks complete so far: (BLAKE3 id, spool file), in blob order."""
        return list(self._closed_chunks)

    def discard(self) -> None:
        self.state = UploadState.CLOSED
        if self._chunk_fd is not None:
            os.close(self._chunk_fd)
            self._chunk_fd = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def _chunk_file(self, index: int) -> Path:
        return DataDir.upload_chunk_file(self.folder, index)

    def _close_chunk(self, stays_here: StaysHere) -> None:
        assert self._chunk_fd is not None and self._chunk_hash is not None
        cid = self._chunk_hash.hexdigest()
        if stays_here(cid):
            self._wait_for_fsyncs(FSYNCS_IN_FLIGHT - 1)
            self._fsyncs.append(self.threads.fsync.submit(_fsync_and_close, self._chunk_fd))
        else:
            os.close(self._chunk_fd)
        self._chunk_fd = None
        index = len(self._closed_chunks)
        self._closed_chunks.append((cid, self._chunk_file(index)))
        self._chunk_hash = None

    def _wait_for_fsyncs(self, allowed: int) -> None:
        """Block until at most `allowed` chunk flushes are pending; a failed one raises."""
        while len(self._fsyncs) > allowed:
            self._fsyncs.pop(0).result()

    def _rehash(self, algorithm: str) -> str:
        hasher = hashlib.new(algorithm)
        for _, path in self._closed_chunks:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    hasher.update(block)
        return hasher.hexdigest()


class Spool:
    """The upload sessions of this node, by id, as many as the caps allow.

    Each session holds a folder, an open file and memory until it is
    committed, cancelled or expires, so their number is capped on the node
    and per repository (one busy repository cannot take every slot).
    """

    def __init__(
        self, data: DataDir, *, node_id: str, chunk_size: int, threads: DiskThreads,
        max_sessions: int = 1000, max_per_repo: int = 100, min_free_bytes: int = 0,
    ) -> None:
        self.data = data
        self.node_id = node_id
        self.chunk_size = chunk_size
        self.threads = threads
        self.max_sessions = max_sessions
        self.max_per_repo = max_per_repo
        self.floor = FreeSpaceFloor(data.root, min_free_bytes)
        self._sessions: dict[str, UploadSession] = {}
        self._per_repo: Counter[str] = Counter()

    def full(self, repo: str) -> bool:
        """Whether a new session for `repo` would go over a cap."""
        return len(self._sessions) >= self.max_sessions or self._per_repo[repo] >= self.max_per_repo

    def open(self, repo: str) -> UploadSession:
        """A new session; TooManyUploads (and no folder made) when a cap is reached."""
        if self.full(repo):
            per_repo = self._per_repo[repo] >= self.max_per_repo
            raise TooManyUploads(
                "too many uploads in progress"
                + (" for this repository" if per_repo else "") + "; retry later"
            )
        # The id names this node (so peers can forward to it) and is unguessable.
        session_id = f"{self.node_id}.{secrets.token_urlsafe(24)}"
        folder = self.data.upload_folder(session_id)
        folder.mkdir()
        now = time.monotonic()
        session = UploadSession(
            session_id, repo, folder, self.chunk_size, now, now, self.threads, self.floor
        )
        self._sessions[session_id] = session
        self._per_repo[repo] += 1
        return session

    def get(self, repo: str, session_id: str) -> UploadSession:
        session = self._sessions.get(session_id)
        if session is None or session.repo != repo or session.state is not UploadState.RECEIVING:
            raise UploadUnknown(session=session_id[:100])
        session.touched = time.monotonic()
        return session

    def close(self, session: UploadSession) -> None:
        """Forget a session and its spool (after commit, cancel or a failed digest)."""
        if self._sessions.pop(session.id, None) is not None:
            self._per_repo[session.repo] -= 1
            if not self._per_repo[session.repo]:
                del self._per_repo[session.repo]
        session.discard()

    def expired(self, idle_seconds: float) -> list[UploadSession]:
        cutoff = time.monotonic() - idle_seconds
        return [s for s in self._sessions.values() if s.touched < cutoff]

    def __len__(self) -> int:
        return len(self._sessions)
