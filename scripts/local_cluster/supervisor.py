"""Runs the nodes of a local cluster as child processes, under one trio nursery.

One task per node starts its process, copies its output and waits for it to
exit; one task answers the control socket; the main task waits for Ctrl-C or
SIGTERM. A node that dies is reported in one line and the others keep
running; what happens next is `lifecycle.after_exit`'s decision. Nodes run in
sessions of their own, so Ctrl-C in the terminal reaches the supervisor only
and it stops the nodes itself: SIGTERM, then SIGKILL after the grace period.
(No parent-death signal: trio starts processes from a worker thread, and the
kernel would send it when that thread retires, not when the supervisor dies.)
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from scripts.local_cluster.control import (
    BAD_REQUEST,
    FAILED,
    OK,
    Request,
    reply,
    serve_control,
    socket_path,
)
from scripts.local_cluster.layout import ClusterLayout, NodeLayout
from scripts.local_cluster.lifecycle import (
    NON_TERMINATING,
    AfterExit,
    NodeReport,
    State,
    after_exit,
    describe_exit,
    parse_signal,
    state_after_exit,
)
from scripts.local_cluster.output import NodeLog, announce, copy_output

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 10.0  # how long `start` waits for the process to exist
OUTPUT_DRAIN_SECONDS = 1.0  # after an exit; a grandchild holding the pipe must not hold us


@dataclass(frozen=True)
class Options:
    restart: bool = False
    restart_delay: float = 2.0
    stop_grace: float = 10.0


class SupervisedNode:
    """One node's process, restarted on request or (with --restart) after it dies."""

    def __init__(self, layout: NodeLayout, argv: list[str], options: Options) -> None:
        self.layout = layout
        self._argv = argv
        self._options = options
        self.state = State.NOT_STARTED
        self.process: trio.Process | None = None
        self.last_exit: str | None = None
        self.last_pid: int | None = None
        self.want_running = True
        self.shutting_down = False
        self._on_purpose = False  # the next exit was asked for: never restart it
        self._starts = 0
        self._exited = trio.Event()
        self._wake = trio.Event()

    @property
    def node_id(self) -> str:
        return self.layout.node_id

    def report(self) -> NodeReport:
        pid = self.process.pid if self.process else None
        return NodeReport(self.node_id, self.state, pid, self.layout.url, self.last_exit)

    def _poke(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._wake.wait()

    async def supervise(self) -> None:
        """The node's task: run it whenever it is wanted, until cancelled."""
        log = NodeLog(self.layout.log)
        try:
            while True:
                await self._wait_until(lambda: self.want_running)
                await self._run_once(log)
                if self.state is State.RESTARTING:
                    # A start or stop command ends the delay early.
                    with trio.move_on_after(self._options.restart_delay):
                        await self._wake.wait()
        finally:
            log.close()

    async def _run_once(self, log: NodeLog) -> None:
        self._on_purpose = False
        self._exited = trio.Event()
        try:
            process = await trio.lowlevel.open_process(
                self._argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:  # the other nodes keep running
            announce(f"{self.node_id} could not be started: {exc}")
            self.state, self.want_running, self.last_exit = State.DEAD, False, str(exc)
            self._poke()
            return
        self.process, self.state, self.last_pid = process, State.RUNNING, process.pid
        self._starts += 1
        self._poke()
        announce(f"{self.node_id} started: pid {process.pid}, {self.layout.url}")
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None
                nursery.start_soon(copy_output, self.node_id, process.stdout, log)
                await process.wait()
                nursery.cancel_scope.deadline = trio.current_time() + OUTPUT_DRAIN_SECONDS
        finally:
            if process.returncode is None:  # cancelled while it runs: it must not outlive us
                process.kill()
        assert process.returncode is not None  # wait() returned
        self._record_exit(process.returncode)

    def _record_exit(self, returncode: int) -> None:
        self.last_exit = describe_exit(returncode)
        on_purpose = self._on_purpose or self.shutting_down
        decision = after_exit(restart=self._options.restart, on_purpose=on_purpose,
                              shutting_down=self.shutting_down)
        self.process = None
        self.state = state_after_exit(decision, on_purpose)
        self.want_running = decision is AfterExit.RESTART
        if on_purpose:
            announce(f"{self.node_id} stopped as asked ({self.last_exit})")
        elif decision is AfterExit.RESTART:
            announce(f"{self.node_id} died ({self.last_exit}); restarting in "
                     f"{self._options.restart_delay:g} s")
        else:
            announce(f"{self.node_id} died ({self.last_exit}); bring it back with "
                     f"`scripts/cluster start {self.node_id}`")
        self._exited.set()
        self._poke()

    async def start(self) -> dict[str, Any]:
        if self.process is not None:
            return reply(OK, f"{self.node_id} is already running (pid {self.process.pid})")
        starts = self._starts
        self.want_running = True
        self._poke()
        with trio.move_on_after(START_SECONDS):
            await self._wait_until(lambda: self._starts > starts)
        if self._starts == starts:
            return reply(FAILED, f"{self.node_id} did not start within {START_SECONDS:g} s")
        return reply(OK, f"{self.node_id} started (pid {self.last_pid}) on {self.layout.url}")

    async def stop(self) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after the grace period; returns once it has exited."""
        self.want_running = False
        process = self.process
        if process is None:
            if self.state is State.RESTARTING:
                self.state = State.STOPPED
                self._poke()
                return reply(OK, f"{self.node_id} stopped (it was waiting to restart)")
            return reply(OK, f"{self.node_id} is not running")
        self._on_purpose = True
        exited = self._exited
        process.send_signal(signal.SIGTERM)
        if self.state is State.PAUSED:
            process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        with trio.move_on_after(self._options.stop_grace):
            await exited.wait()
        if not exited.is_set():
            process.kill()
            await exited.wait()
        return reply(OK, f"{self.node_id} stopped ({self.last_exit})")

    async def kill(self, signal_name: str | None) -> dict[str, Any]:
        try:
            sig = parse_signal(signal_name or "KILL")
        except ValueError as exc:
            return reply(BAD_REQUEST, str(exc))
        process = self.process
        if process is None and self.state is State.RESTARTING and sig not in NON_TERMINATING:
            return await self.stop()  # killing it between death and restart keeps it down
        if process is None:
            return reply(FAILED, f"{self.node_id} is not running")
        if sig not in NON_TERMINATING:
            self._on_purpose = True
            self.want_running = False
        exited = self._exited
        process.send_signal(sig)
        if sig in (signal.SIGSTOP, signal.SIGTSTP):
            self.state = State.PAUSED
        elif sig is signal.SIGCONT:
            self.state = State.RUNNING
        elif sig is signal.SIGKILL:
            await exited.wait()
            return reply(OK, f"{self.node_id} killed ({self.last_exit})")
        return reply(OK, f"sent {sig.name} to {self.node_id} (pid {process.pid})")

    async def restart(self) -> dict[str, Any]:
        await self.stop()
        return await self.start()


class Supervisor:
    """Every node of the cluster, and the answers to control requests."""

    def __init__(self, layout: ClusterLayout, options: Options) -> None:
        self.layout = layout
        self.nodes = {n.node_id: SupervisedNode(n, layout.serve_argv(n), options)
                      for n in layout.nodes}

    async def handle(self, request: Request) -> dict[str, Any]:
        if request.op == "status":
            return reply(OK, "", nodes=[n.report().to_json() for n in self.nodes.values()])
        node = self.nodes.get(request.node or "")
        if node is None:
            return reply(BAD_REQUEST, f"unknown node {request.node!r}: this cluster has "
                         f"{', '.join(self.nodes)}")
        if request.op == "kill":
            return await node.kill(request.signal)
        if request.op == "stop":
            return await node.stop()
        if request.op == "start":
            return await node.start()
        return await node.restart()

    async def stop_all(self) -> None:
        for node in self.nodes.values():
            node.shutting_down = True
        async with trio.open_nursery() as nursery:
            for node in self.nodes.values():
                nursery.start_soon(node.stop)

    def kill_all(self) -> None:
        for node in self.nodes.values():
            if node.process is not None:
                node.process.kill()

    async def run(self) -> None:
        """Until SIGINT or SIGTERM; then every node is stopped before this returns."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_control, socket_path(self.layout.data_root),
                                    self.handle)
                for node in self.nodes.values():
                    nursery.start_soon(node.supervise)
                async for signum in signals:
                    announce(f"{signal.Signals(signum).name}: stopping every node "
                             "(again to kill them at once)")
                    break
                async with trio.open_nursery() as stopping:
                    stopping.start_soon(self._kill_on_second_signal, signals)
                    await self.stop_all()
                    stopping.cancel_scope.cancel()
                nursery.cancel_scope.cancel()

    async def _kill_on_second_signal(self, signals: Any) -> None:
        async for _ in signals:
            announce("killing every node")
            self.kill_all()
            return
