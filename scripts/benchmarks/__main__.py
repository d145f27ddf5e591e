"""`scripts/bench SUBCOMMAND …`: parse the command line, run one benchmark."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from scripts.benchmarks import single


def _not_yet(name: str, issue: int) -> int:
    print(f"bench {name}: not yet available (arrives with issue {issue})", file=sys.stderr)
    return 2


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
    commands.add_parser("raft", help="3-node Raft: tag write latency and commits/s (not yet)")
    commands.add_parser("cluster", help="chunks spread across nodes versus Distribution (not yet)")
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
            return _not_yet("raft", 3)
        if args.command == "cluster":
            return _not_yet("cluster", 4)
    except KeyboardInterrupt:
        print("\nbench: interrupted; servers stopped and temp files removed", file=sys.stderr)
        return 130
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
