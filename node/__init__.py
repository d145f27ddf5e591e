"""One registry node: the OCI API over HTTP, this node's disk, its peers (README, "Layout")."""
