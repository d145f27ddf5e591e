"""The chaos harness behind `scripts/chaos`: a cluster in network namespaces
under scheduled faults, a concurrent workload whose every operation is recorded
in a history (`history`), and the checker that judges the history (`checker`):
per-tag linearizability, lost acknowledged writes, and blobs that did not pull
back byte-identical."""
