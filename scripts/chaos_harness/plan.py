"""The fault plan: which fault hits which nodes when, drawn from one seed.

Pure: `make_plan(seed, …)` gives the same list for the same arguments, so a
failing run replays from its seed. Faults run in two lanes so that at most
two are active at once: the *outage* lane (kill, pause, partition) holds one
fault at a time and never takes down or cuts off more than a minority of the
nodes, so the cluster can still make progress; the *degradation* lane
(netem, disk) degrades one node at a time without taking it away. Each lane
first goes once through every selected kind (and every partition shape),
shuffled, so even a short run injects each of them, then draws at random.
Targets are node numbers 1..N; the string "leader" is resolved when the
fault starts (the leader is whoever leads at that moment).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("kill", "pause", "partition", "netem", "disk")
OUTAGE_KINDS = ("kill", "pause", "partition")
PARTITION_SHAPES = ("one", "split", "leader")  # a node cut off, minority|majority, the leader
NETEM_SHAPES = ("delay", "loss", "reorder")


@dataclass(frozen=True)
class Fault:
    """One fault: `kind` on `targets` from `start` for `duration` seconds (of the fault
    phase). `shape` says which partition or netem; `leader` targets whoever leads."""

    start: float
    kind: str
    targets: tuple[int | str, ...]
    duration: float
    shape: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.duration

    def describe(self) -> str:
        what = f"{self.kind}{'/' + self.shape if self.shape else ''}"
        targets = ",".join(f"n{t}" if isinstance(t, int) else t for t in self.targets)
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return (f"{self.start:7.1f}s  {what:<17} {targets:<12} for {self.duration:4.1f}s"
                f"{'  ' + extra if extra else ''}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"--faults {text!r}: choose among {','.join(KINDS)}")
    return kinds


def minority(nodes: int) -> int:
    """The most nodes that may be down or cut off at once with a quorum left."""
    return (nodes - 1) // 2


def _outage(rng: random.Random, kind: str, shape: str, nodes: int, start: float,
            duration: float) -> Fault:
    if kind == "partition":
        if shape == "leader":
            return Fault(start, kind, ("leader",), duration, shape)
        size = 1 if shape == "one" else max(1, minority(nodes))
        cut = tuple(sorted(rng.sample(range(1, nodes + 1), size)))
        return Fault(start, kind, cut, duration, shape)
    # kill and pause: one node, sometimes the leader (the hardest one to lose)
    target: int | str = "leader" if rng.random() < 0.3 else rng.randint(1, nodes)
    return Fault(start, kind, (target,), duration)


def _degradation(rng: random.Random, kind: str, shape: str, nodes: int, start: float,
                 duration: float) -> Fault:
    target = rng.randint(1, nodes)
    if kind == "disk":
        return Fault(start, kind, (target,), duration)
    params: dict[str, Any] = {"delay_ms": rng.choice((20, 50, 100, 200))}
    if shape == "loss":
        params["loss_pct"] = rng.choice((2, 5, 10, 20))
    elif shape == "reorder":
        params["reorder_pct"] = rng.choice((10, 25, 50))
    return Fault(start, kind, (target,), duration, shape, params)


def _firsts(rng: random.Random, kinds: tuple[str, ...], lane: tuple[str, ...],
            shapes: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """Every selected kind of the lane with each of its shapes, once, shuffled."""
    todo = [(k, s) for k in lane if k in kinds for s in shapes.get(k, ("",))]
    rng.shuffle(todo)
    return todo


def make_plan(seed: int, duration: float, nodes: int, kinds: tuple[str, ...],
              fault_seconds: tuple[float, float] = (5.0, 15.0),
              gap_seconds: tuple[float, float] = (1.0, 4.0)) -> list[Fault]:
    """Faults for a fault phase of `duration` seconds on `nodes` nodes, sorted by start;
    every fault ends by `duration`. With fewer than 3 nodes no outage is planned (one
    node down would be a majority)."""
    rng = random.Random(seed)
    shapes = {"partition": PARTITION_SHAPES, "netem": NETEM_SHAPES}
    plan: list[Fault] = []
    lanes: list[tuple[tuple[str, ...], Any]] = [
        (OUTAGE_KINDS if nodes >= 3 else (), _outage),
        (("netem", "disk"), _degradation),
    ]
    for lane, build in lanes:
        firsts = _firsts(rng, kinds, lane, shapes)
        choices = [k for k in lane if k in kinds]
        t = rng.uniform(*gap_seconds)
        while choices:
            if firsts:
                kind, shape = firsts.pop(0)
            else:
                kind = rng.choice(choices)
                shape = rng.choice(shapes.get(kind, ("",)))
            length = rng.uniform(*fault_seconds)
            if t + length > duration:
                break
            plan.append(build(rng, kind, shape, nodes, round(t, 1), round(length, 1)))
            t += length + rng.uniform(*gap_seconds)
    return sorted(plan, key=lambda f: (f.start, f.kind))


def kinds_injected(plan: list[Fault]) -> dict[str, int]:
    """How many faults of each kind (partitions and netem by shape too)."""
    counts: dict[str, int] = {}
    for fault in plan:
        counts[fault.kind] = counts.get(fault.kind, 0) + 1
        if fault.shape:
            name = f"{fault.kind}/{fault.shape}"
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
