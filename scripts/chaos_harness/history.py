"""The history a chaos run records: every client operation, when it was sent,
when (and whether) it was answered, and what it saw.

The workload calls `History.invoke` just before sending a request and one of
`ok`, `fail` or `unknown` when the answer (or its absence) is known. The
checker reads `History.ops()`; a run's history is saved as JSON lines (one
`Op` per line) so a failing run can be checked again without running it.

Outcomes, as the checker reads them:
- "ok": the node acknowledged the operation; it took effect at one instant
  between `invoked` and `completed`, and a read's `value` is what it saw.
- "fail": the operation definitely did not happen (a 4xx refusal, or a 503
  the node guarantees it refused before doing anything). The checker drops it.
- "unknown": no usable answer (timeout, connection reset, 5xx). A write may
  have taken effect at any instant after `invoked`, or never; an unknown read
  tells nothing and is dropped. `completed` is None.

Kinds: "write" (a tag PUT; a tag DELETE is a write of None), "read" (a GET by
tag; value None means 404), and "blob_push" / "blob_pull" (key is the blob's
digest; a pull's value is the digest of the bytes received, None if absent),
recorded so the byte checks and reports read the same file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

KINDS = ("write", "read", "blob_push", "blob_pull")
OUTCOMES = ("ok", "fail", "unknown")

# The marker for "no value given" in `History.ok`, since None is a value (a
# delete, or a 404 read).
_UNSET: object = object()


@dataclass(frozen=True)
class Op:
    id: int
    process: int  # a client; one process's ops never overlap in time
    kind: str  # one of KINDS
    key: str  # "repo:tag" for tag ops, the digest for blob ops
    value: str | None  # write: digest written (None = delete); read: digest read (None = 404)
    invoked: float  # monotonic seconds when the request was sent
    completed: float | None  # when the answer arrived; None when the outcome is unknown
    outcome: str  # one of OUTCOMES
    node: str | None = None  # which node the client talked to (for reports)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Op:
        fields = json.loads(line)
        op = cls(**fields)
        _validate(op)
        return op


def _validate(op: Op) -> None:
    # A saved history may be edited by hand to make a test case; refuse a line
    # the checker would misread rather than give a verdict about nonsense.
    if op.kind not in KINDS:
        raise ValueError(f"op {op.id}: unknown kind {op.kind!r}")
    if op.outcome not in OUTCOMES:
        raise ValueError(f"op {op.id}: unknown outcome {op.outcome!r}")
    if op.outcome == "unknown" and op.completed is not None:
        raise ValueError(f"op {op.id}: an unknown outcome has no completion time")
    if op.outcome != "unknown" and op.completed is None:
        raise ValueError(f"op {op.id}: outcome {op.outcome} needs a completion time")
    if op.completed is not None and op.completed < op.invoked:
        raise ValueError(f"op {op.id}: completed before it was invoked")


class History:
    """A growing, thread-safe record of operations (the workload runs threads
    or trio tasks; a lock costs nothing next to an HTTP request)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: dict[int, Op] = {}  # by id, in invocation order
        self._next_id = 0
        self._pending: set[int] = set()

    def invoke(
        self, process: int, kind: str, key: str, value: str | None, node: str | None = None
    ) -> int:
        """Record that `process` is sending a request now; returns the op's id."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        with self._lock:
            op_id = self._next_id
            self._next_id += 1
            self._ops[op_id] = Op(
                op_id, process, kind, key, value, self._clock(), None, "unknown", node
            )
            self._pending.add(op_id)
            return op_id

    def ok(self, op_id: int, value: str | None | object = _UNSET, at: float | None = None) -> None:
        """The node acknowledged `op_id`. A read passes the value it read; a
        write's value stays the one it wrote unless given."""
        with self._lock:
            op = self._take_pending(op_id)
            new_value = op.value if value is _UNSET else value
            if new_value is not None and not isinstance(new_value, str):
                raise TypeError(f"op {op_id}: value must be a digest string or None")
            self._ops[op_id] = replace(op, value=new_value, completed=self._when(at), outcome="ok")

    def fail(self, op_id: int, at: float | None = None) -> None:
        """`op_id` definitely did not take effect."""
        with self._lock:
            op = self._take_pending(op_id)
            self._ops[op_id] = replace(op, completed=self._when(at), outcome="fail")

    def unknown(self, op_id: int) -> None:
        """No usable answer came for `op_id`: it may or may not have taken effect."""
        with self._lock:
            self._take_pending(op_id)

    def ops(self) -> list[Op]:
        """Every op so far, by id; ops still pending read as "unknown"."""
        with self._lock:
            return list(self._ops.values())

    def save(self, path: str | Path) -> None:
        save_ops(self.ops(), path)

    @classmethod
    def load(cls, path: str | Path) -> History:
        return cls.from_ops(load_ops(path))

    @classmethod
    def from_ops(cls, ops: Iterable[Op], clock: Callable[[], float] = time.monotonic) -> History:
        """A finished history (nothing pending) holding `ops`; new ops get fresh ids."""
        history = cls(clock)
        for op in ops:
            if op.id in history._ops:
                raise ValueError(f"op id {op.id} appears twice")
            history._ops[op.id] = op
            history._next_id = max(history._next_id, op.id + 1)
        return history

    def _take_pending(self, op_id: int) -> Op:
        if op_id not in self._pending:
            raise ValueError(f"op {op_id} is not pending")
        self._pending.discard(op_id)
        return self._ops[op_id]

    def _when(self, at: float | None) -> float:
        return self._clock() if at is None else at


def save_ops(ops: Iterable[Op], path: str | Path) -> None:
    """Write `ops` as JSON lines, one op per line."""
    with open(path, "w", encoding="utf-8") as out:
        for op in ops:
            out.write(op.to_json() + "\n")


def load_ops(path: str | Path) -> list[Op]:
    """Read ops written by `save_ops`; blank lines are skipped."""
    with open(path, encoding="utf-8") as source:
        return [Op.from_json(line) for line in source if line.strip()]
