"""How many copies of a chunk the cluster keeps (R) and how many a push waits for (W).

Both come from the configuration, capped by the membership as it is: a
cluster of two cannot keep three copies, and a push can never wait for more
holders than there are copies. Placement, pulls and the replication report
all take their numbers from here, so they agree.
"""

from __future__ import annotations

from node.config import Config


def replication_factors(config: Config, members: int) -> tuple[int, int]:
    """(R, W): R capped at the member count, W at R."""
    r = max(1, min(config.replication, members))
    w = max(1, min(config.write_quorum or r, r))
    return r, w
