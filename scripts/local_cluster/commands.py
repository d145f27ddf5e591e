"""The command line of `scripts/cluster`: run the cluster, or control the running one.

`scripts/cluster [--nodes N] [--data DIR] [--base-port P] [--restart]` runs the
supervisor in the foreground; `scripts/cluster status|kill|stop|start|restart
[NODE] [--data DIR]` asks the supervisor of DIR (default ./.flotilla) from
another terminal. Exit codes of the control commands: 0 done, 1 no supervisor
runs (or it could not be done), 2 unknown node id or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from scripts.local_cluster.control import (
    FAILED,
    OPS,
    ControlSocketInUse,
    NoSupervisor,
    ask,
    claim_socket,
    socket_path,
)
from scripts.local_cluster.layout import ClusterLayout, layout_problem
from scripts.local_cluster.output import announce
from scripts.local_cluster.supervisor import ROOT, Options, Supervisor

DEFAULT_DATA = ROOT / ".flotilla"
PROBE_SECONDS = 1.0


def _supervisor_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="Run a local Flotilla cluster in the foreground. From another terminal: "
                    "scripts/cluster status | kill NODE [--signal S] | stop NODE | "
                    "start NODE | restart NODE.")
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="parent folder of the nodes' data (default ./.flotilla)")
    parser.add_argument("--base-port", type=int, default=5000,
                        help="node k: HTTP base+k, Raft base+1000+k, data plane base+2000+k "
                             "(default 5000)")
    parser.add_argument("--restart", action="store_true",
                        help="start a node again after it died by itself (off by default)")
    parser.add_argument("--restart-delay", type=float, default=2.0,
                        help="seconds before such a restart (default 2)")
    parser.add_argument("--stop-grace", type=float, default=10.0,
                        help="seconds between SIGTERM and SIGKILL when stopping (default 10)")
    parser.add_argument("--auth", choices=["none", "basic", "token"],
                        help="access control of every node (default none; see the README, "
                             "'Access control', for making the first admin)")
    return parser


def _control_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/cluster",
                                     description="Control the running local cluster.")
    parser.add_argument("command", choices=OPS)
    parser.add_argument("node", nargs="?", help="node id, e.g. n2")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the cluster's data folder (default ./.flotilla)")
    parser.add_argument("--signal", help="kill: the signal to send (default KILL), "
                                         "e.g. TERM, STOP, CONT")
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    return parser


def run_supervisor(argv: list[str]) -> int:
    parser = _supervisor_parser()
    args = parser.parse_args(argv)
    problem = layout_problem(args.nodes, args.base_port)
    if problem:
        parser.error(problem)
    if args.restart_delay < 0 or args.stop_grace < 0:
        parser.error("--restart-delay and --stop-grace must not be negative")
    from node.cluster.auth import load_or_create_secret

    data = args.data.resolve()
    layout = ClusterLayout(data, args.base_port, args.nodes, auth=args.auth)
    try:
        claim_socket(socket_path(data))
    except ValueError as exc:
        parser.error(str(exc))
    except ControlSocketInUse as exc:
        print(f"scripts/cluster: {exc}", file=sys.stderr)
        return 1
    load_or_create_secret(layout.secret)
    for node in layout.nodes:
        announce(f"node {node.node_id}: {node.url}  raft {node.raft}  data plane "
                 f"{node.data_listen}  data {node.data}  log {node.log}")
    first = layout.nodes[0]
    announce(f"cluster secret: {layout.secret}  (flotilla cluster status --url {first.url} "
             f"--secret-file {layout.secret})")
    announce("control it from another terminal: scripts/cluster status | kill NODE | "
             "stop NODE | start NODE | restart NODE" +
             ("" if data == DEFAULT_DATA.resolve() else f"  (with --data {data})"))
    options = Options(args.restart, args.restart_delay, args.stop_grace)
    trio.run(Supervisor(layout, options).run)
    announce("every node stopped")
    return 0


def _readiness(url: str) -> str:
    try:
        response = httpx.get(f"{url}/readyz", timeout=PROBE_SECONDS, trust_env=False)
    except httpx.HTTPError:
        return "no answer"
    if response.status_code == 200:
        return "ready"
    try:
        failures = response.json().get("failures")
    except ValueError:
        failures = None
    return f"not ready ({response.status_code}{': ' + str(failures) if failures else ''})"


def _print_status(nodes: list[dict[str, Any]], as_json: bool) -> None:
    for node in nodes:
        node["readyz"] = _readiness(node["url"]) if node["pid"] else "-"
    if as_json:
        print(json.dumps(nodes, indent=2))
        return
    print(f"{'node':<5} {'state':<24} {'pid':>8}  {'url':<24} readyz")
    for node in nodes:
        print(f"{node['node']:<5} {node['state_text']:<24} {node['pid'] or '-':>8}  "
              f"{node['url']:<24} {node['readyz']}")


def run_control(argv: list[str]) -> int:
    parser = _control_parser()
    args = parser.parse_args(argv)
    if args.command != "status" and not args.node:
        parser.error(f"{args.command} needs a node id, e.g. scripts/cluster {args.command} n2")
    if args.signal and args.command != "kill":
        parser.error("--signal goes with kill")
    request = {"op": args.command, "node": args.node, "signal": args.signal}
    try:
        answer = ask(socket_path(args.data.resolve()), request)
    except NoSupervisor as exc:
        print(f"scripts/cluster: {exc} (start it with scripts/cluster)", file=sys.stderr)
        return 1
    except ValueError as exc:
        parser.error(str(exc))
    if answer.get("code", FAILED) != 0:
        print(f"scripts/cluster: {answer.get('message')}", file=sys.stderr)
        return int(answer.get("code", FAILED))
    if args.command == "status":
        _print_status(answer["nodes"], args.json)
    else:
        print(answer["message"])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in OPS:
        return run_control(argv)
    return run_supervisor(argv)
