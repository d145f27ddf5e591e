"""`scripts/fuzz`: parse the command line, fuzz the targets, print the counts; 0 on pass."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from scripts.fuzzing.harness import Plan, report, run_target, scratch

# (HTTP requests per target, Raft frames, concurrent requests)
PROFILES = {"short": (2500, 500, 12), "long": (50_000, 5000, 24)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/fuzz",
        description="Fuzz a real node and a real 3-node cluster; exit 0 only if they survive.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short",
                        help="short (CI, under 2 minutes) or long (100,000 requests)")
    parser.add_argument("--requests", type=int, help="HTTP requests per target")
    parser.add_argument("--frames", type=int, help="Raft frames (cluster target)")
    parser.add_argument("--concurrency", type=int, help="requests in flight")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    parser.add_argument("--target", choices=["single", "cluster", "both"], default="both")
    parser.add_argument("--replay", type=int, metavar="CASE",
                        help="send only this case, printing each request and its status")
    return parser


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds, so every node started is stopped


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    requests, frames, concurrency = PROFILES[args.profile]
    plan = Plan(
        seed=args.seed,
        requests=args.requests if args.requests is not None else requests,
        frames=args.frames if args.frames is not None else frames,
        concurrency=args.concurrency or concurrency,
        replay=args.replay,
    )
    if args.replay is not None and args.target == "both":
        _parser().error("--replay needs --target single or --target cluster")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    targets = ["single", "cluster"] if args.target == "both" else [args.target]
    passed = True
    try:
        for name in targets:
            with scratch() as workdir:
                outcome = run_target(name, plan, workdir)
            print(report(outcome, plan), flush=True)
            passed = passed and outcome.passed
    except KeyboardInterrupt:
        print("fuzz: interrupted; nodes stopped", file=sys.stderr)
        return 130
    print("fuzz: PASS" if passed else "fuzz: FAIL", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
