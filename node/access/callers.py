"""Who is asking: what authentication established about one request's caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ANONYMOUS, USER, ROBOT, PEER = "anonymous", "user", "robot", "peer"
SECRET = "secret"  # an operator proving the cluster secret (admin commands)


@dataclass(frozen=True, slots=True)
class Caller:
    """`kind` is anonymous, user, robot or peer (a node of this cluster, proven by the
    cluster secret: an upload relayed by the node that already checked its client).
    `token_access` is set when a bearer token authenticated the request: the caller may
    then do exactly what the token lists, whatever its grants say meanwhile."""

    kind: str
    name: str
    address: str
    token_access: Mapping[str, frozenset[str]] | None = None

    @property
    def is_account(self) -> bool:
        return self.kind in (USER, ROBOT)
