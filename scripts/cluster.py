"""Run a local cluster of Flotilla nodes in the foreground (used by `scripts/cluster`).

Node k serves HTTP on 127.0.0.1:(5000+k) and Raft on 127.0.0.1:(6000+k), with
its data in ./.flotilla/node-k/; all share the cluster secret in
./.flotilla/secret (generated on first use). Every node is a child process;
Ctrl-C or SIGTERM stops them all, and if one node dies the others are stopped
too so nothing is left running unseen.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__)
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument("--data", type=Path, default=ROOT / ".flotilla",
                        help="parent folder of the nodes' data (default ./.flotilla)")
    args = parser.parse_args()
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if args.nodes > 99:
        parser.error("--nodes: at most 99 on one machine")
    sys.path.insert(0, str(ROOT))
    from node.cluster.auth import load_or_create_secret

    secret = args.data / "secret"
    load_or_create_secret(secret)
    peers = ",".join(f"n{k}=127.0.0.1:{6000 + k}" for k in range(1, args.nodes + 1))
    procs: list[subprocess.Popen[bytes]] = []
    for k in range(1, args.nodes + 1):
        listen, raft = f"127.0.0.1:{5000 + k}", f"127.0.0.1:{6000 + k}"
        data = args.data / f"node-{k}"
        cmd = [sys.executable, "-m", "node.cli", "serve", "--data", str(data),
               "--listen", listen, "--raft", raft, "--node-id", f"n{k}",
               "--peers", peers, "--secret-file", str(secret)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT))
        print(f"node n{k}: http://{listen}  raft {raft}  data {data}", flush=True)
    print(f"cluster secret: {secret}  (flotilla cluster status --url "
          f"http://127.0.0.1:5001 --secret-file {secret})", flush=True)

    def stop(*_: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    stop()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return max((p.returncode or 0) for p in procs)


if __name__ == "__main__":
    raise SystemExit(main())
