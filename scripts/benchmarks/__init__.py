"""Benchmarks of Flotilla against CNCF Distribution, run by `scripts/bench`.

Each subcommand is one module with a `run(args) -> int`: `single` (one node
versus one Distribution), `raft` (tag-write latency and commits/s of a 3-node
Raft group), `cluster` (3 nodes with R=2 versus one Distribution), `fanout`
(N hosts in network namespaces pulling at once), `repair` (restoring R after
a node is lost) and `frames`. Shared pieces live in their own modules:
`processes` starts and stops the servers, `netns` builds the namespaces and
links, `pull_worker` is one pull in its own process, `payload` makes the
random blobs, `client` speaks the upload and pull flows, `table` prints the
results.
"""
