"""One pull, started on a signal: the client process of `scripts/bench fanout`.

`python -m scripts.benchmarks.pull_worker URL DIGEST SIZE`, run inside a
host's namespace. It imports everything and opens its client first, prints
`ready`, then blocks on its stdin: the benchmark writes one line to every
worker once all are ready, so the pulls start together however long each
took to start (a barrier). It pulls the blob (streamed, sha256 checked),
then prints one JSON line: the seconds from the signal to the last byte, or
the error. Its own process keeps the clients off one interpreter's lock.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from scripts.benchmarks.client import RegistryClient
from scripts.benchmarks.payload import Blob


def main(argv: list[str]) -> int:
    url, digest, size = argv[0], argv[1], int(argv[2])
    blob = Blob(Path("/dev/null"), b"", size, digest)  # pull needs only digest and size
    with RegistryClient(url) as client:
        client.http.get("/v2/")  # connection open before the start
        print("ready", flush=True)
        if not sys.stdin.readline():
            return 1  # the benchmark went away before the start
        started = time.perf_counter()
        try:
            client.pull(blob)
        except Exception as exc:  # reported to the benchmark, which stops
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            return 1
        print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
