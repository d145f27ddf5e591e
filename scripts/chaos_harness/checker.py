"""Verdicts on a chaos run's history: is every tag a linearizable register, was
an acknowledged tag write lost, did every acknowledged blob pull back intact.

Outcomes (see `history`): an "ok" op took effect at one instant between its
invocation and its completion; a "fail" op never happened and is dropped; an
"unknown" write may take effect at any instant after its invocation, or never;
an "unknown" read tells nothing and is dropped. Real-time order: `a` precedes
`b` when `a.completed < b.invoked`; equal times count as concurrent.

The linearizability check (`check_register`) is the Wing & Gong search with
Lowe's memoization, as in Knossos and Porcupine, per key (P-compositionality:
a history is linearizable iff each key's is). Ops are sorted by invocation; at
each step the candidates are the unlinearized ops invoked no later than the
earliest completion among unlinearized ops (anything invoked later must come
after that op). The search linearizes a candidate if the register allows it
(a write sets the value, a read must see the current value), depth first, and
backtracks on a dead end. A state is (ops linearized, register value); states
already explored are remembered and never explored again. The linearized set
is kept as "every op before index p, plus a bitmask of ops after p": at a
point where no op is in flight every state collapses to (p, no mask, value),
so the history falls into independent segments by itself, and the states that
carry over a cut are exactly the register values possible there.

Unknown writes are what make a naive search blow up (each is a candidate
forever after its invocation), so the history is reduced first, without
changing its verdict:
- an unknown write whose value no ok read returns is dropped: in any
  linearization it can be moved to just before the next write, or past the
  end, where it changes nothing;
- an unknown write that is the only write of a value some ok read returns is
  mandatory and must take effect before the earliest completion of those reads;
  it becomes an ordinary op with that completion time;
- any other unknown write (a value also written by another op, or a delete
  when some read returns 404) is optional. It may as well take effect just
  before a read that returns its value, so the search uses it only then, when
  the register holds another value, and takes the earliest-invoked one: the
  choice never branches. Which optional writes are used is part of the state.
A budget caps the states explored; past it the verdict is "unknown (budget)".

For a violation, the explanation finds the first moment T (an acknowledgement)
at which the history cut at T is already not linearizable: ops invoked by T,
ops not answered by T counted as unknown. Cutting is monotone (a linearizable
history stays linearizable when cut), so a binary search finds T, and the op
acknowledged at T is the one the register cannot account for. The report
prints it with the ops from the last quiet moment before it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scripts.chaos_harness.history import Op

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
UNKNOWN_BUDGET = "unknown (budget)"

DEFAULT_BUDGET = 500_000  # states per key; ~100 bytes each in the memo
WINDOW_MAX_OPS = 40  # ops printed around a violation
SOURCES_PER_VALUE = 3  # latest earlier writes printed per value read in the window


@dataclass(frozen=True)
class Verdict:
    key: str
    result: str  # LINEARIZABLE, NOT_LINEARIZABLE or UNKNOWN_BUDGET
    ops_checked: int  # ok writes and reads, and unknown writes kept by the reduction
    states: int  # states explored by the search
    explanation: str | None = None  # for a violation: the op that breaks it and its window

    @property
    def linearizable(self) -> bool | None:
        return {LINEARIZABLE: True, NOT_LINEARIZABLE: False}.get(self.result)


@dataclass(frozen=True)
class Report:
    verdicts: dict[str, Verdict]

    @property
    def linearizable(self) -> str:
        """The overall verdict: "yes"; "no" when some key is not linearizable;
        "unknown" when none is proven not, but some ran out of budget."""
        results = {verdict.result for verdict in self.verdicts.values()}
        if NOT_LINEARIZABLE in results:
            return "no"
        return "unknown" if UNKNOWN_BUDGET in results else "yes"

    def violations(self) -> list[Verdict]:
        return [v for v in self.verdicts.values() if v.result == NOT_LINEARIZABLE]

    def render(self) -> str:
        counts = defaultdict(int)
        for verdict in self.verdicts.values():
            counts[verdict.result] += 1
        summary = ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))
        lines = [f"linearizable: {self.linearizable} ({len(self.verdicts)} keys: {summary or '-'})"]
        for verdict in self.verdicts.values():
            if verdict.result != LINEARIZABLE:
                lines.append(f"key {verdict.key}: {verdict.result} ({verdict.states} states)")
                if verdict.explanation:
                    lines.append(verdict.explanation)
        return "\n".join(lines)


# --- the register search ---------------------------------------------------


@dataclass
class _Problem:
    """A key's history after the reduction, in the arrays the search reads."""

    ops: list[Op]  # mandatory ops, by invocation
    invoked: list[float]
    completed: list[float]  # a converted unknown write: the bound derived from its reads
    is_write: list[bool]
    values: list[str | None]
    optional: dict[str | None, list[tuple[float, int]]]  # value -> (invoked, bit), by invocation
    optional_ops: list[Op]


def _reduce(ops: list[Op]) -> _Problem:
    writes = [op for op in ops if op.kind == "write" and op.outcome != "fail"]
    reads = [op for op in ops if op.kind == "read" and op.outcome == "ok"]
    writers: dict[str | None, list[Op]] = defaultdict(list)
    for write in writes:
        writers[write.value].append(write)
    earliest_read_end: dict[str | None, float] = {}
    for read in reads:
        assert read.completed is not None
        end = earliest_read_end.get(read.value, math.inf)
        earliest_read_end[read.value] = min(end, read.completed)

    mandatory: list[tuple[Op, float]] = []
    for read in reads:
        assert read.completed is not None
        mandatory.append((read, read.completed))
    optional_ops: list[Op] = []
    for write in writes:
        if write.outcome == "ok":
            assert write.completed is not None
            mandatory.append((write, write.completed))
        elif write.value not in earliest_read_end:
            continue  # never observed: it cannot matter
        elif write.value is not None and len(writers[write.value]) == 1:
            mandatory.append((write, earliest_read_end[write.value]))
        else:
            optional_ops.append(write)
    mandatory.sort(key=lambda pair: (pair[0].invoked, pair[0].id))
    optional_ops.sort(key=lambda op: (op.invoked, op.id))
    optional: dict[str | None, list[tuple[float, int]]] = defaultdict(list)
    for bit, write in enumerate(optional_ops):
        optional[write.value].append((write.invoked, bit))
    return _Problem(
        ops=[op for op, _ in mandatory],
        invoked=[op.invoked for op, _ in mandatory],
        completed=[end for _, end in mandatory],
        is_write=[op.kind == "write" for op, _ in mandatory],
        values=[op.value for op, _ in mandatory],
        optional=dict(optional),
        optional_ops=optional_ops,
    )


# A search state: (p, mask, value, used): every op before index p is linearized,
# bit j of mask says op p+j is, value is the register's, used the optional
# writes spent.
_State = tuple[int, int, "str | None", int]


def _search(problem: _Problem, budget: int) -> tuple[str, int]:
    """Depth-first search for a linearization; returns (result, states explored)."""
    n = len(problem.ops)
    invoked, completed = problem.invoked, problem.completed
    is_write, values, optional = problem.is_write, problem.values, problem.optional

    def successors(state: _State) -> list[_State]:
        p, mask, value, used = state
        # The earliest completion among unlinearized ops bounds the candidates;
        # ops are sorted by invocation, so the scan stops once past it.
        frontier = math.inf
        scanned: list[int] = []
        i = p
        while i < n and invoked[i] <= frontier:
            if not (mask >> (i - p)) & 1:
                frontier = min(frontier, completed[i])
                scanned.append(i)
            i += 1
        found: list[_State] = []
        for i in scanned:
            if invoked[i] > frontier:
                continue
            new_value, new_used = value, used
            if is_write[i]:
                new_value = values[i]
            elif values[i] != value:
                bit = _first_unused(optional.get(values[i], ()), used, frontier)
                if bit is None:
                    continue
                new_value, new_used = values[i], used | (1 << bit)
            new_p, new_mask = p, mask | (1 << (i - p))
            while new_mask & 1:
                new_mask >>= 1
                new_p += 1
            found.append((new_p, new_mask, new_value, new_used))
        return found

    start: _State = (0, 0, None, 0)
    if n == 0:
        return LINEARIZABLE, 1
    seen: set[_State] = {start}
    stack = [iter(successors(start))]
    while stack:
        state = next(stack[-1], None)
        if state is None:
            stack.pop()
            continue
        if state in seen:
            continue
        if state[0] == n:
            return LINEARIZABLE, len(seen) + 1
        seen.add(state)
        if len(seen) > budget:
            return UNKNOWN_BUDGET, len(seen)
        stack.append(iter(successors(state)))
    return NOT_LINEARIZABLE, len(seen)


def _first_unused(writes: Iterable[tuple[float, int]], used: int, frontier: float) -> int | None:
    # Optional writes of one value are interchangeable once invoked, so the
    # earliest-invoked unused one is as good as any: no branching.
    for invoked, bit in writes:
        if invoked > frontier:
            return None
        if not (used >> bit) & 1:
            return bit
    return None


# --- verdicts ----------------------------------------------------------------


def check_register(
    ops: Iterable[Op], budget: int = DEFAULT_BUDGET, explain: bool = True
) -> Verdict:
    """Is this one key's history linearizable as a register that starts absent?

    Only "write" and "read" ops are looked at; ops of other kinds are ignored.
    """
    tag_ops = [op for op in ops if op.kind in ("write", "read")]
    keys = {op.key for op in tag_ops}
    if len(keys) > 1:
        raise ValueError(f"check_register takes one key's ops, got {sorted(keys)}")
    key = keys.pop() if keys else ""
    problem = _reduce(tag_ops)
    result, states = _search(problem, budget)
    explanation = None
    if result == NOT_LINEARIZABLE and explain:
        # A cut explores about what the whole history did; the cap keeps the
        # dozen searches of the explanation from each spending the full budget.
        explanation = _explain(key, tag_ops, min(budget, max(10_000, 2 * states)))
    return Verdict(key, result, len(problem.ops) + len(problem.optional_ops), states, explanation)


def check_history(ops: Iterable[Op], budget: int = DEFAULT_BUDGET) -> Report:
    """Per-key linearizability of every tag in the history (`budget` is per key)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind in ("write", "read"):
            by_key[op.key].append(op)
    return Report({key: check_register(by_key[key], budget) for key in sorted(by_key)})


def _cut(ops: list[Op], at: float) -> list[Op]:
    """The history as it stood at time `at`: ops answered later become unknown."""
    cut: list[Op] = []
    for op in ops:
        if op.invoked > at:
            continue
        if op.completed is not None and op.completed > at:
            op = Op(
                op.id, op.process, op.kind, op.key, op.value, op.invoked, None, "unknown", op.node
            )
        cut.append(op)
    return cut


def _explain(key: str, ops: list[Op], budget: int) -> str:
    ends = sorted({op.completed for op in ops if op.outcome == "ok" and op.completed is not None})
    if not ends:
        return f"  key {key}: not linearizable"
    # Smallest index whose cut is proven not linearizable; a cut that ran out of
    # budget counts as not proven, so the claim printed is always a proven one.
    low, high = 0, len(ends) - 1
    while low < high:
        middle = (low + high) // 2
        result, _ = _search(_reduce(_cut(ops, ends[middle])), budget)
        if result == NOT_LINEARIZABLE:
            high = middle
        else:
            low = middle + 1
    at = ends[high]
    culprits = [op for op in ops if op.outcome == "ok" and op.completed == at]
    cut = _cut(ops, at)
    problem = _reduce(cut)
    # Start from the last write surely applied before the culprit began (what
    # the register should hold then), or from the culprit itself.
    begun = min(op.invoked for op in culprits)
    last_write = max(
        (
            invoked
            for invoked, completed, is_write in zip(
                problem.invoked, problem.completed, problem.is_write, strict=True
            )
            if is_write and completed < begun
        ),
        default=begun,
    )
    quiet = _last_quiet_moment(problem, last_write)
    window = [
        op
        for op in problem.ops
        if op.invoked >= quiet or op.completed is None or op.completed >= quiet
    ]
    window += [op for op in problem.optional_ops if op not in window]
    shown_ids = {op.id for op in window}
    # The writes of the values the window's reads saw, even from before it.
    read_values = {op.value for op in window if op.kind == "read"}
    sources_by_value: dict[str | None, list[Op]] = defaultdict(list)
    for op in sorted(problem.ops + problem.optional_ops, key=lambda op: (op.invoked, op.id)):
        if op.kind == "write" and op.value in read_values and op.id not in shown_ids:
            sources_by_value[op.value].append(op)
    sources = sorted(
        (op for writes in sources_by_value.values() for op in writes[-SOURCES_PER_VALUE:]),
        key=lambda op: (op.invoked, op.id),
    )
    window = sorted(window, key=lambda op: (op.invoked, op.id))
    skipped = max(0, len(window) - WINDOW_MAX_OPS)
    origin = min(op.invoked for op in ops)
    lines = [
        f"  key {key}: the history up to {at - origin:.3f}s is not linearizable; the last"
        " acknowledgement in it cannot be placed:",
        *(f"    !! {_describe(op, origin)}" for op in culprits),
        f"  ops from the last quiet moment ({quiet - origin:.3f}s) on (answered later = unknown):",
    ]
    if skipped:
        lines.append(f"    ... {skipped} earlier ops not shown")
    lines += [f"    {_describe(op, origin)}" for op in window[skipped:]]
    if sources:
        lines.append("  earlier writes of the values read there:")
        lines += [f"    {_describe(op, origin)}" for op in sources]
    return "\n".join(lines)


def _last_quiet_moment(problem: _Problem, before: float) -> float:
    """The latest time <= `before` at which no mandatory op was in flight
    (every op invoked earlier had completed), or the first invocation."""
    quiet = problem.invoked[0] if problem.invoked else before
    latest_end = -math.inf
    for invoked, completed in zip(problem.invoked, problem.completed, strict=True):
        if invoked > before:
            break
        if latest_end < invoked:
            quiet = invoked  # everything before has completed
        latest_end = max(latest_end, completed)
    return quiet


def _describe(op: Op, origin: float) -> str:
    end = "?" if op.completed is None else f"{op.completed - origin:.3f}"
    value = "absent" if op.value is None else op.value
    node = f" via {op.node}" if op.node else ""
    return (
        f"#{op.id} process {op.process} {op.kind} {value}"
        f" {op.invoked - origin:.3f}->{end} {op.outcome}{node}"
    )


# --- lost writes and blobs ----------------------------------------------------


@dataclass(frozen=True)
class LostWrite:
    key: str
    final_value: str | None  # what the final read returned (None = 404)
    allowed: frozenset[str | None]  # the values it could have returned
    lost: tuple[Op, ...]  # the acknowledged writes that should have been visible


@dataclass(frozen=True)
class LostWritesReport:
    keys_checked: int
    acknowledged_writes: int
    lost: list[LostWrite] = field(default_factory=list)
    unread_keys: list[str] = field(default_factory=list)  # written, but no final read given

    @property
    def lost_keys(self) -> int:
        return len(self.lost)

    @property
    def lost_writes(self) -> int:
        return sum(len(entry.lost) for entry in self.lost)

    def render(self) -> str:
        lines = [
            f"tag writes: {self.acknowledged_writes} acknowledged, {self.lost_writes} lost"
            f" on {self.lost_keys} of {self.keys_checked} keys read at the end"
            + (f", {len(self.unread_keys)} written keys not read" if self.unread_keys else "")
        ]
        for entry in self.lost:
            final = "absent" if entry.final_value is None else entry.final_value
            expected = ", ".join(sorted("absent" if v is None else v for v in entry.allowed))
            lines.append(f"  key {entry.key}: final read {final}, expected one of {expected}")
        return "\n".join(lines)


def final_reads_after(ops: Iterable[Op], since: float) -> dict[str, str | None]:
    """Each key's value as its last acknowledged read invoked at or after
    `since` (the start of the final verification) saw it."""
    latest: dict[str, Op] = {}
    for op in ops:
        if op.kind != "read" or op.outcome != "ok" or op.invoked < since:
            continue
        if op.key not in latest or op.invoked > latest[op.key].invoked:
            latest[op.key] = op
    return {key: op.value for key, op in latest.items()}


def check_lost_writes(ops: Iterable[Op], final_reads: Mapping[str, str | None]) -> LostWritesReport:
    """Keys whose final read (made after healing, once every write had been
    answered or given up on) lost an acknowledged write.

    A write is superseded when some acknowledged write of the same key was
    invoked after it completed: that one surely took effect later. The final
    read may return the value of any write that is not superseded (every
    acknowledged write not followed by a later-invoked acknowledged write, and
    every unknown write, which may have landed at any time), or absent when no
    write was acknowledged. A key counts as lost when its final read returned
    anything else; its lost writes are its acknowledged writes not superseded.
    This is sound (every key counted is a real loss) and catches a tag that
    went back to an older digest or vanished; subtler orders are left to the
    linearizability check, which includes the final reads.
    """
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == "write" and op.outcome != "fail":
            writes[op.key].append(op)
    acknowledged = sum(1 for ws in writes.values() for w in ws if w.outcome == "ok")
    lost: list[LostWrite] = []
    for key in sorted(final_reads):
        key_writes = writes.get(key, [])
        acked = [w for w in key_writes if w.outcome == "ok"]
        latest_ack_start = max((w.invoked for w in acked), default=-math.inf)
        current = [w for w in key_writes if w.completed is None or w.completed >= latest_ack_start]
        # `current`: no acknowledged write was invoked after it completed,
        # since the latest-invoked acknowledged write was not.
        allowed: set[str | None] = {w.value for w in current}
        if not acked:
            allowed.add(None)
        if final_reads[key] not in allowed:
            lost_acks = tuple(w for w in current if w.outcome == "ok")
            lost.append(LostWrite(key, final_reads[key], frozenset(allowed), lost_acks))
    unread = sorted(key for key in writes if key not in final_reads)
    return LostWritesReport(len(final_reads), acknowledged, lost, unread)


@dataclass(frozen=True)
class BlobReport:
    acknowledged: int  # distinct digests with an acknowledged push
    verified: int  # of those, pulled back byte-identical after the push completed
    lost: int  # acknowledged, never pulled back intact
    wrong_bytes: int  # pulls (any time) that returned bytes of another digest
    lost_digests: list[str] = field(default_factory=list)
    wrong_pulls: list[Op] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"blobs: {self.acknowledged} acknowledged, {self.verified} verified,"
            f" {self.lost} lost, {self.wrong_bytes} pulls with wrong bytes"
        ]
        lines += [f"  lost {digest}" for digest in self.lost_digests]
        lines += [
            f"  #{op.id} pull of {op.key} via {op.node} returned {op.value}"
            for op in self.wrong_pulls
        ]
        return "\n".join(lines)


def check_blobs(ops: Iterable[Op], verify_from: float | None = None) -> BlobReport:
    """Every acknowledged blob push must pull back intact, and no pull may ever
    return wrong bytes. A pull verifies a push when it succeeded, returned
    bytes of the pushed digest, and was invoked after the push completed (and
    at or after `verify_from`, the start of the final verification, if given).
    """
    pushed: dict[str, float] = {}  # digest -> earliest acknowledged push's completion
    pulls: list[Op] = []
    for op in ops:
        if op.kind == "blob_push" and op.outcome == "ok" and op.completed is not None:
            pushed[op.key] = min(pushed.get(op.key, math.inf), op.completed)
        elif op.kind == "blob_pull" and op.outcome == "ok":
            pulls.append(op)
    wrong = [op for op in pulls if op.value is not None and op.value != op.key]
    verified: set[str] = set()
    for op in pulls:
        if op.value != op.key or op.key not in pushed or op.invoked <= pushed[op.key]:
            continue
        if verify_from is None or op.invoked >= verify_from:
            verified.add(op.key)
    lost = sorted(set(pushed) - verified)
    return BlobReport(len(pushed), len(verified), len(lost), len(wrong), lost, wrong)
