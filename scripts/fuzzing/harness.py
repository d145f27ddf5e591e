"""One fuzz run against one target: start it, store the fixture, fuzz, check, report.

A target is a single node or a bootstrapped 3-node cluster of real `flotilla
serve` processes on loopback ports, with data on tmpfs when the machine has
one. Case `i` of a run draws everything from `Random(f"{seed}:{target}:{i}")`,
so the request sequence is the seed's (only the timing varies) and one
case can be replayed alone. The run passes when no answer was a 5xx other
than 503, the peer API refused every unproven request, no node logged a
traceback, every node is alive and answering /v2/, the fixture pulls back
byte-identical from every node, and (cluster) a new manifest can still be
written and read everywhere.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync
from scripts.benchmarks import processes
from scripts.benchmarks.processes import Server
from scripts.fuzzing import fixture as fx
from scripts.fuzzing.data_plane import fuzz_data_plane
from scripts.fuzzing.fixture import Fixture
from scripts.fuzzing.http_cases import Scene, body_classes, choose_case
from scripts.fuzzing.raft_frames import fuzz_raft
from scripts.fuzzing.senders import Sender
from scripts.fuzzing.tally import Failure, Tally

CHUNK_SIZE = 64 * 1024  # small chunks: the fixture's layer spans several
MAX_MANIFEST = 4 * 1024 * 1024  # the node's default
LOG_MARKERS = ("Traceback", "Exception in")
KEPT_LOG_LINES = 30
TMPFS = Path("/dev/shm")



@dataclass
class Plan:
    seed: int
    requests: int  # per target
    frames: int  # Raft frames, cluster only
    concurrency: int
    replay: int | None = None


@dataclass
class Outcome:
    target: str
    tally: Tally
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems and not self.tally.failure_count


@dataclass
class Target:
    name: str
    servers: dict[str, Server]  # node id -> process
    secret: bytes
    raft: dict[str, str]  # node id -> raft address (cluster only)
    data: dict[str, str] = field(default_factory=dict)  # node id -> data plane (cluster only)

    @property
    def bases(self) -> list[str]:
        return [s.url for s in self.servers.values()]


@contextlib.contextmanager
def started(name: str, workdir: Path) -> Iterator[Target]:
    extra = ["--chunk-size", str(CHUNK_SIZE)]
    if name == "single":
        with processes.flotilla_node(workdir, chunk_size=CHUNK_SIZE) as server:
            secret = load_or_create_secret(workdir / "flotilla-data" / "secret")
            yield Target(name, {"n1": server}, secret, {})
        return
    secret_file = workdir / "secret"
    secret = load_or_create_secret(secret_file)
    ids = ["n1", "n2", "n3"]
    ports = {n: (processes.free_port(), processes.free_port()) for n in ids}
    data = {n: f"127.0.0.1:{processes.free_port()}" for n in ids}
    peers = ",".join(f"{n}=127.0.0.1:{raft}" for n, (_, raft) in ports.items())
    with contextlib.ExitStack() as stack:
        servers = {
            n: stack.enter_context(processes.flotilla_raft_member(
                workdir, n, http, raft, peers, secret_file,
                extra=[*extra, "--data-listen", data[n]]))
            for n, (http, raft) in ports.items()
        }
        target = Target(name, servers, secret,
                        {n: f"127.0.0.1:{raft}" for n, (_, raft) in ports.items()}, data)
        wait_for_leader(target)
        yield target


def leader_of(target: Target, node_id: str) -> str | None:
    url = f"{target.servers[node_id].url}/_cluster/status"
    response = call_sync(target.secret, "GET", url, node_id=node_id, timeout=5)
    response.raise_for_status()
    return response.json()["leader"]


def wait_for_leader(target: Target, timeout: float = 30.0) -> str:
    """The leader every node agrees on, once they do."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            leaders = {leader_of(target, n) for n in target.servers}
            if len(leaders) == 1 and None not in leaders:
                return str(leaders.pop())
            last = f"leaders seen: {sorted(map(str, leaders))}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"the cluster agrees on no leader ({last})")


async def _fuzz_http(target: Target, scene: Scene, plan: Plan, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=plan.concurrency * 2,
                          max_keepalive_connections=plan.concurrency * 2)
    cases = [plan.replay] if plan.replay is not None else None
    next_case = 0
    started_at = time.monotonic()
    shown = started_at

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_case, shown
        while True:
            if cases is not None:
                if not cases:
                    return
                index = cases.pop()
            elif tally.requests >= plan.requests:
                return
            else:
                index, next_case = next_case, next_case + 1
            rng = random.Random(f"{plan.seed}:{target.name}:{index}")
            name, case = choose_case(rng)
            sender = Sender(client, tally, target.name, index, name, verbose=cases is not None)
            if sender.verbose:
                print(f"case {index}: {name}", flush=True)
            try:
                await case(sender, scene, rng)
            except Exception as exc:  # a generator bug: fail the run loudly, keep going
                tally.fail(Failure(target.name, index, name, "(generating the case)",
                                   f"the harness raised {exc!r}"))
            now = time.monotonic()
            if now - shown > 15:
                shown = now
                rate = tally.requests / (now - started_at)
                print(f"  {target.name}: {tally.requests} requests, {rate:.0f}/s", flush=True)

    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(plan.concurrency):
                nursery.start_soon(worker, client)


def _log_tracebacks(target: Target) -> list[str]:
    found = []
    for node_id, server in target.servers.items():
        text = server.log_path.read_text(errors="replace")
        for marker in LOG_MARKERS:
            at = text.find(marker)
            if at >= 0:
                # The end of a traceback says what went wrong; the start, where.
                lines = text[at:].splitlines()
                excerpt = "\n".join(lines[:3] + ["  …"] + lines[3:][-KEPT_LOG_LINES:])
                found.append(f"{node_id} logged {marker!r} ({server.log_path}):\n{excerpt}")
                break
    return found


def _keep_logs(target: Target, plan: Plan) -> Path:
    kept = Path(tempfile.gettempdir()) / f"flotilla-fuzz-logs-{plan.seed}-{target.name}"
    kept.mkdir(exist_ok=True)
    for server in target.servers.values():
        shutil.copy(server.log_path, kept / server.log_path.name)
    return kept


def _still_up(target: Target) -> list[str]:
    found = []
    for node_id, server in target.servers.items():
        if server.process.poll() is not None:
            found.append(f"{node_id} exited with {server.process.returncode}")
            continue
        try:
            status = httpx.get(f"{server.url}/v2/", timeout=10, trust_env=False).status_code
        except httpx.HTTPError as exc:
            found.append(f"{node_id} does not answer /v2/: {exc!r}")
            continue
        if status != 200:
            found.append(f"{node_id} answers /v2/ with {status}")
    return found


def _still_writable(target: Target, fixture: Fixture) -> list[str]:
    """A manifest PUT through one node is readable from every node afterwards."""
    body = fx.image_manifest(fixture.config, [fixture.layer],
                             annotations={"after": "fuzz", "at": str(time.time())})
    after = Fixture(fixture.layer, fixture.config, body)
    try:
        fx.store(after, target.bases[-1], timeout=30, tag="after")
    except RuntimeError as exc:
        return [f"a manifest PUT after the run failed: {exc}"]
    return [p for base in target.bases for p in fx.problems(after, base, tag="after")]


def run_target(name: str, plan: Plan, workdir: Path) -> Outcome:
    tally = Tally()
    outcome = Outcome(name, tally)
    started_at = time.monotonic()
    fixture = Fixture.make(plan.seed)
    with started(name, workdir) as target:
        fx.store(fixture, target.bases[0])
        for base in target.bases:
            outcome.problems += fx.problems(fixture, base)
        if outcome.problems:
            outcome.problems.insert(0, "the fixture did not read back before the run")
            return outcome
        scene = Scene(target.bases, list(target.servers), target.secret, fixture,
                      body_classes(plan.seed, MAX_MANIFEST), MAX_MANIFEST)
        trio.run(_fuzz_http, target, scene, plan, tally)
        if target.raft and plan.replay is None:
            trio.run(fuzz_raft, target.raft, target.secret, plan.seed, plan.frames, tally)
            trio.run(fuzz_data_plane, target.data, target.secret, plan.seed, plan.frames, tally)
        outcome.problems += _still_up(target)
        if not outcome.problems:
            for base in target.bases:
                outcome.problems += fx.problems(fixture, base)
            if target.raft:
                try:
                    wait_for_leader(target)
                except RuntimeError as exc:
                    outcome.problems.append(str(exc))
                outcome.problems += _still_writable(target, fixture)
        outcome.problems += _log_tracebacks(target)
        if not outcome.passed:
            outcome.problems.append(f"node logs kept in {_keep_logs(target, plan)}")
    outcome.seconds = time.monotonic() - started_at
    return outcome


def report(outcome: Outcome, plan: Plan) -> str:
    t = outcome.tally
    lines = [f"== {outcome.target}: {t.requests} HTTP requests, {t.frames} Raft frames "
             f"and raw connections, {outcome.seconds:.0f} s "
             f"({t.requests / max(outcome.seconds, 1e-9):.0f} requests/s overall)",
             t.table()]
    for f in t.failures:
        lines += [f"FAIL case {f.case} ({f.case_name}): {f.why}", f"  request: {f.what[:2000]}",
                  f"  replay: scripts/fuzz --seed {plan.seed} --target {f.target} "
                  f"--replay {f.case}"]
    if t.failure_count > len(t.failures):
        lines.append(f"... and {t.failure_count - len(t.failures)} more failed requests")
    lines += [f"FAIL {p}" for p in outcome.problems]
    lines.append(f"{outcome.target}: {'PASS' if outcome.passed else 'FAIL'}")
    return "\n".join(lines)


def workdir_parent() -> Path | None:
    return TMPFS if TMPFS.is_dir() else None


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="flotilla-fuzz-", dir=workdir_parent()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
