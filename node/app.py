"""Builds the Quart-trio application and runs a node on Hypercorn.

`serve()` is a node's whole life: it prepares the data directory, opens the
metadata engine, and runs the HTTP server and the background jobs as tasks
of one root nursery; cancelling that nursery stops the node.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from consensus.engine import Engine, RaftSettings, StatePaths, open_engine
from node.access.audit import AuditLog
from node.access.callers import SECRET, Caller
from node.access.gate import Gate, GateSettings
from node.access.throttle import LoginThrottle
from node.api.access import caller_of_request, realm
from node.api.admin import admin
from node.api.admission import Admission, AdmittedConfig, cap_connections
from node.api.errors import API_VERSION, error_response
from node.api.request_bodies import APP_QUEUE, BodyPace, BoundedHTTPConnection, BoundedRequest
from node.api.routes import dispatch
from node.api.token import token
from node.cluster.auth import Verifier, load_or_create_secret
from node.cluster.blob_reader import BlobReader
from node.cluster.blob_writer import BlobWriter
from node.cluster.chunk_fetch import ChunkFetcher
from node.cluster.cluster_tls import cluster_tls
from node.cluster.data_plane import DataPlaneServer
from node.cluster.drain import DrainFinisher
from node.cluster.gc import GarbageCollector
from node.cluster.join import join_cluster
from node.cluster.peer_api import PeerAPI
from node.cluster.peers import Peers
from node.cluster.repair import Repairer
from node.cluster.replication import ReplicationReport
from node.cluster.retention import RetentionSchedule
from node.cluster.scrub import Scrubber
from node.config import Config
from node.metrics import CONTENT_TYPE, NodeMetrics
from node.readiness import Readiness
from node.request_log import RequestObserver, current_node, current_request_id
from node.services import NodeServices
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.layout import DataDir
from node.storage.spool import Spool
from node.tls import ServerTLS
from node.tuning import tune_process

log = logging.getLogger("flotilla")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class RegistryApp(QuartTrio):
    asgi_http_class = BoundedHTTPConnection
    request_class = BoundedRequest
    admission: Admission | None = None  # the caps its connection class enforces
    body_pace: BodyPace | None = None  # how slowly a request body may arrive
    metrics: NodeMetrics | None = None  # what GET /metrics shows; fed by RequestObserver


def create_app(rt: NodeServices) -> RegistryApp:
    app = RegistryApp("flotilla")
    app.admission = Admission(
        max_connections=rt.config.max_connections,
        max_requests=rt.config.max_inflight_requests,
    )
    app.body_pace = BodyPace(rt.config.body_read_timeout, rt.config.body_min_rate)
    metrics = app.metrics = NodeMetrics(rt)
    app.config.update(
        MAX_CONTENT_LENGTH=None,  # uploads stream; manifests are bounded by their handler
        BODY_TIMEOUT=None,  # the body's pace is checked as it streams (request_bodies.py)
        RESPONSE_TIMEOUT=None,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    peer_api = PeerAPI(
        config=rt.config,
        engine=rt.engine,
        chunks=rt.chunks,
        spool=rt.spool,
        peers=rt.peers,
        verifier=rt.peer_auth,
        counters=rt.counters,
        on_disk=rt.on_disk,
        replication_report=rt.replication_report,
        scrub=rt.scrubber.status,
        repair=rt.repairer.status,
        gc=rt.gc.status,
    )

    readiness = Readiness(rt.config.node_id, rt.engine, rt.data.tmp, rt.on_disk, rt.chunks.floor)

    @app.route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> Response:
        body = b"" if request.method == "HEAD" else b'{"live": true}'
        return Response(body, status=200, content_type="application/json")

    @app.route("/readyz", methods=["GET", "HEAD"])
    async def readyz() -> Response:
        ready, report = await readiness.check()
        body = b"" if request.method == "HEAD" else json.dumps(report).encode()
        return Response(body, status=200 if ready else 503, content_type="application/json")

    @app.route("/metrics", methods=["GET"])
    async def metrics_page() -> Response:
        return Response(metrics.exposition(), status=200, content_type=CONTENT_TYPE)

    @app.route("/v2", methods=["GET", "HEAD"])
    @app.route("/v2/", methods=["GET", "HEAD"])
    async def api_base() -> Response:
        rt.gate.authorize_login(await caller_of_request(rt), realm())
        body = b"" if request.method == "HEAD" else b"{}"
        return Response(body, status=200, content_type="application/json", headers=API_VERSION)

    @app.route("/v2/<path:rest>", methods=ALL_METHODS)
    async def api(rest: str) -> Response:
        response = await dispatch(rt, request.method, rest)
        response.headers.update(API_VERSION)
        return response

    @app.route("/token", methods=["GET", "POST"])
    async def token_endpoint() -> Response:
        return await token(rt)

    @app.route("/admin/<path:rest>", methods=ALL_METHODS)
    async def admin_api(rest: str) -> Response:
        return await admin(rt, rest)

    @app.route("/_cluster/<path:rest>", methods=ALL_METHODS)
    async def cluster(rest: str) -> Response:
        return await peer_api.dispatch(request.method, rest)

    # Every error, ours, a lower layer's or the framework's, takes one path.
    @app.errorhandler(HTTPException)
    async def on_http_exception(exc: HTTPException) -> Response:
        return error_response(exc)

    @app.errorhandler(Exception)
    async def on_error(exc: Exception) -> Response:
        return error_response(exc)

    return app


def build_services(config: Config, engine: Engine | None = None) -> NodeServices:
    data = DataDir(config.data)
    data.prepare()
    secret = load_or_create_secret(config.secret_file or data.secret)
    # The peer API shares the client port, so it speaks TLS whenever that port does,
    # with the cluster's certificate; internal_tls decides for Raft and the data plane.
    internal = cluster_tls(secret, config.node_id) if config.tls_cert is not None else None
    encrypted = internal if config.internal_tls_enabled else None
    if engine is None:
        settings = RaftSettings(
            node_id=config.node_id,
            raft_listen=config.raft_listen,
            advertise_host=config.advertise_host or config.host,
            secret=secret,
            peers=config.peer_map(),
            join=config.join is not None,
            zone=config.zone,
            tick_seconds=config.tick_ms / 1000,
            snapshot_every=config.snapshot_every,
            snapshot_bytes=config.snapshot_bytes,
            max_uncommitted_bytes=config.max_uncommitted_bytes,
            queue_bytes=config.raft_queue_bytes,
            propose_timeout=config.propose_timeout,
            linearizable_reads=config.consistency == "linearizable",
            server_ssl=encrypted.mutual_server_context() if encrypted else None,
            client_ssl=encrypted.mutual_client_context() if encrypted else None,
        )
        paths = StatePaths(
            db=data.state_db,
            wal=data.raft_wal,
            snapshots=data.raft_snapshots,
            incoming=data.raft_incoming,
        )
        engine = open_engine(paths, settings)
    cache_bytes = config.cache_bytes
    if cache_bytes < 0:
        cache_bytes = shutil.disk_usage(data.root).free // 10
    chunks = ChunkStore(
        data, cache_bytes=cache_bytes, min_free_bytes=config.min_free_bytes,
        grace_seconds=config.abandoned_chunk_grace_seconds,
    )
    disk = DiskThreads(config.disk_threads)
    counters: Counter[str] = Counter()
    peers = Peers(
        engine, node_id=config.node_id, zone=config.zone, secret=secret,
        max_relays_per_peer=config.max_relays_per_peer,
        relay_idle_seconds=config.relay_idle_seconds, tls=internal,
        data_ssl=encrypted.mutual_client_context() if encrypted else None,
    )
    spool = Spool(
        data, node_id=config.node_id, chunk_size=config.chunk_size, threads=disk,
        max_sessions=config.max_upload_sessions,
        max_per_repo=config.max_upload_sessions_per_repo, min_free_bytes=config.min_free_bytes,
    )
    fetcher = ChunkFetcher(config, chunks, peers, disk, counters)
    repairer = Repairer(
        config, engine, chunks, peers, fetcher, disk,
        bytes_per_second=config.repair_bytes_per_second,
        interval_seconds=config.repair_interval_seconds,
    )
    gate = Gate(
        engine,
        GateSettings(
            mode=config.auth_mode, service=config.auth_service, token_ttl=config.token_ttl,
            refresh_ttl=config.refresh_token_ttl, realm=config.auth_realm,
        ),
        AuditLog(config.audit_log or data.root / "audit.log", config.node_id,
                 request_id=current_request_id),
        throttle=LoginThrottle(config.login_failures, config.login_failure_window),
        counters=counters,
    )
    scheduled = Caller(SECRET, "gc_interval", "")  # the audit log's actor of a scheduled run
    return NodeServices(
        config=config,
        data=data,
        chunks=chunks,
        spool=spool,
        engine=engine,
        disk=disk,
        secret=secret,
        peer_auth=Verifier(secret),
        peers=peers,
        blob_writer=BlobWriter(
            config=config, spool=spool, chunks=chunks, peers=peers, disk=disk,
            engine=engine, counters=counters,
        ),
        blob_reader=BlobReader(fetcher, window=config.fetch_window),
        replication_report=ReplicationReport(
            config, engine, peers, chunks, disk, live=repairer.live_report
        ),
        scrubber=Scrubber(
            chunks, fetcher, disk, counters,
            bytes_per_second=config.scrub_bytes_per_second,
            interval_seconds=config.scrub_interval_seconds,
        ),
        repairer=repairer,
        gate=gate,
        gc=GarbageCollector(
            config, engine, chunks, data, disk,
            on_collected=lambda detail: gate.audit.record("gc_collected", scheduled, **detail),
        ),
        counters=counters,
        cluster_tls=internal,
    )


def hypercorn_config(
    config: Config, admission: Admission | None = None, tls: ServerTLS | None = None
) -> HypercornConfig:
    hc = AdmittedConfig()
    hc.admission = admission
    hc.tls_context = tls.listener if tls is not None else None
    hc.ssl_handshake_timeout = 10  # a client that opens a connection and says nothing
    hc.bind = [config.listen]
    # The access line is node.request_log's: Hypercorn's would log query strings.
    hc.accesslog = None
    hc.errorlog = logging.getLogger("flotilla.http")
    hc.keep_alive_timeout = 75
    hc.graceful_timeout = 5
    hc.h11_max_incomplete_size = 64 * 1024
    hc.max_app_queue_size = APP_QUEUE
    return hc


@dataclass(frozen=True)
class RunningNode:
    """What `nursery.start(serve, …)` hands back: the node, its URL, and its off switch."""

    services: NodeServices
    url: str
    cancel_scope: trio.CancelScope
    tls: ServerTLS | None = None  # the client port's certificate, when it serves TLS

    async def reload_tls(self) -> None:
        """Read the TLS certificate and key again (SIGHUP); a bad pair leaves the old."""
        if self.tls is None:
            log.info("nothing to reload: this node serves no TLS certificate")
            return
        await trio.to_thread.run_sync(self.tls.reload)


async def serve(
    config: Config,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node until cancelled; its worker threads stop with it."""
    current_node.set(config.node_id)  # every task of this node inherits it (log records)
    tune_process()
    cap_connections()
    rt = build_services(config)
    app = create_app(rt)
    try:
        tls = None
        if config.tls_cert is not None and config.tls_key is not None:
            tls = ServerTLS(
                config.tls_cert, config.tls_key,
                rt.cluster_tls.peer_api_context() if rt.cluster_tls else None,
            )
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.engine.run)
            data_plane = DataPlaneServer(
                rt.chunks, rt.disk, rt.secret, config.data_plane_listen, counters=rt.counters,
                advertise_host=config.advertise_host or config.host,
                ssl_context=(rt.cluster_tls.mutual_server_context()
                             if rt.cluster_tls and config.internal_tls_enabled else None),
            )
            await nursery.start(data_plane.run)
            rt.peers.data_address = data_plane.address
            await nursery.start(rt.peers.run)
            await nursery.start(rt.blob_writer.run)
            await nursery.start(rt.scrubber.run)
            await nursery.start(rt.repairer.run)
            await nursery.start(rt.gc.run)
            await nursery.start(RetentionSchedule(config, rt.engine, rt.gate.audit).run)
            await nursery.start(
                DrainFinisher(config.node_id, rt.engine, rt.peers, rt.repairer.status.as_dict).run
            )
            assert app.metrics is not None
            observed = RequestObserver(app, app.metrics.observe_request, access=config.access_log)
            binds = await nursery.start(
                hypercorn_serve, observed, hypercorn_config(config, app.admission, tls)
            )
            url = binds[0] if binds else f"http://{config.listen}"
            port = url.rsplit(":", 1)[1]
            rt.engine.http_advertise = f"{config.advertise_host or config.host}:{port}"
            if config.join:
                nursery.start_soon(
                    partial(
                        join_cluster, rt.engine, node_id=config.node_id, zone=config.zone,
                        secret=rt.secret, url=config.join,
                    )
                )
            log.info(
                "node %s serving on %s (raft %s, data plane %s); members: %s", config.node_id,
                url, rt.engine.raft_advertise or config.raft_listen, data_plane.address,
                ", ".join(sorted(rt.engine.voters())) or "none yet (waiting to be added)",
            )
            task_status.started(RunningNode(rt, url, nursery.cancel_scope, tls))
    finally:
        try:
            rt.engine.close()
        finally:
            rt.gate.audit.close()
            rt.disk.close()
