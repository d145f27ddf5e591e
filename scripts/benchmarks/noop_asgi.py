"""Hypercorn's trio worker serving an ASGI app that does nothing: the HTTP floor.

`scripts/bench raft` runs it beside the nodes and drives it exactly as it
drives the leader, so the CPU one request costs the server that every node
is built on is measured in the same run as the commits. Every request gets
200 with a two-byte JSON body; the server and the process are configured as
a node's are (`node.app.hypercorn_config`, `node.tuning`), access log off.

    python -m scripts.benchmarks.noop_asgi 127.0.0.1:PORT
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio
from hypercorn.trio import serve

from node.app import hypercorn_config
from node.config import Config
from node.tuning import tune_process

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    config = Config(data=Path("/nonexistent"), listen=sys.argv[1], access_log=False)
    tune_process()
    trio.run(serve, app, hypercorn_config(config))


if __name__ == "__main__":
    main()
