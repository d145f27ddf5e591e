"""The layering of `consensus`, checked on every module's imports.

Raft (`consensus/raft/`) knows nothing of the application it replicates; its
pure core touches no socket, disk, clock or thread; and `consensus` as a
whole never reaches up into `node` or HTTP (see ARCHITECTURE.md, "Layout").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONSENSUS = Path(__file__).resolve().parents[2] / "consensus"
RAFT = CONSENSUS / "raft"

# The Raft modules that do I/O (or describe what I/O they need); every other
# module in consensus/raft/ belongs to the pure core.
RAFT_IO = {
    "applier", "disk_threads", "driver", "forwarding", "snapshot_files", "snapshots",
    "transport", "wal",
}
APPLICATION = ("consensus.commands", "consensus.state", "consensus.store", "consensus.engine")
IMPURE = ("trio", "socket", "os", "time", "threading", "sqlite3", "asyncio", "selectors")
ABOVE_CONSENSUS = ("node", "quart", "quart_trio", "hypercorn", "httpx", "werkzeug")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, `from a import b` counted as both `a` and `a.b`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def modules(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.py"))


@pytest.mark.parametrize("path", modules(RAFT), ids=lambda p: p.stem)
def test_raft_never_imports_the_application_it_replicates(path: Path) -> None:
    offending = {name for name in imported_modules(path) if within(name, APPLICATION)}
    assert not offending, f"consensus/raft/{path.name} imports {sorted(offending)}"


@pytest.mark.parametrize(
    "path", [p for p in modules(RAFT) if p.stem not in RAFT_IO], ids=lambda p: p.stem
)
def test_the_raft_core_touches_no_socket_disk_clock_or_thread(path: Path) -> None:
    io_modules = tuple(f"consensus.raft.{m}" for m in RAFT_IO)
    offending = {
        name for name in imported_modules(path) if within(name, IMPURE + io_modules)
    }
    assert not offending, f"consensus/raft/{path.name} imports {sorted(offending)}"


@pytest.mark.parametrize(
    "path", modules(CONSENSUS) + modules(RAFT), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_consensus_never_imports_node_or_http(path: Path) -> None:
    offending = {name for name in imported_modules(path) if within(name, ABOVE_CONSENSUS)}
    assert not offending, f"{path} imports {sorted(offending)}"
