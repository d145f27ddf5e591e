"""What `GET /metrics` shows: this node's numbers in the Prometheus text format.

Each node has its own `CollectorRegistry` (several nodes may share a process,
as in the tests; the library's global registry is never used). Requests are
counted as they finish (`NodeMetrics.observe_request`, called by
`node.request_log.RequestObserver`), labelled by route template, never by
raw path, so a client cannot grow the label set with made-up repository
names. Everything else is read at scrape time by `NodeCollector` from
objects the node keeps anyway: the engine's status and observations, the
chunk store's running counts, peer health, the repair and scrub status, the
last replication report, the spool, and the node's event counters. A
scrape reads memory only: no disk scan, no request to a peer.

Names follow Prometheus conventions: a `flotilla_` prefix, base units
(seconds, bytes), `_total` on counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from consensus.engine import Timings
from node.api.admission import PROBES
from node.api.routes import route_template
from node.services import NodeServices

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
PEER_ROUTES = frozenset(("chunks", "health", "status", "members", "leader"))
# Seconds: a probe answered from memory up to a large blob streamed out.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)


def route_of(path: str) -> str:
    """The route a request path belongs to, from a bounded set of names."""
    if path in PROBES:
        return "/v2/" if path == "/v2" else path
    if path.startswith("/v2/"):
        return route_template(path[len("/v2/"):])
    if path.startswith("/_cluster/"):
        first = path[len("/_cluster/"):].split("/", 1)[0]
        return f"/_cluster/{first if first in PEER_ROUTES else '{unknown}'}"
    return "{unknown}"


class NodeMetrics:
    """This node's registry, with the request metrics and the scrape-time collector."""

    def __init__(self, rt: NodeServices) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "flotilla_http_requests", "HTTP requests answered, by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "flotilla_http_request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.bytes_in = Counter(
            "flotilla_http_request_body_bytes", "Request body bytes received, by route",
            ["route"], registry=self.registry,
        )
        self.bytes_out = Counter(
            "flotilla_http_response_body_bytes", "Response body bytes sent, by route",
            ["route"], registry=self.registry,
        )
        self.registry.register(NodeCollector(rt))

    def observe_request(
        self, path: str, method: str, status: int, seconds: float, received: int, sent: int
    ) -> None:
        route = route_of(path)
        method = method if method in METHODS else "OTHER"
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
        if received:
            self.bytes_in.labels(route).inc(received)
        if sent:
            self.bytes_out.labels(route).inc(sent)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, timings: Timings) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in timings.cumulative()
    ]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=timings.total)


class NodeCollector(Collector):
    """Reads the node's own status objects at every scrape."""

    def __init__(self, rt: NodeServices) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        yield from self._raft()
        yield from self._chunks()
        yield from self._peers()
        yield from self._repair_and_scrub()
        yield from self._gc()
        yield from self._quotas()
        yield _gauge("flotilla_upload_sessions_open", "Upload sessions open on this node",
                     len(self.rt.spool))
        events = CounterMetricFamily(
            "flotilla_events", "Named events this node counted since start", labels=["event"]
        )
        for name, count in sorted(self.rt.counters.items()):
            events.add_metric([name], count)
        yield events

    def _quotas(self) -> Iterator[Metric]:
        """Usage and limits of every quota, as this node applied them (a few rows)."""
        families = {
            name: GaugeMetricFamily(f"flotilla_quota_{name}", doc, labels=["quota"])
            for name, doc in [
                ("used_bytes", "Bytes stored under the quota, each blob counted once"),
                ("limit_bytes", "The quota's cap on bytes (absent: no cap)"),
                ("used_repos", "Repositories under the quota"),
                ("limit_repos", "The quota's cap on repositories (absent: no cap)"),
            ]
        }
        for q in self.rt.engine.queries.quotas():
            families["used_bytes"].add_metric([q.pattern], q.used_bytes)
            families["used_repos"].add_metric([q.pattern], q.used_repos)
            if q.max_bytes is not None:
                families["limit_bytes"].add_metric([q.pattern], q.max_bytes)
            if q.max_repos is not None:
                families["limit_repos"].add_metric([q.pattern], q.max_repos)
        yield from families.values()

    def _raft(self) -> Iterator[Metric]:
        st = self.rt.engine.status()
        seen = self.rt.engine.observations()
        yield _gauge("flotilla_raft_term", "Current Raft term", st["term"])
        yield _gauge("flotilla_raft_is_leader", "1 when this node is the Raft leader",
                     1 if st["role"] == "leader" else 0)
        leader = GaugeMetricFamily("flotilla_raft_leader", "The leader this node knows of (1)",
                                   labels=["leader"])
        leader.add_metric([st["leader"] or ""], 1)
        yield leader
        yield _gauge("flotilla_raft_commit_index", "Highest log index known committed",
                     st["commit_index"])
        yield _gauge("flotilla_raft_applied_index", "Highest log index applied to the state",
                     st["applied_index"])
        yield _gauge("flotilla_raft_last_index", "Highest log index in this node's log",
                     st["last_index"])
        yield _gauge("flotilla_raft_snapshot_index", "Log index of the newest snapshot",
                     st["snapshot_index"])
        yield _gauge("flotilla_raft_log_bytes", "Entry bytes held in the Raft log",
                     st["log_bytes"])
        proposals = CounterMetricFamily(
            "flotilla_raft_proposals", "Commands this node proposed, by outcome",
            labels=["outcome"],
        )
        for outcome in ("committed", "refused", "no_quorum", "overloaded", "abandoned"):
            proposals.add_metric([outcome], seen.proposals.get(outcome, 0))
        yield proposals
        yield _histogram("flotilla_raft_proposal_duration_seconds",
                         "Time from proposing a command to its commit and apply here",
                         seen.propose_seconds)
        yield _histogram("flotilla_raft_wal_fsync_duration_seconds",
                         "Time one fsync of the Raft write-ahead log took", seen.wal_fsync_seconds)
        yield _counter("flotilla_raft_snapshots_taken", "Snapshots this node took",
                       seen.snapshots_taken)

    def _chunks(self) -> Iterator[Metric]:
        chunks, counters = self.rt.chunks, self.rt.counters
        for name, doc, gauge in [
            ("stored", "Chunks held in the owned store", chunks.stored_chunks),
            ("stored_bytes", "Bytes held in the owned store", chunks.stored_bytes),
            ("cached", "Chunks held in the cache", chunks.cached_chunks),
            ("cached_bytes", "Bytes held in the cache", chunks.cached_bytes),
        ]:
            yield _gauge(f"flotilla_chunks_{name}", doc, gauge)
        for name, doc, key in [
            ("cache_hits", "Chunk reads served from this node's disk (owned or cached)",
             "chunk_cache_hits"),
            ("cache_misses", "Chunk reads that had to fetch from a peer", "chunk_cache_misses"),
            ("peer_fetches", "Chunks fetched from peers", "chunks_fetched"),
            ("peer_fetched_bytes", "Chunk bytes fetched from peers", "bytes_fetched"),
        ]:
            yield _counter(f"flotilla_chunk_{name}", doc, counters[key])

    def _peers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("flotilla_peer_up", "1 when the peer answers its health checks",
                               labels=["peer"])
        rtt = GaugeMetricFamily("flotilla_peer_rtt_seconds",
                                "Moving average of the peer's health check round trip",
                                labels=["peer"])
        for node_id, peer in sorted(self.rt.peers.state.items()):
            up.add_metric([node_id], 1 if peer.up else 0)
            if peer.rtt is not None:
                rtt.add_metric([node_id], peer.rtt)
        yield up
        yield rtt

    def _gc(self) -> Iterator[Metric]:
        gc = self.rt.gc.status
        yield _counter("flotilla_gc_reclaimed_bytes",
                       "Chunk bytes garbage collection deleted here (stored and cached)",
                       gc.bytes_freed + gc.cached_bytes_freed)
        yield _counter("flotilla_gc_reclaimed_chunks",
                       "Chunks garbage collection deleted here (stored and cached)",
                       gc.chunks_freed + gc.cached_chunks_freed)
        yield _counter("flotilla_gc_sweeps", "Chunk sweeps run after a collection", gc.sweeps)
        yield _gauge("flotilla_gc_epoch", "Garbage collections this node has applied", gc.epoch)
        yield _gauge("flotilla_gc_swept_epoch", "The last collection whose sweep finished here",
                     gc.swept_epoch)
        if gc.last_finished is not None:
            yield _gauge("flotilla_gc_last_run_timestamp_seconds",
                         "When the last chunk sweep here finished (Unix time)", gc.last_finished)
        if gc.last_duration_seconds is not None:
            yield _gauge("flotilla_gc_last_duration_seconds",
                         "How long the last chunk sweep here took", gc.last_duration_seconds)

    def _repair_and_scrub(self) -> Iterator[Metric]:
        repair, scrub = self.rt.repairer.status, self.rt.scrubber.status
        report = self.rt.replication_report.latest()
        missing = report.get("missing", repair.owned_missing_chunks)
        owned = report.get("owned", repair.owned_chunks)
        if missing is not None:
            yield _gauge("flotilla_chunks_missing",
                         "Chunks placement gives this node that it lacks (under-replication)",
                         missing)
        if owned is not None:
            yield _gauge("flotilla_chunks_owned", "Chunks placement gives this node", owned)
        for name, doc, count in [
            ("repair_passes", "Repair passes run", repair.passes),
            ("repair_fetched_chunks", "Chunks the repair loop fetched", repair.repaired_chunks),
            ("repair_fetched_bytes", "Bytes the repair loop fetched", repair.repaired_bytes),
            ("repair_dropped_chunks", "Unowned copies the repair loop deleted",
             repair.dropped_chunks),
            ("scrub_passes", "Scrub passes run", scrub.passes),
            ("scrub_checked_bytes", "Bytes the scrub re-read", scrub.bytes_checked),
            ("scrub_damaged_chunks", "Damaged chunks the scrub found", scrub.damaged),
            ("scrub_repaired_chunks", "Damaged chunks the scrub replaced", scrub.repaired),
        ]:
            yield _counter(f"flotilla_{name}", doc, count)
