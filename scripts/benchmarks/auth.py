"""`scripts/bench auth`: what access control costs a request, against Distribution's.

One manifest is pushed to each server, then the same GET of it is sent
`--requests` times from `--concurrency` client threads, per way of being let
in: Flotilla open (auth none), Flotilla with a bearer token (auth token: the
Docker flow, an ES256 signature checked on every request), Flotilla with
Basic credentials on every request (argon2id, verified once a minute, then
by a keyed digest); CNCF Distribution open, and with htpasswd (bcrypt cost
5, what `htpasswd -Bbn` writes, checked on every request). It prints
requests/s, p50/p99 latency and the server's CPU ms per 1,000 requests, and
the ratios of each Flotilla mode to Distribution open and with htpasswd.
Everything shares this machine's cores, clients included: the ratios are the
figure to read, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx

from scripts.benchmarks import processes
from scripts.benchmarks.processes import Server
from scripts.benchmarks.table import render

REPO = "bench/app"
USER, PASSWORD = "bench", "bench-password-1"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=3000,
                        help="GETs per way of being let in (default 3000)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="client threads (default 8)")


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _push_image(url: str, headers: dict[str, str]) -> str:
    """A config, a layer and a manifest naming them, tagged v1; the manifest's path."""
    with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as client:
        descriptors = []
        for data, media in ((b'{"architecture":"amd64","os":"linux"}',
                             "application/vnd.oci.image.config.v1+json"),
                            (os.urandom(4096), "application/vnd.oci.image.layer.v1.tar")):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            # POST, then PUT with the bytes: Distribution takes no monolithic POST.
            started = client.post(f"/v2/{REPO}/blobs/uploads/")
            started.raise_for_status()
            location = client.base_url.join(started.headers["Location"])
            client.put(location.copy_merge_params({"digest": digest}), content=data,
                       headers={"Content-Type": "application/octet-stream"}).raise_for_status()
            descriptors.append({"mediaType": media, "digest": digest, "size": len(data)})
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                               "config": descriptors[0], "layers": descriptors[1:]}).encode()
        response = client.put(f"/v2/{REPO}/manifests/v1", content=manifest,
                              headers={"Content-Type": MANIFEST_TYPE})
        if response.status_code != 201:
            raise RuntimeError(f"manifest push to {url}: {response.status_code} {response.text}")
    return f"/v2/{REPO}/manifests/v1"


def _hammer(server: Server, path: str, headers: dict[str, str], requests: int,
            concurrency: int) -> dict[str, float]:
    """`requests` GETs of `path` from `concurrency` threads: rate, latencies, server CPU."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    failures: list[int] = []

    def worker() -> None:
        mine: list[float] = []
        with httpx.Client(base_url=server.url, headers=headers, timeout=30,
                          trust_env=False) as client:
            client.get(path)  # warm the connection (and any verified-credential cache)
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                started = time.perf_counter()
                response = client.get(path, headers={"Accept": MANIFEST_TYPE})
                mine.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(response.status_code)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu_before = processes.cpu_seconds(server.pid)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = processes.cpu_seconds(server.pid) - cpu_before
    if failures:
        raise RuntimeError(f"{server.name}: {len(failures)} GETs failed, e.g. {failures[0]}")
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "cpu_ms_per_1000": cpu / len(latencies) * 1_000_000,
    }


@contextlib.contextmanager
def _flotilla(workdir: Path, auth: str) -> Iterator[Server]:
    port = processes.free_port()
    data = workdir / f"flotilla-{auth}"
    argv = processes._serve_argv(data, port, "--auth", auth,
                                 "--data-listen", f"127.0.0.1:{processes.free_port()}")
    with processes._running(f"Flotilla ({auth})", argv, f"http://127.0.0.1:{port}",
                            workdir / f"flotilla-{auth}.log") as server:
        _wait_ready(server.url)
        if auth != "none":
            subprocess.run(
                [sys.executable, "-m", "node.cli", "user", "add", USER, "--role", "writer",
                 "--url", server.url, "--secret-file", str(data / "secret"),
                 "--password-stdin"],
                input=PASSWORD + "\n", text=True, check=True, cwd=processes.REPO_ROOT,
                capture_output=True,
            )
        yield server


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    """Until /readyz says the node has a leader and can write."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/readyz", trust_env=False).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout:.0f} s")
        time.sleep(0.1)


def _token(server: Server) -> str:
    response = httpx.get(f"{server.url}/token", trust_env=False, headers=_basic(USER, PASSWORD),
                         params={"service": "flotilla",
                                 "scope": f"repository:{REPO}:pull"})
    response.raise_for_status()
    return response.json()["token"]


@contextlib.contextmanager
def _distribution_htpasswd(workdir: Path) -> Iterator[Server]:
    """Distribution with htpasswd auth: the config gains an `auth` section."""
    folder = workdir / "dist-auth"
    folder.mkdir()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()
    (folder / "htpasswd").write_text(f"{USER}:$2y${hashed[4:]}\n")
    port = processes.free_port()
    root = folder / "data"
    root.mkdir()
    config = folder / "distribution.yml"
    config.write_text(
        processes.DISTRIBUTION_CONFIG.format(root=root, host="127.0.0.1", port=port)
        + f"auth:\n  htpasswd:\n    realm: bench\n    path: {folder / 'htpasswd'}\n"
    )
    with processes._running("Distribution (htpasswd)", [processes.DISTRIBUTION_BINARY,
                            "serve", str(config)], f"http://127.0.0.1:{port}",
                            folder / "distribution.log") as server:
        yield server


def run(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-auth-") as tmp:
        workdir = Path(tmp)
        basic = _basic(USER, PASSWORD)
        with _flotilla(workdir, "none") as server:
            path = _push_image(server.url, {})
            results["Flotilla, open"] = _hammer(server, path, {}, args.requests,
                                                args.concurrency)
        with _flotilla(workdir, "token") as server:
            path = _push_image(server.url, basic)
            bearer = {"Authorization": f"Bearer {_token(server)}"}
            results["Flotilla, bearer token"] = _hammer(server, path, bearer, args.requests,
                                                        args.concurrency)
            results["Flotilla, Basic each request"] = _hammer(server, path, basic,
                                                              args.requests, args.concurrency)
        with processes.distribution(workdir) as server:
            path = _push_image(server.url, {})
            results["Distribution, open"] = _hammer(server, path, {}, args.requests,
                                                    args.concurrency)
        with _distribution_htpasswd(workdir) as server:
            path = _push_image(server.url, basic)
            results["Distribution, htpasswd"] = _hammer(server, path, basic, args.requests,
                                                        args.concurrency)
    rows = [[name, f"{r['rate']:.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
             f"{r['cpu_ms_per_1000']:.0f}"] for name, r in results.items()]
    print(f"GET of one manifest, {args.requests} requests, {args.concurrency} client threads, "
          f"{os.cpu_count()} CPUs shared by servers and clients")
    print(render(["who is let in", "req/s", "p50 ms", "p99 ms", "server CPU ms/1000 req"],
                 rows))
    open_rate = results["Distribution, open"]["rate"]
    auth_rate = results["Distribution, htpasswd"]["rate"]
    for name in ("Flotilla, open", "Flotilla, bearer token", "Flotilla, Basic each request"):
        rate = results[name]["rate"]
        print(f"{name}: {rate / open_rate:.2f} of Distribution open, "
              f"{rate / auth_rate:.2f} of Distribution with htpasswd")
    token_cost = (results["Flotilla, bearer token"]["cpu_ms_per_1000"]
                  - results["Flotilla, open"]["cpu_ms_per_1000"])
    print(f"a bearer token costs Flotilla {token_cost / 1000:.2f} CPU ms per request")
    return 0
