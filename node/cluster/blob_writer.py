"""Pushing a blob, below HTTP: spool the bytes, copy the chunks to their holders, record it.

An upload spans several requests (POST, PATCHes, the closing PUT), so the
writer keeps one `Upload` per session: the membership its chunks are placed
over, which chunks were offered, how many holders each got, and the nursery
its copies run in. Each chunk is offered to its R owners as soon as it is
complete in the spool, so the copies travel while the rest of the body
arrives; an owner that is down or refuses is replaced by the next member in
rendezvous order (a hinted copy, which stays where it landed: nothing moves
it home yet). A chunk
this node owns is fsynced in the spool; one that only passes through is not.
`commit` checks the digest, waits until W holders of every chunk have it
durable, moves this node's share into its store, and only then proposes
`PutBlob`, so the closing PUT answers once the blob is safe and recorded.

The writer's `run` is one long-lived task of the node's root nursery; each
upload gets a task under it that owns the nursery of that upload's copies.
An unexpected error in a copy therefore stops that upload alone (logged, the
upload marked failed, its next request answered 503), never the node; and
closing, cancelling or expiring the session cancels its copies.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from consensus.engine import Engine, MountBlob, PutBlob, Refused
from node.cluster.errors import PeerError, TooFewHolders, UploadFailed
from node.cluster.peers import Peers
from node.cluster.placement import Placed, owners, preference
from node.cluster.replication import replication_factors
from node.config import Config
from node.storage.chunks import ChunkStore
from node.storage.digest import Digest
from node.storage.disk_threads import DiskThreads
from node.storage.spool import Spool, UploadSession

log = logging.getLogger(__name__)

WRITE_BATCH = 1 << 20  # bytes gathered before one trip to a worker thread
EXPIRE_EVERY = 60.0  # seconds between sweeps for idle sessions


class Upload:
    """One push in progress: its spool session and the placement of its chunks."""

    def __init__(
        self, session: UploadSession, node_id: str, members: list[Placed], config: Config
    ) -> None:
        self.session = session
        self.node_id = node_id
        self.members = members  # the membership as it was when the upload started
        self.replication, self.quorum = replication_factors(config, len(members))
        self.limiter = trio.CapacityLimiter(config.transfer_concurrency)
        self.offered = 0  # how many of the session's complete chunks, in order, were offered
        self.pending: dict[str, trio.Event] = {}  # chunk id → set once its copy is settled
        self.holders: dict[str, int] = {}  # chunk id → holders that stored it durably
        self.adopt: list[tuple[str, Path]] = []  # this node's share, moved in at commit
        self.copies: trio.Nursery | None = None  # open while the upload can copy
        self.failure: BaseException | None = None  # what stopped its copies, if anything

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def size(self) -> int:
        return self.session.size

    @property
    def lock(self) -> trio.Lock:
        """Held by the request working on the upload: one request at a time."""
        return self.session.lock

    def stays_here(self, cid: str) -> bool:
        """Whether placement gives this node a copy of the chunk (pure: called from threads)."""
        return any(m.node_id == self.node_id for m in owners(cid, self.members, self.replication))


@dataclass(kw_only=True)
class BlobWriter:
    """Every push this node receives, from the first byte to the recorded blob."""

    config: Config
    spool: Spool
    chunks: ChunkStore
    peers: Peers
    disk: DiskThreads
    engine: Engine
    counters: Counter[str]
    _uploads: dict[str, Upload] = field(default_factory=dict)  # by session id
    _nursery: trio.Nursery | None = None  # where upload tasks run, while `run` does

    @property
    def node_id(self) -> str:
        return self.config.node_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold every upload's task and drop sessions left idle, for as long as the node runs."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(EXPIRE_EVERY)
                    self.expire()
            finally:
                self._nursery = None

    # -- sessions --------------------------------------------------------------

    async def open(self, repo: str) -> Upload:
        """A new upload into `repo`, placed over the membership as it is now."""
        if self._nursery is None:
            raise RuntimeError("the blob writer is not running")
        upload = Upload(self.spool.open(repo), self.node_id, self.peers.placed(), self.config)
        self._uploads[upload.id] = upload
        try:
            await self._nursery.start(self._hold_copies, upload)
        except BaseException:
            self.close(upload)
            raise
        return upload

    def find(self, repo: str, upload_id: str) -> Upload:
        """The upload receiving under that id and repository; UploadUnknown otherwise."""
        return self._uploads[self.spool.get(repo, upload_id).id]

    def close(self, upload: Upload) -> None:
        """Forget the upload, cancel its copies and drop its spool (commit, cancel, failure)."""
        self._uploads.pop(upload.id, None)
        if upload.copies is not None:
            upload.copies.cancel_scope.cancel()
        self.spool.close(upload.session)

    def expire(self) -> None:
        """Close the sessions idle for longer than `upload_idle_seconds`, unless in use."""
        for session in self.spool.expired(self.config.upload_idle_seconds):
            upload = self._uploads.get(session.id)
            if upload is not None and not upload.lock.locked():
                self.close(upload)

    async def _hold_copies(
        self, upload: Upload, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The upload's own task: its copies run in this nursery, and its failures end here."""
        try:
            async with trio.open_nursery() as copies:
                upload.copies = copies
                task_status.started()
                await trio.sleep_forever()
        except Exception as exc:
            upload.failure = exc
            log.error("upload %s failed copying its chunks: %r", upload.id, exc, exc_info=exc)
        finally:
            upload.copies = None
            # Wakes a commit waiting on copies that will never settle now.
            for settled in upload.pending.values():
                settled.set()

    # -- the body --------------------------------------------------------------

    async def write(self, upload: Upload, body: AsyncIterable[bytes]) -> int:
        """Append `body` to the upload, offering chunks as they fill; returns the bytes taken.

        The pieces go to the worker thread as they came, not joined into one
        buffer: copying every byte twice more (and faulting in fresh pages for
        the copies) cost more than the extra calls.
        """
        self._offer_complete(upload)  # fails early when the upload already failed
        received = 0
        batch: list[bytes] = []
        batched = 0
        async for piece in body:
            batch.append(piece)
            batched += len(piece)
            received += len(piece)
            if batched >= WRITE_BATCH:
                await self.disk.run(upload.session.write_all, batch, upload.stays_here)
                batch, batched = [], 0
                self._offer_complete(upload)
        if batch:
            await self.disk.run(upload.session.write_all, batch, upload.stays_here)
        self._offer_complete(upload)
        return received

    async def commit(self, upload: Upload, digest: Digest) -> None:
        """Verify, make durable, then record the blob: the order that keeps every promise.

        DigestMismatch, TooFewHolders or UploadFailed leave nothing recorded;
        the session is closed whatever the outcome.
        """
        try:
            blob = await self.disk.run(upload.session.finish, digest, upload.stays_here)
            for cid, path in blob.chunks:
                self._offer(upload, cid, path)
            for settled in list(upload.pending.values()):
                await settled.wait()
            if upload.failure is not None:
                raise self._failed(upload)
            if upload.adopt:
                await self.disk.run(self.chunks.adopt, upload.adopt)
            short = [cid for cid, _ in blob.chunks if upload.holders.get(cid, 0) < upload.quorum]
            if short:
                raise TooFewHolders(
                    f"fewer than {upload.quorum} holders could store {len(short)} chunk(s)",
                    chunks=short[:5],
                )
        finally:
            self.close(upload)
        await self.engine.propose(
            PutBlob(
                repo=upload.session.repo,
                digest=str(digest),
                size=blob.size,
                chunk_size=blob.chunk_size,
                chunks=[cid for cid, _ in blob.chunks],
            )
        )

    async def mount(self, repo: str, digest: str, source: str | None) -> bool:
        """Link a blob `source` holds into `repo`; False when it cannot be mounted.

        Without a source (or with `repo` itself) this only says whether `repo`
        already serves the blob.
        """
        if source is None or source == repo:
            return self.engine.queries.repo_blob(repo, digest) is not None
        # It may have been pushed through another node: lookup confirms a miss.
        if await self.engine.lookup(lambda q: q.repo_blob(source, digest)) is None:
            return False
        try:
            await self.engine.propose(MountBlob(repo=repo, digest=digest))
        except Refused:
            return False  # deleted meanwhile
        return True

    # -- copies ----------------------------------------------------------------

    def _failed(self, upload: Upload) -> UploadFailed:
        self.close(upload)
        return UploadFailed(session=upload.id[:100])

    def _offer_complete(self, upload: Upload) -> None:
        """Start copying the chunks that filled up since the last offer; UploadFailed
        (and the session closed) once a copy of this upload failed unexpectedly."""
        if upload.failure is not None:
            raise self._failed(upload)
        closed = upload.session.closed_chunks
        for cid, path in closed[upload.offered :]:
            self._offer(upload, cid, path)
        upload.offered = len(closed)

    def _offer(self, upload: Upload, cid: str, path: Path) -> None:
        """Start copying one complete chunk (once; later offers of it are ignored)."""
        if cid in upload.pending or upload.copies is None:
            return
        settled = upload.pending[cid] = trio.Event()
        upload.copies.start_soon(self._copy, upload, cid, path, settled)

    async def _copy(self, upload: Upload, cid: str, path: Path, settled: trio.Event) -> None:
        # Only the failures a copy expects are handled here; anything else ends
        # the upload's nursery, which is the upload's boundary.
        try:
            async with upload.limiter:
                holders = await self._place_chunk(upload, cid, path)
        except (OSError, PeerError) as exc:
            log.warning("placing chunk %s failed: %r", cid, exc)
            holders = 0
        upload.holders[cid] = holders
        settled.set()

    async def _place_chunk(self, upload: Upload, cid: str, path: Path) -> int:
        """Store one chunk on R holders, walking its preference order past failures."""
        me = self.node_id
        candidates = [m.node_id for m in preference(cid, upload.members, upload.replication)]
        # Owners that are up first, then the rest of the ranking (hinted copies).
        chunk_owners = candidates[: upload.replication]
        queue = [n for n in chunk_owners if self.peers.is_up(n)] + [
            n for n in candidates if n not in chunk_owners or not self.peers.is_up(n)
        ]
        data: bytes | None = None
        holders = 0
        while holders < upload.replication and queue:
            room = upload.replication - holders
            batch, queue = queue[:room], queue[room:]
            remote = [n for n in batch if n != me]
            if remote and data is None:
                data = await self.disk.run(path.read_bytes)
            results: dict[str, bool] = {}
            async with trio.open_nursery() as nursery:
                for node_id in remote:
                    assert data is not None
                    nursery.start_soon(self._send_chunk, node_id, cid, data, results)
            if me in batch:
                upload.adopt.append((cid, path))
                results[me] = True
            holders += sum(results.values())
            if any(n not in chunk_owners and ok for n, ok in results.items()):
                self.counters["hinted_chunks"] += 1
        return holders

    async def _send_chunk(
        self, node_id: str, cid: str, data: bytes, results: dict[str, bool]
    ) -> None:
        try:
            await self.peers.put_chunk(node_id, cid, data)
            results[node_id] = True
        except PeerError as exc:
            log.warning("could not store chunk %s on %s: %s", cid, node_id, exc)
            results[node_id] = False
