"""`scripts/bench SUBCOMMAND …`: parse the command line, run one benchmark."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from scripts.benchmarks import auth, cluster, fanout, frames, gc, raft, repair, single


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="Benchmarks of Flotilla against CNCF Distribution."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    single.add_arguments(
        commands.add_parser(
            "single", help="one Flotilla node versus one Distribution: push and pull MB/s, RSS"
        )
    )
    raft.add_arguments(
        commands.add_parser(
            "raft", help="3 Raft nodes: tag write latency and commits/s, on leader and follower"
        )
    )
    cluster.add_arguments(
        commands.add_parser(
            "cluster", help="3 nodes (R=2) versus one Distribution: push, remote pull, 3 pulls"
        )
    )
    fanout.add_arguments(
        commands.add_parser(
            "fanout",
            help="N hosts (network namespaces, tc-limited links) pulling one blob at once; root",
        )
    )
    repair.add_arguments(
        commands.add_parser(
            "repair", help="4 nodes (R=2): time and GiB/min to restore R after losing a node"
        )
    )
    gc.add_arguments(
        commands.add_parser(
            "gc", help="garbage collection: mark and sweep times, push latency during GC"
        )
    )
    frames.add_arguments(
        commands.add_parser(
            "frames", help="Raft frames: encode and decode with and without their MACs"
        )
    )
    auth.add_arguments(
        commands.add_parser(
            "auth", help="what access control costs a request: open, token and Basic, "
                         "against Distribution open and with htpasswd"
        )
    )
    return parser


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C, so every `finally` runs.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Ctrl-C must unwind even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.command == "single":
            return single.run(args)
        if args.command == "raft":
            return raft.run(args)
        if args.command == "cluster":
            return cluster.run(args)
        if args.command == "frames":
            return frames.run(args)
        if args.command == "fanout":
            return fanout.run(args)
        if args.command == "repair":
            return repair.run(args)
        if args.command == "auth":
            return auth.run(args)
        if args.command == "gc":
            return gc.run(args)
    except KeyboardInterrupt:
        print("\nbench: interrupted; servers stopped and temp files removed", file=sys.stderr)
        return 130
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
