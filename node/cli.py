"""The `flotilla` command: `flotilla serve …` runs one node in the foreground."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

from node.access_cli import add_access_commands
from node.config import Config, ConfigError, load_config
from node.gc_cli import add_gc_commands
from node.policy_cli import POLICY_COMMANDS, add_policy_commands
from node.quota_cli import add_quota_commands
from node.request_log import ContextFilter

# Control characters, and the Unicode ones that viewers also break lines at,
# as the escapes Python would write for them: a CR or LF that a client put in
# a URL can then never start a log line that looks like a record of its own.
_CONTROL_ESCAPES = {
    code: repr(chr(code))[1:-1]
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


class OneLineFormatter(logging.Formatter):
    """Formats a record as exactly one line: every control character escaped,
    in the message, its arguments and any traceback alike."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(_CONTROL_ESCAPES)


class RepeatLimit(logging.Filter):
    """Lets the same warning (logger and message template) through `burst` times
    per `interval` seconds, then drops it until the interval is over; the first
    one let through after that is preceded by one line counting what was
    dropped. A client repeating a refused request cannot fill the disk, and the
    log still says that it happened and how often."""

    MAX_KEYS = 1024  # templates are few; this bounds f-string messages too

    def __init__(self, burst: int = 10, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.interval, self.clock = burst, interval, clock
        self._lock = threading.Lock()
        # key → [window start, records passed in it, records dropped in it]
        self._windows: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "repeat_summary", False):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window[0] < self.interval:
                if window[1] < self.burst:
                    window[1] += 1
                    return True
                window[2] += 1
                return False
            dropped = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            self._windows.move_to_end(key)
            while len(self._windows) > self.MAX_KEYS:
                self._windows.popitem(last=False)
        if dropped:
            logging.getLogger(record.name).log(
                record.levelno, "suppressed %d similar messages (%r) in the last %.0f s",
                dropped, record.msg, self.interval, extra={"repeat_summary": True},
            )
        return True


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line: time (RFC 3339, UTC), level,
    logger, message, node, and inside a request its id, method and path (and, on the
    access line, status and duration). json.dumps escapes every control character."""

    FIELDS = ("request_id", "method", "path", "status", "duration_seconds")

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        doc: dict[str, object] = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        node_id = getattr(record, "node_id", None)
        if node_id:
            doc["node"] = node_id
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


# Libraries whose INFO lines are per request: httpx logs every peer health check.
CHATTY_LOGGERS = ("httpx", "httpcore", "flotilla.http")


def configure_logging(level: str, log_format: str = "text", node_id: str | None = None) -> None:
    """One handler on the root logger, so Flotilla's own loggers and Hypercorn's
    (`flotilla.http`, see `node.app.hypercorn_config`) and the access line
    (`flotilla.access`, see `node.request_log`) are all escaped, tagged with the
    request they belong to, and rate-limited the same way.

    Quiet unless asked: below debug level, the libraries that log every request
    they make or serve only get to say what went wrong."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(OneLineFormatter(
            "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
        ))
    handler.addFilter(ContextFilter(node_id))
    handler.addFilter(RepeatLimit())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    quiet = logging.WARNING if level.lower() != "debug" else logging.NOTSET
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


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
        help="log every request (one line each: method, path, status, duration)",
    )
    serve.add_argument("--log-format", dest="log_format", choices=["text", "json"],
                       help="text (default) or json: one JSON object per line")
    serve.add_argument("--raft", help="HOST:PORT of the Raft transport (default: port + 1000)")
    serve.add_argument("--data-listen", dest="data_listen",
                       help="HOST:PORT of the chunk data plane between peers "
                            "(default: port + 2000)")
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
    serve.add_argument("--scrub-bytes-per-second", dest="scrub_bytes_per_second", type=int,
                       help="bytes/s the background scrub re-reads (default 16 MiB; 0: off)")
    serve.add_argument("--scrub-interval", dest="scrub_interval_seconds", type=float,
                       help="seconds from one scrub pass's start to the next (default 86400)")
    serve.add_argument("--retention-interval", dest="retention_interval_seconds", type=float,
                       help="seconds between two applications of the retention policies by "
                       "the leader (default 3600; 0: only by hand)")
    serve.add_argument("--repair-bytes-per-second", dest="repair_bytes_per_second", type=int,
                       help="bytes/s the repair loop fetches (default 32 MiB; 0: no limit)")
    serve.add_argument("--repair-interval", dest="repair_interval_seconds", type=float,
                       help="seconds between repair passes when nothing changes (default 600)")
    serve.add_argument("--gc-interval", dest="gc_interval", type=float,
                       help="seconds between the leader's garbage collections (default 86400; "
                            "0: only by hand)")
    serve.add_argument("--gc-grace", dest="gc_grace", type=float,
                       help="seconds a blob linked by a push or mount is spared by a garbage "
                            "collection while its manifest arrives (default 3600)")
    serve.add_argument("--snapshot-bytes", dest="snapshot_bytes", type=int,
                       help="bytes of applied entries in the log that make a snapshot due "
                            "(default 64 MiB)")
    serve.add_argument("--replication", type=int,
                       help="R: nodes holding each chunk (default 2, capped at the members)")
    serve.add_argument("--write-quorum", dest="write_quorum", type=int,
                       help="W: holders needed before a push succeeds (default R)")
    serve.add_argument("--cache-bytes", dest="cache_bytes", type=int,
                       help="room for fetched chunks not owned (default 10%% of free disk)")
    serve.add_argument("--auth", choices=["none", "basic", "token"],
                       help="access control: token (Docker token flow), basic, or none "
                            "(default none, allowed only on a loopback address)")
    serve.add_argument("--auth-service", dest="auth_service",
                       help="the service name tokens are issued for (default flotilla)")
    serve.add_argument("--auth-realm", dest="auth_realm",
                       help="URL of the token endpoint clients are sent to "
                            "(default: this node's /token, as the client reached it)")
    serve.add_argument("--token-ttl", dest="token_ttl", type=int,
                       help="seconds an access token lives (default 300)")
    serve.add_argument("--audit-log", dest="audit_log", type=Path,
                       help="audit log file, JSON lines (default DATA/audit.log)")
    serve.add_argument("--tick-ms", dest="tick_ms", type=int,
                       help="Raft tick in ms; elections take 10-20 ticks (default 100)")
    serve.add_argument("--tls-cert", dest="tls_cert", type=Path,
                       help="PEM certificate (chain): the HTTP port serves TLS; "
                            "re-read on SIGHUP")
    serve.add_argument("--tls-key", dest="tls_key", type=Path,
                       help="PEM private key of --tls-cert; re-read on SIGHUP")
    serve.add_argument("--internal-tls", dest="internal_tls", choices=["auto", "on", "off"],
                       help="encrypt traffic between nodes (default auto: on with --tls-cert); "
                            "the same on every node")

    cluster = commands.add_parser("cluster", help="inspect and change a running cluster")
    actions = cluster.add_subparsers(dest="action", required=True)
    for name, text in [
        ("status", "members, leader, term, commit/applied index, health of every node"),
        ("add", "add a node to the group"),
        ("remove", "remove a node from the group"),
        ("transfer-leader", "hand leadership to another member"),
        ("drain", "move everything a node holds to the others, then remove it"),
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
        if name == "drain":
            action.add_argument("node_id", metavar="NODE", help="id of the node to drain")
            action.add_argument("--wait", action="store_true",
                                help="show progress and return once the node left the group")
            action.add_argument("--timeout", type=float, default=None,
                                help="with --wait: give up after this many seconds")
            action.add_argument("--cancel", action="store_true",
                                help="stop draining the node (it owns chunks again)")
    add_access_commands(commands)
    add_gc_commands(commands)
    add_policy_commands(commands)
    add_quota_commands(commands)
    return parser


ACCESS_COMMANDS = ("user", "robot", "grant", "revoke", "grants", "repo", "keys")


async def _run_until_signalled(config: Config) -> None:
    from node.app import serve

    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            node = await nursery.start(serve, config)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await node.reload_tls()  # the TLS certificate, as web servers do
                    continue
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
    if args.command == "gc":
        from node.gc_cli import run_gc_command

        raise SystemExit(run_gc_command(args))
    if args.command in POLICY_COMMANDS:
        from node.policy_cli import run_policy_command

        raise SystemExit(run_policy_command(args))
    if args.command == "quota":
        from node.quota_cli import run_quota_command

        raise SystemExit(run_quota_command(args))
    if args.command in ACCESS_COMMANDS:
        from node.access_cli import run_access_command

        raise SystemExit(run_access_command(args))
    from node.api.errors import first_leaf  # the web stack, only for a node (1 s to import)

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        config = load_config(file=args.config, flags=flags)
    except ConfigError as exc:
        print(f"flotilla: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_level, config.log_format, config.node_id)
    # What fails while the node starts (an unusable secret file, a port in use) arrives
    # wrapped in the nurseries' exception groups; it is still reported as one line.
    try:
        trio.run(_run_until_signalled, config)
    except* ConfigError as group:
        print(f"flotilla: {first_leaf(group)}", file=sys.stderr)
        raise SystemExit(2) from None
    except* OSError as group:
        print(f"flotilla: {first_leaf(group)}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
