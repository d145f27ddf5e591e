"""`scripts/chaos`: a seeded chaos run against a real 5-node cluster, and its verdict.

    scripts/chaos [--profile short|long] [--seed S] [--duration SECONDS] [--nodes N]
                  [--faults kill,pause,partition,netem,disk] [--consistency linearizable|local]
                  [--clients C] [--out DIR] [--disk-fill floor|full]
    scripts/chaos --check DIR/history.jsonl     (the checks again on a saved history)

Order of a run: refuse without root or the tools; remove what a crashed run
left; build the namespaces, tmpfs disks and nodes (`netcluster`) and wait
until every node is ready; print the fault plan drawn from the seed (`plan`);
run the clients (`workload`) while the faults are injected on time
(`faults`); stop the clients, heal everything, wait for convergence
(`converge`); check the history (`checker`, on the history the clients
recorded) and the node logs; print the report (`report`) and write
history.jsonl, report.json and the node logs to `--out`. Everything the run
created is removed on the way out, on errors, Ctrl-C and SIGTERM too. Exit 0
only on PASS; a failure prints the command that replays its seed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from scripts.benchmarks import netns
from scripts.chaos_harness import checker
from scripts.chaos_harness.converge import FINAL_PROCESS, Convergence, converge
from scripts.chaos_harness.faults import Injector, netem_available
from scripts.chaos_harness.history import History, Op, load_ops
from scripts.chaos_harness.netcluster import (
    MIN_FREE_BYTES,
    ChaosCluster,
    ClusterFailed,
    remove_leftovers,
)
from scripts.chaos_harness.plan import KINDS, kinds_injected, make_plan, parse_kinds
from scripts.chaos_harness.report import Checks, render, summarize
from scripts.chaos_harness.workload import Shared, Tally, run_clients

PROFILES: dict[str, dict[str, Any]] = {
    # ≤ 3 minutes in all on a 2-core machine, every fault kind at least once
    "short": {"nodes": 5, "duration": 70.0, "clients": 3, "fault_seconds": (4.0, 8.0),
              "gap_seconds": (1.0, 2.5), "converge_timeout": 60.0},
    "long": {"nodes": 5, "duration": 600.0, "clients": 4, "fault_seconds": (5.0, 20.0),
             "gap_seconds": (2.0, 6.0), "converge_timeout": 300.0},
}
TRACEBACK = "Traceback (most recent call last)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="long")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--duration", type=float, default=None, help="fault phase, seconds")
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--faults", default=",".join(KINDS), help="kinds, comma-separated")
    parser.add_argument("--consistency", choices=("linearizable", "local"),
                        default="linearizable",
                        help="the nodes' read mode; with local the linearizability verdict "
                             "is informational")
    parser.add_argument("--clients", type=int, default=None, help="client threads")
    parser.add_argument("--disk-mib", type=int, default=512, help="each node's tmpfs")
    parser.add_argument("--disk-fill", choices=("floor", "full"), default="full",
                        help="a disk fault fills the tmpfs completely (default) or to below "
                             "the node's free-space floor")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default: a temp folder, kept on failure)")
    parser.add_argument("--check", type=Path, default=None, metavar="HISTORY",
                        help="only check a saved history.jsonl again (no cluster, no root)")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    for name in ("nodes", "duration", "clients"):
        if getattr(args, name) is None:
            setattr(args, name, profile[name])
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    try:
        args.kinds = parse_kinds(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if args.nodes < 1 or args.nodes > 100:
        parser.error("--nodes: between 1 and 100")
    return args


def replay_command(args: argparse.Namespace) -> str:
    return (f"scripts/chaos --profile {args.profile} --seed {args.seed} "
            f"--duration {args.duration:g} --nodes {args.nodes} --faults {','.join(args.kinds)}"
            f" --consistency {args.consistency} --clients {args.clients}"
            f" --disk-fill {args.disk_fill}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def node_tracebacks(logs: list[Path]) -> dict[str, int]:
    found = {}
    for log in logs:
        try:
            count = log.read_text(errors="replace").count(TRACEBACK)
        except OSError:
            continue
        if count:
            found[log.name] = count
    return found


def run_checks(ops: list[Op], convergence: Convergence, tally: Tally,
               tracebacks: dict[str, int], died: list[str], verify_from: float) -> Checks:
    """The checker's verdicts on the history, with what the harness saw itself."""
    history_report = checker.check_history(ops)
    blobs = checker.check_blobs(ops, verify_from=verify_from)
    lost = checker.check_lost_writes(ops, checker.final_reads_after(ops, verify_from))
    detail = ""
    if convergence.not_ready:
        detail += f"not ready: {', '.join(convergence.not_ready)}; "
    if convergence.disagreeing_tags:
        detail += f"tags that disagree: {convergence.disagreeing_tags}; "
    if convergence.unverified_blobs:
        detail += f"{convergence.unverified_blobs} blob copies not served right"
    return Checks(
        linearizable=history_report.linearizable,
        linearizability_detail="\n".join(
            v.explanation or v.key for v in history_report.violations()),
        lost_tag_writes=lost.lost_writes,
        blobs_acknowledged=blobs.acknowledged,
        blobs_verified=blobs.verified,
        blobs_lost=blobs.lost,
        wrong_bytes=blobs.wrong_bytes + tally.wrong_manifest_bytes,
        converged=convergence.converged,
        convergence_seconds=round(convergence.seconds, 1),
        convergence_detail=detail,
        metadata_seconds=None if convergence.metadata_seconds is None
        else round(convergence.metadata_seconds, 1),
        blob_copies_verified=convergence.blob_copies_verified,
        tracebacks=tracebacks,
        died=died,
        acked_blob_404=tally.acked_blob_404,
    )


def fault_phase(args: argparse.Namespace, cluster: ChaosCluster, history: History,
                shared: Shared, tally: Tally, injector: Injector,
                plan: list[Any]) -> None:
    """Clients and faults together for `--duration` seconds, then the clients stop."""
    stop_clients, stop_faults = threading.Event(), threading.Event()
    clients = run_clients(args.clients, args.seed, cluster, history, shared, tally,
                          stop_clients)
    faults = threading.Thread(target=injector.run, args=(plan, stop_faults), daemon=True)
    faults.start()
    try:
        end = injector.t0 + args.duration
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            done = len(history.ops())
            print(f"chaos: {time.monotonic() - injector.t0:7.1f}s  {done} operations",
                  flush=True)
    finally:
        stop_faults.set()
        stop_clients.set()
        faults.join()
        for thread in clients:
            thread.join(30)


def verification_start(ops: list[Op]) -> float:
    """When the convergence pass of a saved history began: its first operation (they
    carry process numbers from FINAL_PROCESS on)."""
    return min((op.invoked for op in ops if op.process >= FINAL_PROCESS), default=0.0)


def check_saved(path: Path) -> int:
    """The checker's verdicts on a saved history, as a failing run's folder holds it."""
    ops = load_ops(path)
    history_report = checker.check_history(ops)
    since = verification_start(ops)
    lost = checker.check_lost_writes(ops, checker.final_reads_after(ops, since))
    blobs = checker.check_blobs(ops, verify_from=since)
    print(history_report.render())
    print(lost.render())
    print(blobs.render())
    good = (history_report.linearizable == "yes" and not lost.lost_writes
            and not blobs.lost and not blobs.wrong_bytes)
    print("chaos: check PASS" if good else "chaos: check FAIL")
    return 0 if good else 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.check is not None:
        return check_saved(args.check)
    try:
        netns.require_root_and_tools(("ip", "tc", "iptables", "mount"))
    except netns.NetnsUnavailable as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    settings = {"seed": args.seed, "duration": args.duration, "nodes": args.nodes,
                "faults": list(args.kinds), "consistency": args.consistency,
                "clients": args.clients, "profile": args.profile, "disk_fill": args.disk_fill}
    profile = PROFILES[args.profile]
    plan = make_plan(args.seed, args.duration, args.nodes, args.kinds,
                     profile["fault_seconds"], profile["gap_seconds"])
    print(f"chaos: seed {args.seed}; replay: {replay_command(args)}")
    print("chaos: plan\n" + "\n".join("  " + f.describe() for f in plan), flush=True)
    started = time.monotonic()
    remove_leftovers()
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-chaos-"))
    out = args.out or Path(tempfile.mkdtemp(prefix="flotilla-chaos-out-"))
    out.mkdir(parents=True, exist_ok=True)
    cluster = ChaosCluster(workdir)
    passed = False
    try:
        cluster = ChaosCluster.build(workdir, args.nodes, args.disk_mib, args.consistency,
                                     1 << 20)
        for k in cluster.nodes:
            cluster.start(k)
        cluster.wait_ready(120)
        print(f"chaos: {args.nodes} nodes ready after {time.monotonic() - started:.1f} s",
              flush=True)
        history, shared, tally = History(), Shared(), Tally()
        netem = netem_available()
        if "netem" in args.kinds and not netem:
            print("chaos: this kernel has no netem qdisc: netem faults run as tbf delay and "
                  "iptables drops, without reordering", flush=True)
        leaves = MIN_FREE_BYTES // 2 if args.disk_fill == "floor" else 0
        injector = Injector(cluster, time.monotonic(), netem=netem, fill_leaves=leaves)
        fault_phase(args, cluster, history, shared, tally, injector, plan)
        injector.heal_all()
        healed_at = time.monotonic()
        print("chaos: healed; waiting for convergence", flush=True)
        convergence = converge(cluster, history, shared, tally, healed_at,
                               profile["converge_timeout"])
        died = injector.died + cluster.unexpected_exits()
        ops = history.ops()
        history.save(out / "history.jsonl")
        checks = run_checks(ops, convergence, tally,
                            node_tracebacks([n.log_path for n in cluster.nodes.values()]), died,
                            verify_from=healed_at)
        summary = summarize(
            ops=ops, checks=checks,
            faults=kinds_injected([r.fault for r in injector.done]),
            plan=[r.to_json() for r in injector.done], settings=settings,
            replay=replay_command(args), wall_seconds=time.monotonic() - started)
        (out / "report.json").write_text(json.dumps(summary, indent=2, default=str))
        print(render(summary))
        passed = summary["verdict"] == "PASS"
        return 0 if passed else 1
    except (ClusterFailed, netns.NetnsCommandFailed, OSError) as exc:
        print(f"chaos: FAIL: {exc}\nchaos: replay with: {replay_command(args)}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("chaos: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup itself is not cut short
        for node in cluster.nodes.values():
            if node.log_path.exists():
                shutil.copy(node.log_path, out / node.log_path.name)
        cluster.close()
        remove_leftovers()
        shutil.rmtree(workdir, ignore_errors=True)
        if passed and args.out is None:
            shutil.rmtree(out, ignore_errors=True)
        else:
            print(f"chaos: history, report and node logs in {out}", file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
