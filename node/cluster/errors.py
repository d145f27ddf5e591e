"""What can go wrong between this node and its peers, in the cluster layer's words.

`node/api/errors.py` maps each to what a client (or a peer calling the
internal API) is told; nothing here knows HTTP status codes.
"""

from __future__ import annotations

from typing import Any


class ClusterError(Exception):
    """Something the cluster could not do for this request."""

    def __init__(self, message: str = "", **detail: Any) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)
        self.detail = detail or None


class PeerError(ClusterError):
    """A peer did not give what was asked (down, refused, or not holding it)."""


class PeerUnreachable(PeerError):
    """The connection to a peer failed: refused, reset, timed out, or garbled on the way."""


class PeerSentWrongBytes(PeerError):
    """A peer answered with bytes that do not hash to the chunk id asked for."""


class NoHolderReachable(ClusterError):
    """No node that should hold a chunk could provide an intact copy of it."""


class ChunkLost(ClusterError):
    """This node's copy of a chunk is missing or damaged and no other node holds one."""


class TooFewHolders(ClusterError):
    """Fewer than W holders could store a chunk durably, so the blob is not recorded."""


class UploadFailed(ClusterError):
    """Copying this upload's chunks to their holders failed; the blob must be pushed again."""


class UploadNodeUnreachable(ClusterError):
    """The node holding an upload session is unknown, unreachable or already relayed to."""


class PeerRequestInvalid(ClusterError):
    """A request on the internal API that is malformed."""


class PeerAuthFailed(ClusterError):
    """The request does not prove knowledge of the cluster secret."""


class MembershipConflict(ClusterError):
    """A membership or leadership change that cannot be made as asked."""


class UnknownMember(ClusterError):
    """The node named is not a member of the group."""


class PeerEndpointUnknown(ClusterError):
    """No internal endpoint at that path."""


class PeerMethodUnsupported(ClusterError):
    """The internal endpoint exists but not for that method."""


class RelayBusy(ClusterError):
    """As many client requests as allowed are being relayed to that peer already."""
