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

An upload that ends without its recipe (cancelled, expired, failed) leaves
chunks on other holders. Chunks are shared between blobs, so dropping them
follows a protocol that never loses a chunk a recipe needs:

1. The abandoning node waits `abandoned_chunk_grace_seconds` (G), then asks
   every member of the upload's placement to drop the upload's chunks.
2. A holder reads the replicated state after a barrier and keeps any chunk a
   committed recipe uses; of the rest it keeps any chunk put or confirmed by
   any push within G (its own puts are older than G by step 1), and deletes
   the others, the time check and the unlink under one lock.
3. A push about to commit first asks every member which of its chunks they
   hold — which touches them — sends again any chunk that fell short of W,
   and then proposes its recipe at once.

A drop either comes after the confirm of step 3, and then the touch spares
the chunk until the recipe is in the state (which takes far less than G), or
before it, and then the confirm sees the chunk gone and sends it again. What
is left is a copy put by a request already in flight when the upload was
cancelled and landing after the drop: unused bytes, never a missing chunk.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from consensus.engine import Engine, MountBlob, PutBlob, Refusal, Refused
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
EXPIRE_EVERY = 60.0  # seconds between sweeps for idle sessions (at most)
PENDING_DROPS = 1024  # abandoned uploads waiting out the grace period; more are not cleaned


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
    # Abandoned uploads' chunks, (when to drop, members to ask, chunk ids), oldest first.
    _drops: tuple[trio.MemorySendChannel, trio.MemoryReceiveChannel] = field(
        default_factory=lambda: trio.open_memory_channel(PENDING_DROPS)
    )

    @property
    def node_id(self) -> str:
        return self.config.node_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold every upload's task and drop sessions left idle, for as long as the node runs."""
        sweep = min(EXPIRE_EVERY, self.config.upload_idle_seconds / 2)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._drop_abandoned_chunks)
            task_status.started()
            try:
                while True:
                    await trio.sleep(sweep)
                    self.expire()
            finally:
                self._nursery = None

    # -- sessions --------------------------------------------------------------

    async def open(self, repo: str) -> Upload:
        """A new upload into `repo`, placed over the membership as it is now."""
        if self._nursery is None:
            raise RuntimeError("the blob writer is not running")
        if self.spool.full(repo):
            self.expire()  # idle sessions give their slots back before a POST is refused
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
        """Forget the upload, cancel its copies and drop its spool (cancel, failure); the
        chunks it placed are dropped from their holders after the grace period."""
        self._close(upload, abandoned=True)

    def _close(self, upload: Upload, *, abandoned: bool) -> None:
        known = self._uploads.pop(upload.id, None) is not None
        if upload.copies is not None:
            upload.copies.cancel_scope.cancel()
        self.spool.close(upload.session)
        if abandoned and known and upload.pending:
            self._plan_drop(upload)

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
        recorded = False
        try:
            blob = await self.disk.run(upload.session.finish, digest, upload.stays_here)
            for cid, path in blob.chunks:
                self._offer(upload, cid, path)
            for settled in list(upload.pending.values()):
                await settled.wait()
            if upload.failure is not None:
                raise self._failed(upload)
            await self._confirm_holders(upload, blob.chunks)
            if upload.adopt:
                await self.disk.run(self.chunks.adopt, upload.adopt)
            short = [cid for cid, _ in blob.chunks if upload.holders.get(cid, 0) < upload.quorum]
            if short:
                raise TooFewHolders(
                    f"fewer than {upload.quorum} holders could store {len(short)} chunk(s)",
                    chunks=short[:5],
                )
            recorded = True  # from here on the recipe may be in the state: keep its chunks
        finally:
            self._close(upload, abandoned=not recorded)
        await self.engine.propose(
            PutBlob(
                repo=upload.session.repo,
                digest=str(digest),
                size=blob.size,
                chunk_size=blob.chunk_size,
                chunks=[cid for cid, _ in blob.chunks],
                now=int(time.time()),  # the link's grace against GC counts from here
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
            await self.engine.propose(MountBlob(repo=repo, digest=digest, now=int(time.time())))
        except Refused as exc:
            if exc.refusal is Refusal.QUOTA_EXCEEDED:
                raise  # uploading it instead would be refused the same way
            return False  # deleted meanwhile
        return True

    # -- abandoned chunks ----------------------------------------------------------

    def _plan_drop(self, upload: Upload) -> None:
        """Queue the drop of an abandoned upload's chunks, due once the grace period passed."""
        due = trio.current_time() + self.config.abandoned_chunk_grace_seconds
        members = [m.node_id for m in upload.members if m.node_id != self.node_id]
        try:
            self._drops[0].send_nowait((due, members, list(upload.pending)))
        except trio.WouldBlock:
            self.counters["abandoned_drops_skipped"] += 1
            log.warning("too many abandoned uploads waiting: %s's chunks stay", upload.id)

    async def _drop_abandoned_chunks(self) -> None:
        """Drop abandoned uploads' chunks from every member, each once its grace has passed."""
        async for due, members, cids in self._drops[1]:
            await trio.sleep_until(due)
            async with trio.open_nursery() as nursery:
                for node_id in members:
                    nursery.start_soon(self._drop_on, node_id, cids)

    async def _drop_on(self, node_id: str, cids: list[str]) -> None:
        try:
            async for answer in self.peers.chunk_list_answers(node_id, "drop", cids):
                dropped = answer.get("dropped") or ()
                self.counters["abandoned_chunks_dropped_on_peers"] += len(dropped)
        except PeerError as exc:
            # Unused bytes left on a peer cost room, never correctness.
            log.warning("could not drop abandoned chunks on %s: %s", node_id, exc)

    async def _confirm_holders(self, upload: Upload, chunks: list[tuple[str, Path]]) -> None:
        """Count the holders of every chunk again, touching each copy so no drop takes it
        before the recipe is recorded, and send again the chunks short of W (a drop
        came first); step 3 of the protocol in the module's docstring."""
        cids = [cid for cid, _ in chunks]
        held: dict[str, int] = dict.fromkeys(cids, 0)
        for cid, _ in upload.adopt:
            held[cid] = 1

        async def ask(node_id: str) -> None:
            try:
                async for answer in self.peers.chunk_list_answers(node_id, "confirm", cids):
                    for cid in answer.get("held") or ():
                        if cid in held:
                            held[cid] += 1
            except PeerError as exc:
                log.warning("could not confirm chunks on %s: %s", node_id, exc)

        async with trio.open_nursery() as nursery:
            for member in upload.members:
                if member.node_id != self.node_id and self.peers.is_up(member.node_id):
                    nursery.start_soon(ask, member.node_id)
        for cid, path in chunks:
            upload.holders[cid] = held[cid]
            if held[cid] < upload.quorum:
                self.counters["chunks_sent_again"] += 1
                upload.adopt = [(c, p) for c, p in upload.adopt if c != cid]
                try:
                    async with upload.limiter:
                        upload.holders[cid] = await self._place_chunk(upload, cid, path)
                except (OSError, PeerError) as exc:
                    log.warning("placing chunk %s again failed: %r", cid, exc)

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
        try:
            upload.copies.start_soon(self._copy, upload, cid, path, settled)
        except RuntimeError:
            # A copy failed and the copies' nursery is closing: the upload has failed,
            # which the commit learns once every copy has settled.
            settled.set()

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
        # Owners that are up first, then the rest of the ranking that is up (hinted
        # copies), and nodes seen down only last: a copy waits on none of them unless
        # nothing else is left to take it.
        chunk_owners = candidates[: upload.replication]
        up = [n for n in candidates if self.peers.is_up(n)]
        queue = (
            [n for n in up if n in chunk_owners]
            + [n for n in up if n not in chunk_owners]
            + [n for n in candidates if n not in up]
        )
        holders = 0
        while holders < upload.replication and queue:
            room = upload.replication - holders
            batch, queue = queue[:room], queue[room:]
            remote = [n for n in batch if n != me]
            results: dict[str, bool] = {}
            async with trio.open_nursery() as nursery:
                for node_id in remote:
                    nursery.start_soon(self._send_chunk, node_id, cid, path, results)
            if me in batch:
                upload.adopt.append((cid, path))
                results[me] = True
            holders += sum(results.values())
            if any(n not in chunk_owners and ok for n, ok in results.items()):
                self.counters["hinted_chunks"] += 1
        return holders

    async def _send_chunk(
        self, node_id: str, cid: str, path: Path, results: dict[str, bool]
    ) -> None:
        """Copy the chunk to one holder straight from its spool file (the data plane
        sends the file as it is; the holder checks it against the id)."""
        try:
            await self.peers.put_chunk_file(node_id, cid, path)
            results[node_id] = True
        except (OSError, PeerError) as exc:
            log.warning("could not store chunk %s on %s: %s", cid, node_id, exc)
            results[node_id] = False
