"""The node's configuration: one typed object, built once, passed down.

Sources, later ones winning: defaults, a TOML file (`--config`), environment
variables `FLOTILLA_<FIELD>` (upper case), command-line flags. No other
module reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

MiB = 1 << 20
NODE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A manifest travels in one Raft entry of up to about twice its size (the body,
# plus the annotations and digests copied out of it), and a Raft frame
# (MAX_FRAME in consensus/raft/transport.py, 64 MiB) must hold that entry, or
# a follower that needs it can never catch up.
MAX_MANIFEST_LIMIT = 16 * MiB


class ConfigError(ValueError):
    """A setting that cannot be used; the message says which and why."""


# Where a node's Raft transport and data plane listen unless told: its HTTP port plus these.
RAFT_PORT_OFFSET = 1000
DATA_PLANE_PORT_OFFSET = 2000

@dataclass(frozen=True)
class Config:
    data: Path = Path(".flotilla/node-1")
    listen: str = "127.0.0.1:5001"
    node_id: str = "n1"
    chunk_size: int = 8 * MiB
    max_manifest_bytes: int = 4 * MiB
    upload_idle_seconds: float = 24 * 3600.0
    disk_threads: int = 8
    log_level: str = "info"
    access_log: bool = False
    log_format: str = "text"  # or "json": one object per line (node/cli.py)
    # The Raft group (see README, "Running a cluster").
    raft: str | None = None  # HOST:PORT of this node's Raft transport; default port + 1000
    # HOST:PORT of this node's chunk data plane (node/cluster/data_plane.py); default port + 2000
    data_listen: str | None = None
    advertise_host: str | None = None  # host peers and clients reach; default the listen host
    peers: str = ""  # bootstrap members: ID=RAFTHOST:PORT,… (this node may be listed too)
    join: str | None = None  # URL of a member to ask to add this node
    secret_file: Path | None = None  # cluster secret; default DATA/secret, created if missing
    zone: str = "default"
    consistency: str = "local"  # or "linearizable": every metadata read takes a barrier
    propose_timeout: float = 5.0
    snapshot_every: int = 10_000
    snapshot_bytes: int = 64 * MiB  # applied entry data in the log that makes a snapshot due
    max_uncommitted_bytes: int = 64 * MiB  # entry data a leader holds uncommitted before 503
    raft_queue_bytes: int = 64 * MiB  # frames queued for one peer before new ones are dropped
    tick_ms: int = 100
    # Chunks across peers.
    replication: int = 2  # R: holders of each chunk (capped at the member count)
    write_quorum: int = 0  # W: holders that must have a chunk before a push succeeds; 0 = R
    cache_bytes: int = -1  # room for chunks fetched but not owned; -1 = 10% of free disk
    fetch_window: int = 4  # chunks fetched ahead while a blob streams out
    transfer_concurrency: int = 8  # chunks moving to or from peers at once per request
    # HTTP admission (see README, "Configuration"): past a cap, 503 with Retry-After.
    max_connections: int = 512  # client connections held open at once
    max_inflight_requests: int = 256  # client requests being served at once
    body_read_timeout: float = 60.0  # seconds a request body may send nothing
    body_min_rate: int = 1024  # bytes/s a body must average over each body_read_timeout; 0: off
    # Upload relays, sessions and disk (see node/cluster/forward.py, node/storage/spool.py).
    max_relays_per_peer: int = 64  # client requests relayed to one peer at once; then 503
    relay_idle_seconds: float = 30.0  # a relay waiting this long for a byte either way ends
    max_upload_sessions: int = 1000  # open upload sessions on this node; then 429
    max_upload_sessions_per_repo: int = 100  # open upload sessions of one repository; then 429
    min_free_bytes: int = 1 << 30  # free disk a push may not go below; then 507
    # Scrub (node/cluster/scrub.py): stored chunks re-read and checked in the background.
    scrub_bytes_per_second: int = 16 * MiB  # 0 turns the scrub off
    scrub_interval_seconds: float = 86400.0  # a pass starts this long after the previous one
    abandoned_chunk_grace_seconds: float = 600.0  # a chunk put this recently is never dropped
    # Repair (node/cluster/repair.py): owned chunks fetched, unowned copies dropped.
    repair_bytes_per_second: int = 32 * MiB  # fetched by repair; 0: no limit
    repair_interval_seconds: float = 600.0  # between passes when nothing changes
    # Garbage collection (node/cluster/gc.py): the leader collects every gc_interval
    # seconds (0: only by hand, `flotilla gc run`), sparing blobs linked within gc_grace.
    gc_interval: float = 86400.0
    gc_grace: float = 3600.0
    gc_sweep_chunks_per_second: int = 20_000  # chunks a sweep examines; 0: no limit
    # Retention (node/cluster/retention.py): the leader applies the policies this often.
    retention_interval_seconds: float = 3600.0  # 0 turns scheduled retention off
    # Access control (node/access/; see README, "Access control").
    auth: str | None = None  # none, basic or token; unset: none, and only on loopback
    auth_service: str = "flotilla"  # the `service` tokens are issued for (same on every node)
    auth_realm: str | None = None  # the token endpoint's URL in challenges; default: as asked
    token_ttl: int = 300  # seconds an access token lives
    refresh_token_ttl: int = 30 * 86400  # seconds a refresh token (docker login) lives
    login_failures: int = 10  # failed logins per client address in login_failure_window
    login_failure_window: float = 60.0  # seconds; past the limit, 429 until the window moves
    audit_log: Path | None = None  # JSON lines of what callers did; default DATA/audit.log
    # TLS (node/tls.py, node/cluster/cluster_tls.py): the client port serves HTTPS with
    # this PEM certificate (chain) and key, both or neither, re-read on SIGHUP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Encryption between nodes: "on", "off", or "auto" (on exactly when tls_cert is
    # set). Every node of a cluster must use the same.
    internal_tls: str = "auto"

    @property
    def auth_mode(self) -> str:
        return self.auth or "none"

    @property
    def listens_on_loopback(self) -> bool:
        host = self.host.strip("[]")
        return host in ("localhost", "::1") or host.startswith("127.")

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def raft_listen(self) -> str:
        if self.raft:
            return self.raft
        return f"{self.host}:{self.port + RAFT_PORT_OFFSET if self.port else 0}"

    @property
    def data_plane_listen(self) -> str:
        """Where the chunk data plane listens: `data_listen`, else the HTTP port + 2000
        (an ephemeral port when the HTTP port is)."""
        if self.data_listen:
            return self.data_listen
        return f"{self.host}:{self.port + DATA_PLANE_PORT_OFFSET if self.port else 0}"

    @property
    def internal_tls_enabled(self) -> bool:
        """Whether Raft and the data plane are encrypted (the peer API shares the client
        port, so it speaks TLS whenever that port does)."""
        if self.internal_tls == "auto":
            return self.tls_cert is not None
        return self.internal_tls == "on"

    def peer_map(self) -> dict[str, str]:
        """The bootstrap members, id → Raft address."""
        peers = {}
        for item in filter(None, (p.strip() for p in self.peers.split(","))):
            node_id, sep, address = item.partition("=")
            if not sep or not NODE_ID_RE.fullmatch(node_id) or ":" not in address:
                raise ConfigError(f"peers: {item!r} is not ID=HOST:PORT")
            peers[node_id] = address
        return peers

    def validated(self) -> Config:
        if not NODE_ID_RE.fullmatch(self.node_id):
            raise ConfigError(f"node_id {self.node_id!r}: use 1-64 of A-Z a-z 0-9 _ -")
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"listen {self.listen!r}: expected HOST:PORT")
        if self.data_listen is not None:
            data_host, _, data_port = self.data_listen.rpartition(":")
            if not data_host or not data_port.isdigit() or not 0 <= int(data_port) < 65536:
                raise ConfigError(f"data_listen {self.data_listen!r}: expected HOST:PORT")
        elif self.port + DATA_PLANE_PORT_OFFSET >= 65536:
            raise ConfigError(f"listen port {self.port} leaves no default data plane port "
                              "(port + 2000): set data_listen")
        if self.chunk_size < 64 * 1024 or self.chunk_size > 256 * MiB:
            raise ConfigError("chunk_size must be between 64 KiB and 256 MiB")
        if not 1024 <= self.max_manifest_bytes <= MAX_MANIFEST_LIMIT:
            raise ConfigError("max_manifest_bytes must be between 1 KiB and 16 MiB")
        if self.disk_threads < 1:
            raise ConfigError("disk_threads must be at least 1")
        if self.log_format not in ("text", "json"):
            raise ConfigError('log_format must be "text" or "json"')
        if self.consistency not in ("local", "linearizable"):
            raise ConfigError('consistency must be "local" or "linearizable"')
        if self.propose_timeout <= 0 or self.tick_ms < 1 or self.snapshot_every < 1:
            raise ConfigError("propose_timeout, tick_ms and snapshot_every must be positive")
        if min(self.snapshot_bytes, self.max_uncommitted_bytes, self.raft_queue_bytes) < MiB:
            raise ConfigError(
                "snapshot_bytes, max_uncommitted_bytes and raft_queue_bytes must be at least 1 MiB"
            )
        if self.replication < 1 or self.write_quorum < 0:
            raise ConfigError("replication must be at least 1 and write_quorum not negative")
        if self.fetch_window < 1 or self.transfer_concurrency < 1:
            raise ConfigError("fetch_window and transfer_concurrency must be at least 1")
        if self.max_connections < 1 or self.max_inflight_requests < 1:
            raise ConfigError("max_connections and max_inflight_requests must be at least 1")
        if self.body_read_timeout <= 0 or self.body_min_rate < 0:
            raise ConfigError("body_read_timeout must be positive and body_min_rate not negative")
        if self.max_relays_per_peer < 1 or self.relay_idle_seconds <= 0:
            raise ConfigError("max_relays_per_peer and relay_idle_seconds must be positive")
        if self.max_upload_sessions < 1 or self.max_upload_sessions_per_repo < 1:
            raise ConfigError(
                "max_upload_sessions and max_upload_sessions_per_repo must be positive"
            )
        if self.min_free_bytes < 0:
            raise ConfigError("min_free_bytes must not be negative")
        if self.scrub_bytes_per_second < 0 or self.scrub_interval_seconds <= 0:
            raise ConfigError(
                "scrub_bytes_per_second must not be negative and scrub_interval_seconds positive"
            )
        if self.repair_bytes_per_second < 0 or self.repair_interval_seconds <= 0:
            raise ConfigError(
                "repair_bytes_per_second must not be negative and repair_interval_seconds positive"
            )
        if self.retention_interval_seconds < 0:
            raise ConfigError("retention_interval_seconds must not be negative")
        if self.abandoned_chunk_grace_seconds <= 0:
            raise ConfigError("abandoned_chunk_grace_seconds must be positive")
        if self.gc_interval < 0 or self.gc_grace < 0 or self.gc_sweep_chunks_per_second < 0:
            raise ConfigError("gc_interval, gc_grace and gc_sweep_chunks_per_second must not "
                              "be negative")
        if self.auth not in (None, "none", "basic", "token"):
            raise ConfigError('auth must be "none", "basic" or "token"')
        if self.auth is None and not self.listens_on_loopback:
            raise ConfigError(
                f"the client API would listen on {self.listen} with no access control: "
                'set auth = "token" or "basic" (see README, "Access control"), or '
                'auth = "none" to run an open registry there on purpose'
            )
        if self.token_ttl < 10 or self.refresh_token_ttl < self.token_ttl:
            raise ConfigError("token_ttl must be at least 10 s and refresh_token_ttl at least that")
        if self.login_failures < 1 or self.login_failure_window <= 0:
            raise ConfigError("login_failures and login_failure_window must be positive")
        if not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", self.auth_service):
            raise ConfigError("auth_service: 1-128 of A-Z a-z 0-9 . _ : -")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: set both or neither")
        if self.internal_tls not in ("auto", "on", "off"):
            raise ConfigError('internal_tls must be "auto", "on" or "off"')
        if self.internal_tls == "on" and self.tls_cert is None:
            raise ConfigError("internal_tls on needs tls_cert and tls_key: the peer API "
                              "shares the client port, which then serves TLS")
        if self.join and self.peers:
            raise ConfigError("a joining node learns its peers from the cluster: drop peers")
        self.peer_map()
        return self


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in ("Path", Path, "Path | None"):
            return Path(value)
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("bool", bool):
            if isinstance(value, bool):
                return value
            return str(value).lower() in ("1", "true", "yes", "on")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _apply(config: Config, values: Mapping[str, Any], source: str) -> Config:
    known = {f.name: f.type for f in fields(Config)}
    changes = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        changes[name] = _coerce(name, known[name], value)
    return replace(config, **changes)


def load_config(
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from its sources, in order of precedence."""
    config = Config()
    if file is not None:
        try:
            with open(file, "rb") as f:
                config = _apply(config, tomllib.load(f), str(file))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
    env = os.environ if env is None else env
    from_env = {
        f.name: env[f"FLOTILLA_{f.name.upper()}"]
        for f in fields(Config)
        if f"FLOTILLA_{f.name.upper()}" in env
    }
    config = _apply(config, from_env, "environment")
    config = _apply(config, {k: v for k, v in (flags or {}).items() if v is not None}, "flags")
    return config.validated()
