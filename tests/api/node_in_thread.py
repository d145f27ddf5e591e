"""A node that lives for a whole test module: its own trio run in a thread of its own.

pytest-trio gives each test its own trio run, so a node started by an async
fixture dies with the test. The authorization matrix has hundreds of cells
over the same repositories, and starting a node, logging accounts in and
pushing content for each cell would cost most of its time; here one node
serves every cell of a module, and the cells talk to it with a blocking
httpx client. Commands (accounts, grants, public patterns) go through the
node's own engine, in the node's trio run, with `propose`.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.lowlevel

from consensus.commands import Command
from node.app import RunningNode, serve
from node.config import Config

TMPFS = Path("/dev/shm")


class NodeInThread:
    def __init__(self, **settings: Any) -> None:
        parent = TMPFS if TMPFS.is_dir() else None
        self.folder = Path(tempfile.mkdtemp(prefix="flotilla-shared-", dir=parent))
        self.config = Config(
            data=self.folder / "node", listen="127.0.0.1:0", chunk_size=64 * 1024, tick_ms=2,
            **settings,
        )
        self.node: RunningNode | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shared-node", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                self.node = await nursery.start(serve, self.config)
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:  # handed to the test thread by start()
            self._failure = exc
            self._ready.set()

    def start(self) -> NodeInThread:
        self._thread.start()
        self._ready.wait(60)
        if self._failure is not None or self.node is None:
            raise RuntimeError("the shared node did not start") from self._failure
        return self

    @property
    def url(self) -> str:
        assert self.node is not None
        return self.node.url

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def propose(self, command: Command) -> Any:
        assert self.node is not None
        return trio.from_thread.run(self.node.services.engine.propose, command,
                                    trio_token=self._token)

    def call(self, fn: Callable[[], Any]) -> Any:
        """`fn()` run in the node's trio run (what reads its state must run there)."""
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def stop(self) -> None:
        if self.node is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self.node.cancel_scope.cancel, trio_token=self._token)
            self._thread.join(30)
        shutil.rmtree(self.folder, ignore_errors=True)
