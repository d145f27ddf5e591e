"""The `flotilla` command: `flotilla serve …` runs one node in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from node.config import Config, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flotilla", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one registry node in the foreground")
    serve.add_argument("--config", type=Path, help="a flotilla.toml file")
    serve.add_argument("--data", type=Path, help="data directory (created if missing)")
    serve.add_argument("--listen", help="HOST:PORT for the HTTP API (default 127.0.0.1:5001)")
    serve.add_argument("--node-id", dest="node_id", help="this node's id (default n1)")
    serve.add_argument("--chunk-size", dest="chunk_size", type=int, help="bytes per chunk")
    serve.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    serve.add_argument(
        "--access-log", dest="access_log", action="store_true", default=None,
        help="log every request",
    )
    serve.add_argument("--raft", help="HOST:PORT of the Raft transport (default: port + 1000)")
    serve.add_argument("--peers", help="bootstrap members: ID=RAFTHOST:PORT,…")
    serve.add_argument("--join", help="URL of a member to ask to add this node")
    serve.add_argument("--secret-file", dest="secret_file", type=Path,
                       help="cluster secret (default DATA/secret, created if missing)")
    serve.add_argument("--zone", help="this node's zone (default 'default')")
    serve.add_argument("--advertise-host", dest="advertise_host",
                       help="host other nodes and clients reach this node at")
    serve.add_argument("--consistency", choices=["local", "linearizable"],
                       help="linearizable: every metadata read takes a read barrier")
    serve.add_argument("--propose-timeout", dest="propose_timeout", type=float,
                       help="seconds a write may wait for a commit before 503 (default 5)")
    serve.add_argument("--snapshot-every", dest="snapshot_every", type=int,
                       help="applied entries between snapshots (default 10000)")
    serve.add_argument("--replication", type=int,
                       help="R: nodes holding each chunk (default 2, capped at the members)")
    serve.add_argument("--write-quorum", dest="write_quorum", type=int,
                       help="W: holders needed before a push succeeds (default R)")
    serve.add_argument("--cache-bytes", dest="cache_bytes", type=int,
                       help="room for fetched chunks not owned (default 10%% of free disk)")
    serve.add_argument("--tick-ms", dest="tick_ms", type=int,
                       help="Raft tick in ms; elections take 10-20 ticks (default 100)")

    cluster = commands.add_parser("cluster", help="inspect and change a running cluster")
    actions = cluster.add_subparsers(dest="action", required=True)
    for name, text in [
        ("status", "members, leader, term, commit/applied index, health of every node"),
        ("add", "add a node to the group"),
        ("remove", "remove a node from the group"),
        ("transfer-leader", "hand leadership to another member"),
    ]:
        action = actions.add_parser(name, help=text)
        action.add_argument("--url", required=True, help="HTTP URL of any member")
        action.add_argument("--secret-file", dest="secret_file", type=Path,
                            default=Path(".flotilla/secret"),
                            help="the cluster secret (default ./.flotilla/secret)")
        if name == "status":
            action.add_argument("--json", action="store_true", help="print JSON")
        if name in ("add", "remove"):
            action.add_argument("--node-id", dest="node_id", required=True)
        if name == "add":
            action.add_argument("--raft", required=True, help="the new node's Raft HOST:PORT")
            action.add_argument("--http", required=True, help="the new node's HTTP HOST:PORT")
            action.add_argument("--zone", default="default")
        if name == "transfer-leader":
            action.add_argument("--to", required=True, help="node id of the new leader")
    return parser


async def _run_until_signalled(config: Config) -> None:
    from node.app import serve

    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            node = await nursery.start(serve, config)
            async for signum in signals:
                logging.getLogger("flotilla").info(
                    "received %s, stopping", signal.Signals(signum).name
                )
                node.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "cluster":
        from node.cluster.admin_cli import run_cluster_command

        raise SystemExit(run_cluster_command(args))
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        config = load_config(file=args.config, flags=flags)
    except ConfigError as exc:
        print(f"flotilla: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # What fails while the node starts (an unusable secret file, a port in use) arrives
    # wrapped in the nurseries' exception groups; it is still reported as one line.
    try:
        trio.run(_run_until_signalled, config)
    except* ConfigError as group:
        print(f"flotilla: {group.exceptions[0]}", file=sys.stderr)
        raise SystemExit(2) from None
    except* OSError as group:
        print(f"flotilla: {group.exceptions[0]}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
