"""The run's report: figures from the history, the checks' verdicts, PASS or FAIL.

Pure: `summarize` turns what a run gathered into one JSON-able dict (written
as report.json) and `render` into the text printed at the end. A run passes
only if no acknowledged tag write or blob was lost, no response carried wrong
bytes, every tag's history is linearizable (unless consistency is `local`,
where the verdict is informational: such a node serves reads from its own
state without a read barrier, so a partitioned follower may answer stale),
the cluster converged after healing, and no node logged a traceback or died
on its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from scripts.chaos_harness.history import Op


@dataclass
class Checks:
    """The verdicts, as the checker and the harness found them."""

    linearizable: str  # "yes" / "no" / "unknown"
    linearizability_detail: str
    lost_tag_writes: int
    blobs_acknowledged: int
    blobs_verified: int
    blobs_lost: int
    wrong_bytes: int
    converged: bool
    convergence_seconds: float
    convergence_detail: str
    metadata_seconds: float | None = None  # ready and agreeing on every tag
    blob_copies_verified: int = 0
    tracebacks: dict[str, int] = field(default_factory=dict)  # node log → count
    died: list[str] = field(default_factory=list)
    acked_blob_404: int = 0  # informational


def operation_counts(ops: list[Op]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for op in ops:
        counts.setdefault(op.kind, Counter())[op.outcome] += 1
    return {kind: dict(sorted(c.items())) for kind, c in sorted(counts.items())}


def acknowledged_writes(ops: list[Op]) -> int:
    return sum(1 for op in ops if op.kind in ("write", "blob_push") and op.outcome == "ok")


def failures(checks: Checks, consistency: str) -> list[str]:
    problems = []
    if checks.linearizable != "yes" and consistency == "linearizable":
        problems.append(f"linearizability: {checks.linearizable}")
    if checks.lost_tag_writes:
        problems.append(f"{checks.lost_tag_writes} acknowledged tag writes lost")
    if checks.blobs_lost:
        problems.append(f"{checks.blobs_lost} acknowledged blobs lost")
    if checks.wrong_bytes:
        problems.append(f"{checks.wrong_bytes} responses with wrong bytes")
    if not checks.converged:
        problems.append("no convergence after healing: " + checks.convergence_detail)
    if checks.tracebacks:
        problems.append("tracebacks in " + ", ".join(sorted(checks.tracebacks)))
    if checks.died:
        problems.append("died on their own: " + ", ".join(checks.died))
    return problems


def summarize(*, ops: list[Op], checks: Checks, faults: dict[str, int],
              plan: list[dict[str, Any]], settings: dict[str, Any], replay: str,
              wall_seconds: float) -> dict[str, Any]:
    problems = failures(checks, settings.get("consistency", "linearizable"))
    return {
        "verdict": "PASS" if not problems else "FAIL",
        "problems": problems,
        "settings": settings,
        "replay": replay,
        "wall_seconds": round(wall_seconds, 1),
        "operations": len(ops),
        "operations_by_kind": operation_counts(ops),
        "acknowledged_writes": acknowledged_writes(ops),
        "checks": asdict(checks),
        "faults_by_kind": faults,
        "plan": plan,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(summary: dict[str, Any]) -> str:
    checks = summary["checks"]
    s = summary["settings"]
    lines = [
        f"chaos: {s['nodes']} nodes, seed {s['seed']}, {s['duration']} s of faults "
        f"({','.join(s['faults'])}), consistency {s['consistency']}; "
        f"{summary['wall_seconds']} s in all",
        f"  operations: {summary['operations']}",
    ]
    for kind, outcomes in summary["operations_by_kind"].items():
        lines.append(f"    {kind:<10} " + ", ".join(f"{o} {n}" for o, n in outcomes.items()))
    informational = " (informational: consistency local)" \
        if s["consistency"] != "linearizable" else ""
    lines += [
        f"  acknowledged writes: {summary['acknowledged_writes']} "
        f"(tag writes and blob pushes)",
        f"  acknowledged tag writes lost: {checks['lost_tag_writes']}",
        f"  blobs: {checks['blobs_acknowledged']} acknowledged, {checks['blobs_verified']} "
        f"verified on every node, {checks['blobs_lost']} lost",
        f"  wrong bytes served: {checks['wrong_bytes']}",
        f"  linearizable: {checks['linearizable']}{informational}"
        + (f" — {checks['linearizability_detail']}" if checks["linearizability_detail"] else ""),
        "  convergence after healing: "
        + (f"{checks['convergence_seconds']:.1f} s (every node ready and agreeing on every "
           f"tag after {_seconds(checks['metadata_seconds'])}; the rest is pulling "
           f"{checks['blob_copies_verified']} blob copies, every blob through every node)"
           if checks["converged"]
           else f"NOT converged after {checks['convergence_seconds']:.1f} s: "
                f"{checks['convergence_detail']}"),
        "  faults injected: "
        + ", ".join(f"{k} {n}" for k, n in summary["faults_by_kind"].items()),
        f"  acknowledged blobs answered 404 during faults: {checks['acked_blob_404']} "
        "(informational)",
        f"  node tracebacks: {sum(checks['tracebacks'].values())}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in checks['tracebacks'].items())})"
           if checks["tracebacks"] else ""),
    ]
    if summary["verdict"] == "PASS":
        lines.append("chaos: PASS")
    else:
        lines += [f"chaos: FAIL: {'; '.join(summary['problems'])}",
                  f"chaos: replay with: {summary['replay']}"]
    return "\n".join(lines)
