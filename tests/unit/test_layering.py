"""The layers of `node/` and `consensus/`, read from every module's own imports.

Like trio's test that guards its public names, this reads the source instead
of trusting a diagram: every `import` and `from … import` anywhere in a
module (inside functions and `if TYPE_CHECKING:` blocks too, relative ones
resolved) is checked against `RULES`, and the packages, taken as units, must
not import each other in a cycle. ARCHITECTURE.md ("Layout") says why the
layers are cut this way; a failure names the module, the line, the import and
the rule it breaks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("node", "consensus")

HTTP = ("quart", "quart_trio", "hypercorn", "werkzeug", "httpx", "httpcore", "h11")
# The Raft modules that do I/O (or describe the I/O they need); every other
# module in consensus/raft/ is the pure core, so a new one is pure until listed.
RAFT_IO = (
    "applier", "disk_threads", "driver", "forwarding", "snapshot_files", "snapshots",
    "transport", "wal",
)
PURE_CORE_NAMES = tuple(
    sorted(
        path.stem
        for path in (ROOT / "consensus" / "raft").glob("*.py")
        if path.stem not in (*RAFT_IO, "__init__")
    )
)
PURE_CORE = "consensus.raft.{" + ",".join(PURE_CORE_NAMES) + "}"


@dataclass(frozen=True)
class Rule:
    """Modules matching `layer` never import `never`, except what `unless` names."""

    layer: str  # a module or package ("node.api" is it and all below); {a,b} lists several
    never: tuple[str, ...]
    why: str
    unless: tuple[str, ...] = ()

    def covers(self, module: str) -> bool:
        return any(_within(module, layer) for layer in _expand(self.layer))

    def forbids(self, target: str) -> bool:
        return any(_within(target, n) for n in self.never) and not any(
            _within(target, u) for u in self.unless
        )

    def __str__(self) -> str:
        unless = f" (except {', '.join(self.unless)})" if self.unless else ""
        return f"{self.layer} never imports {', '.join(self.never)}{unless}: {self.why}"


RULES = [
    Rule("consensus.raft",
         never=("consensus.state", "consensus.store", "consensus.commands", "consensus.engine"),
         why="Raft replicates a log; it applies entries through an interface, "
             "not by knowing the application"),
    Rule(PURE_CORE,
         never=("trio", "socket", "os", "time", "threading", "sqlite3", "asyncio"),
         why="the core is pure (no I/O, clock or threads), so the simulator can drive it"),
    Rule("consensus", never=("node", *HTTP),
         why="the replicated metadata knows nothing of the registry or of HTTP"),
    Rule("consensus", never=("prometheus_client",),
         why="consensus keeps plain counts and timings (consensus/raft/timings.py); "
             "node/metrics.py turns them into Prometheus metrics"),
    Rule("node", never=("consensus",), unless=("consensus.engine", "consensus.repo_patterns"),
         why="consensus.engine is node's one door into consensus (it re-exports "
             "the commands and record types); consensus.repo_patterns is the leaf "
             "rule for repository globs that grants and policies share"),
    Rule("consensus.repo_patterns", never=("node", "consensus"),
         unless=("consensus.repo_patterns",),
         why="the repository glob rule is a leaf node/access/ imports"),
    Rule("node.config", never=("node", "consensus"), unless=("node.config",),
         why="the configuration is a leaf every layer may import"),
    Rule("node.names", never=("node", "consensus"), unless=("node.names",),
         why="the name grammar is a leaf the API and the access rules share"),
    Rule("node.storage",
         never=("node.api", "node.cluster", "node.app", "node.services", "consensus", *HTTP),
         why="a node's own disk is the bottom layer: no peers, no HTTP, no metadata"),
    Rule("node.cluster", never=("node.api", "node.app", "node.services", "sqlite3"),
         why="peers sit below the HTTP handlers and the services bundle that holds them, "
             "and reach metadata only through consensus.engine"),
    Rule("node.access",
         never=("node.api", "node.app", "node.services", "node.cluster", "sqlite3", *HTTP),
         why="who may do what is decided without HTTP: handlers hand the gate headers and "
             "get back a caller or an error"),
    Rule("node.api", never=("sqlite3",),
         why="handlers read metadata through consensus.engine, never SQLite"),
]

# In the pure core, `random` may only name a type: the core takes the
# `random.Random` its caller built and never draws from the global generator.
TYPE_ONLY = {"random": ("Random",)}

# The units the cycle check joins modules into, most specific first wins.
# node.services is a unit of its own: it bundles storage and cluster for the
# handlers in node.api, and node.app (the rest of `node`) builds it.
UNITS = (
    "consensus.raft", "consensus",
    "node.config", "node.names", "node.services", "node.storage", "node.cluster",
    "node.access", "node.api", "node",
)

# -- reading imports ------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: str  # relative to the repository, for messages
    text: str
    is_package: bool


@dataclass(frozen=True)
class Import:
    module: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.module}) imports {self.target}"


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _expand(layer: str) -> list[str]:
    if "{" not in layer:
        return [layer]
    prefix, _, names = layer.partition("{")
    return [prefix + name for name in names.rstrip("}").split(",")]


def read_tree(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Source]:
    """Every module under the packages, by dotted name."""
    tree = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            tree[name] = Source(str(path.relative_to(root)), path.read_text(), is_package)
    return tree


def imports_of(module: str, source: Source, known: Iterable[str]) -> list[Import]:
    """What `module` imports, anywhere in it; `from p import m` counts as p.m when
    p.m is a module of the tree."""
    known = set(known)
    package = module if source.is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source.text, source.path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found.extend(Import(module, target, source.path, node.lineno) for target in targets)
    return found


def all_imports(tree: Mapping[str, Source]) -> list[Import]:
    return [imp for module, source in tree.items() for imp in imports_of(module, source, tree)]


# -- the checks -----------------------------------------------------------------


def rule_breaches(imports: Iterable[Import], rules: Iterable[Rule] = RULES) -> list[str]:
    return [
        f"{imp}, but {rule}"
        for imp in imports
        for rule in rules
        if rule.covers(imp.module) and rule.forbids(imp.target)
    ]


def type_only_breaches(tree: Mapping[str, Source], layer: str = PURE_CORE) -> list[str]:
    """Uses of a TYPE_ONLY module, in modules of `layer`, outside annotations."""
    rule = Rule(layer, never=(), why="")
    found = []
    for module, source in tree.items():
        if not rule.covers(module):
            continue
        syntax = ast.parse(source.text, source.path)
        in_annotations = {id(n) for a in _annotations(syntax) for n in ast.walk(a)}
        bound: dict[str, str] = {}  # local name -> the TYPE_ONLY module it came from
        as_module: set[str] = set()  # the local names that are the module itself
        for node in ast.walk(syntax):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in TYPE_ONLY:
                        bound[alias.asname or alias.name] = alias.name
                        as_module.add(alias.asname or alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module in TYPE_ONLY:
                for alias in node.names:
                    where = f"{source.path}:{node.lineno} ({module})"
                    if alias.name not in TYPE_ONLY[node.module]:
                        found.append(f"{where} imports {node.module}.{alias.name}, "
                                     f"but {node.module} may only name a type here")
                    bound[alias.asname or alias.name] = node.module
        for node in ast.walk(syntax):
            if not (isinstance(node, ast.Name) and node.id in bound):
                continue
            where = f"{source.path}:{node.lineno} ({module})"
            if id(node) not in in_annotations:
                found.append(f"{where} uses {node.id} outside a type annotation, but "
                             f"{bound[node.id]} may only name the type of a parameter here")
        for node in ast.walk(syntax):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in as_module
                and node.attr not in TYPE_ONLY[bound[node.value.id]]
            ):
                allowed = ", ".join(TYPE_ONLY[bound[node.value.id]])
                found.append(f"{source.path}:{node.lineno} ({module}) uses "
                             f"{node.value.id}.{node.attr}, but only {allowed} may be named here")
    return found


def _annotations(syntax: ast.AST) -> Iterable[ast.expr]:
    for node in ast.walk(syntax):
        if isinstance(node, ast.arg) and node.annotation is not None:
            yield node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def unit_of(module: str) -> str | None:
    return next((unit for unit in UNITS if _within(module, unit)), None)


def unit_cycles(imports: Iterable[Import]) -> list[str]:
    """Each group of units that import each other, with one chain of imports that shows it."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        source, target = unit_of(imp.module), unit_of(imp.target)
        if source and target and source != target:
            edges.setdefault(source, {}).setdefault(target, imp)
    reach = {unit: _reachable(edges, unit) for unit in edges}
    groups = {
        tuple(sorted(v for v in reach if v in reach[u] and u in reach[v]))
        for u in reach
        if u in reach[u]
    }
    cycles = []
    for group in sorted(groups):
        path = _path_back(edges, group[0])
        assert path is not None
        chain = " -> ".join([*path, path[0]])
        links = "; ".join(
            str(edges[a][b]) for a, b in zip(path, [*path[1:], path[0]], strict=True)
        )
        cycles.append(f"units {', '.join(group)} import each other, e.g. {chain}: {links}")
    return cycles


def _reachable(edges: Mapping[str, Mapping[str, Import]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), {}):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _path_back(edges: Mapping[str, Mapping[str, Import]], start: str) -> list[str] | None:
    """The shortest chain of units from `start` that leads back to it, if any."""
    frontier, came_from = [start], {start: ""}
    while frontier:
        following = []
        for unit in frontier:
            for nxt in sorted(edges.get(unit, {})):
                if nxt == start:
                    path = [unit]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if nxt not in came_from:
                    came_from[nxt] = unit
                    following.append(nxt)
        frontier = following
    return None


# -- the tests ------------------------------------------------------------------

TREE = read_tree()
IMPORTS = all_imports(TREE)


def test_every_module_keeps_to_its_layer() -> None:
    breaches = rule_breaches(IMPORTS)
    assert not breaches, "layering rules broken:\n  " + "\n  ".join(breaches)


def test_the_pure_raft_core_names_random_only_as_the_type_of_its_generator() -> None:
    breaches = type_only_breaches(TREE)
    assert not breaches, "\n  ".join(["the pure core draws randomness itself:", *breaches])


def test_packages_import_each_other_without_a_cycle() -> None:
    cycles = unit_cycles(IMPORTS)
    assert not cycles, "\n  ".join(["import cycles between packages:", *cycles])


def test_every_unit_and_rule_names_modules_that_exist() -> None:
    # A rule about a renamed package would pass forever without checking anything.
    layers = [layer for rule in RULES for layer in _expand(rule.layer)]
    pure = [layer for layer in _expand(PURE_CORE) if layer in TREE]
    assert {"consensus.raft.core", "consensus.raft.log"} <= set(pure)
    missing = [
        name for name in [*UNITS, *(set(layers) - set(_expand(PURE_CORE)))]
        if not any(_within(module, name) for module in TREE)
    ]
    assert not missing, f"no module under {missing}"
    assert all(unit_of(module) is not None for module in TREE)


# -- the checker catches what it should -----------------------------------------


def _tree(**modules: str) -> dict[str, Source]:
    """A made-up tree: module name (dots as __) -> its source."""
    return {
        name.replace("__", "."): Source(name.replace("__", "/") + ".py", text, False)
        for name, text in modules.items()
    }


def _with(module: str, text: str) -> dict[str, Source]:
    return {**TREE, **_tree(**{module.replace(".", "__"): text})}


def test_a_planted_import_inside_a_function_is_caught_and_named() -> None:
    tree = _tree(
        node__storage__planted="def f():\n    from ..api import errors\n",
        node__api__errors="",
    )
    assert rule_breaches(all_imports(tree)) == [
        "node/storage/planted.py:2 (node.storage.planted) imports node.api.errors, but "
        "node.storage never imports node.api, node.cluster, node.app, node.services, consensus, "
        "quart, quart_trio, hypercorn, werkzeug, httpx, httpcore, h11: a node's own disk is "
        "the bottom layer: no peers, no HTTP, no metadata"
    ]


def test_a_planted_cycle_between_packages_is_caught() -> None:
    tree = _tree(
        node__storage__planted="import node.cluster.placement\n",
        node__cluster__placement="from node.storage import planted\n",
    )
    assert unit_cycles(all_imports(tree)) == [
        "units node.cluster, node.storage import each other, e.g. "
        "node.cluster -> node.storage -> node.cluster: "
        "node/cluster/placement.py:1 (node.cluster.placement) imports node.storage.planted; "
        "node/storage/planted.py:1 (node.storage.planted) imports node.cluster.placement"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "import random\nTIMEOUT = random.randrange(10)\n",
        "import random\ndef f(rng: random.Random) -> None:\n    rng = random.Random()\n",
        "from random import randrange\n",
        "import time\n",
    ],
)
def test_a_pure_core_that_reaches_for_the_world_is_caught(text: str) -> None:
    tree = _with("consensus.raft.ready", text)
    imports = [imp for imp in all_imports(tree) if imp.module == "consensus.raft.ready"]
    found = rule_breaches(imports) + type_only_breaches(tree)
    assert found and all("consensus/raft/ready.py" in line for line in found)


def test_a_metrics_library_planted_in_consensus_is_caught() -> None:
    tree = _with("consensus.raft.wal", "from prometheus_client import Histogram\n")
    imports = [imp for imp in all_imports(tree) if imp.module == "consensus.raft.wal"]
    assert [line for line in rule_breaches(imports) if "prometheus_client" in line] == [
        "consensus/raft/wal.py:1 (consensus.raft.wal) imports prometheus_client, but consensus "
        "never imports prometheus_client: consensus keeps plain counts and timings "
        "(consensus/raft/timings.py); node/metrics.py turns them into Prometheus metrics"
    ]


def test_relative_imports_resolve_from_the_importing_package() -> None:
    source = Source("node/api/__init__.py", "from . import errors\nfrom ..cluster import peers\n",
                    is_package=True)
    targets = [imp.target for imp in imports_of("node.api", source, TREE)]
    assert targets == ["node.api.errors", "node.cluster.peers"]
