"""Every error a client can see, and the one place that turns errors into responses.

Handlers raise the OCI errors below; the layers beneath them raise their own
(`node/storage/errors.py`, `node/cluster/errors.py`, and from `consensus` a
refusal of the state machine or a missing quorum). `as_registry_error` maps
any of them to one of these, and `error_response` builds the response —
status and `{"errors": [{"code", "message", "detail"}]}` — for the client API
and the internal peer API alike. Each code is registered once: a second class
claiming a code fails at import. Anything unmapped that escapes a handler
becomes a logged 500 with the same envelope and no traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from quart import Response, request
from werkzeug.exceptions import HTTPException

from consensus.engine import MembershipRefused, NoQuorum, Overloaded, Refusal, Refused
from node.access import errors as access
from node.access.gate import TokenRequestInvalid
from node.cluster import errors as cluster
from node.storage import errors as storage

log = logging.getLogger(__name__)

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}

# code -> the class that owns it; filled as the classes below are defined.
CODES: dict[str, type[RegistryError]] = {}


class RegistryError(Exception):
    """An error with a name a client understands; subclasses set code and status.

    A subclass that names a `code` in its own body registers it; one that only
    changes the status (TooLarge) shares its parent's code.
    """

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unknown error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            owner = CODES.setdefault(cls.code, cls)
            if owner is not cls:
                raise TypeError(f"error code {cls.code} is registered twice: "
                                f"{owner.__name__} and {cls.__name__}")

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def http_status(self) -> int:
        return self.status


class BlobUnknown(RegistryError):
    code, status, default_message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code, status, default_message = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    code, status, default_message = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    code, status, default_message = "DIGEST_INVALID", 400, "provided digest did not match content"


class ManifestBlobUnknown(RegistryError):
    code, status, default_message = (
        "MANIFEST_BLOB_UNKNOWN",
        404,
        "manifest references a blob unknown to the repository",
    )


class ManifestInvalid(RegistryError):
    code, status, default_message = "MANIFEST_INVALID", 400, "manifest invalid"


class ManifestUnknown(RegistryError):
    code, status, default_message = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry"


class NameInvalid(RegistryError):
    code, status, default_message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(RegistryError):
    code, status, default_message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class SizeInvalid(RegistryError):
    code, status, default_message = "SIZE_INVALID", 400, "provided length did not match content"


class TooLarge(SizeInvalid):
    """A body over a configured bound: refused before it is read whole."""

    status = 413
    default_message = "request body too large"


class RangeInvalid(RegistryError):
    code, status, default_message = "RANGE_INVALID", 416, "invalid content range"


class UploadBusy(RangeInvalid):
    """Another request is writing this upload. The spec allows one writer at a time, and
    a 416 with the session's Range tells the client where the upload stands without
    failing it (any other 4xx would)."""

    default_message = "another request is writing this upload; resume from its Range"


class TagInvalid(RegistryError):
    code, status, default_message = "TAG_INVALID", 400, "manifest tag did not match URI"


class Unsupported(RegistryError):
    code, status, default_message = "UNSUPPORTED", 405, "the operation is unsupported"


class NotFound(RegistryError):
    code, status, default_message = "NOT_FOUND", 404, "no such endpoint"


class Unauthorized(RegistryError):
    code, status, default_message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    code, status, default_message = "DENIED", 403, "requested access to the resource is denied"


class QuotaExceeded(Denied):
    """A push that would pass a namespace's quota: the message names the quota and its
    usage, since that is what a docker client prints."""

    def __init__(self, message: str | None = None, *, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message or detail, detail=detail, headers=headers)


class TooManyRequests(RegistryError):
    code, status, default_message = "TOOMANYREQUESTS", 429, "too many requests"


class Unavailable(RegistryError):
    """The cluster cannot commit or reach what it needs right now; retry later."""

    code, status, default_message = "UNAVAILABLE", 503, "service temporarily unavailable"


class AtCapacity(Unavailable):
    """This node is at its cap of connections or requests in flight: retry shortly."""

    default_message = "this node is at its limit of requests in flight; retry later"

    def __init__(self, message: str | None = None, *, retry_after: int = 1,
                 close: bool = False) -> None:
        headers = {"Retry-After": str(retry_after)}
        if close:
            headers["Connection"] = "close"
        super().__init__(message, headers=headers)


class BodyTimeout(RegistryError):
    """The client sent its body too slowly: nothing for the read timeout, or less than
    the minimum rate. Its connection is closed after this answer."""

    code, status, default_message = "REQUEST_TIMEOUT", 408, "the request body arrived too slowly"


class Internal(RegistryError):
    code, status, default_message = "UNKNOWN", 500, "internal error"


class ContentCorrupt(RegistryError):
    """Stored bytes failed verification and no intact copy exists: serving them would
    hand out wrong content, and retrying will not help."""

    code, status, default_message = "CONTENT_CORRUPT", 500, "stored content failed verification"


class PaginationNumberInvalid(RegistryError):
    code, status, default_message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results"


class RequestInvalid(RegistryError):
    """A request the HTTP layer refused before any handler ran (bad framing, headers)."""

    code, status, default_message = "REQUEST_INVALID", 400, "malformed request"

    def __init__(self, message: str | None = None, *, status: int = 400,
                 detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self._status = status

    @property
    def http_status(self) -> int:
        return self._status


class PeerRequestInvalid(RegistryError):
    """A malformed request on the internal peer API."""

    code, status, default_message = "PEER_REQUEST_INVALID", 400, "malformed cluster request"


class MembershipConflict(RegistryError):
    code, status, default_message = "MEMBERSHIP_CONFLICT", 409, "the change cannot be made"


class InsufficientStorage(RegistryError):
    """The node keeps a free-space floor and these bytes would go below it (RFC 4918's
    507: the server cannot store what the request needs; the request itself is fine)."""

    code, status, default_message = (
        "INSUFFICIENT_STORAGE", 507, "not enough free storage on this node"
    )


class AccountExists(RegistryError):
    code, status, default_message = "ACCOUNT_EXISTS", 409, "an account of that name exists"


class AccountUnknown(RegistryError):
    code, status, default_message = "ACCOUNT_UNKNOWN", 404, "no such account"


class PolicyUnknown(RegistryError):
    code, status, default_message = (
        "POLICY_UNKNOWN", 404, "no retention policy or immutable-tag rule of that pattern"
    )


class TagImmutable(Denied):
    """A push that would move a tag an immutable-tag rule holds: 403 DENIED, the
    message naming the tag, the digest it keeps and the rule."""

    def __init__(self, message: str | None = None, *, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        if message is None and isinstance(detail, str):
            try:
                detail = json.loads(detail)
            except ValueError:
                pass  # not the state machine's JSON: kept as it came
        if message is None and isinstance(detail, dict):
            message = (
                f"tag {detail.get('tag')} is immutable (rule {detail.get('rule')}"
                + (f", except {', '.join(detail.get('exclude') or ())}"
                   if detail.get("exclude") else "")
                + f"): it stays at {detail.get('digest')}"
            )
        super().__init__(message, detail=detail, headers=headers)


class GrantUnknown(RegistryError):
    code, status, default_message = "GRANT_UNKNOWN", 404, "no such grant"


class QuotaUnknown(RegistryError):
    code, status, default_message = "QUOTA_UNKNOWN", 404, "no such quota"


def _challenged(exc: Exception) -> RegistryError:
    """401 with the WWW-Authenticate challenge that tells the client how to log in."""
    assert isinstance(exc, access.AuthenticationRequired)
    return Unauthorized(str(exc), headers={"WWW-Authenticate": exc.challenge})


def _throttled(exc: Exception) -> RegistryError:
    assert isinstance(exc, access.LoginThrottled)
    return TooManyRequests(str(exc), headers={"Retry-After": str(exc.retry_after)})


def _retry_later(
    cls: type[RegistryError], seconds: int, message: str | None = None
) -> Callable[[Exception], RegistryError]:
    """Map a lower layer's "not now" to `cls`, with the Retry-After a client backs off by;
    with `message`, the client reads that instead of the lower layer's own words."""

    def convert(exc: Exception) -> RegistryError:
        error = _from(cls)(exc) if message is None else cls(message)
        error.headers["Retry-After"] = str(seconds)
        return error

    return convert


def _from(cls: type[RegistryError]) -> Callable[[Exception], RegistryError]:
    """Map a lower layer's error to `cls`, keeping its message and detail."""

    def convert(exc: Exception) -> RegistryError:
        message = str(exc) if exc.args and exc.args[0] else None
        return cls(message, detail=getattr(exc, "detail", None))

    return convert


# What a client sees when the state machine refuses a command.
REFUSALS: dict[Refusal, type[RegistryError]] = {
    Refusal.BLOB_MISSING: BlobUnknown,
    Refusal.REFERENCED_BLOB_MISSING: ManifestBlobUnknown,
    Refusal.MANIFEST_MISSING: ManifestUnknown,
    Refusal.COMMAND_INVALID: Internal,
    Refusal.MEMBER_MISSING: NotFound,
    Refusal.ACCOUNT_EXISTS: AccountExists,
    Refusal.ACCOUNT_MISSING: AccountUnknown,
    Refusal.GRANT_MISSING: GrantUnknown,
    Refusal.TAG_IMMUTABLE: TagImmutable,
    Refusal.POLICY_MISSING: PolicyUnknown,
    Refusal.QUOTA_EXCEEDED: QuotaExceeded,
    Refusal.QUOTA_MISSING: QuotaUnknown,
}


def _refused(exc: Exception) -> RegistryError:
    assert isinstance(exc, Refused)
    return REFUSALS[exc.refusal](detail=exc.detail)


# Lower layers' errors, by class. A subclass without an entry of its own takes
# its nearest mapped ancestor's, so the base classes are listed too.
DOMAIN_ERRORS: dict[type[Exception], Callable[[Exception], RegistryError]] = {
    storage.StorageError: _from(Internal),
    storage.UploadUnknown: _from(BlobUploadUnknown),
    storage.DigestMismatch: _from(DigestInvalid),
    storage.ChunkMissing: _from(Unavailable),
    storage.ChunkCorrupt: _from(Unavailable),
    cluster.ClusterError: _from(Unavailable),
    cluster.PeerError: _from(Unavailable),
    cluster.PeerUnreachable: _from(Unavailable),
    cluster.PeerSentWrongBytes: _from(Unavailable),
    cluster.NoHolderReachable: _from(Unavailable),
    cluster.ChunkLost: _from(ContentCorrupt),
    cluster.TooFewHolders: _from(Unavailable),
    cluster.UploadFailed: _from(Unavailable),
    cluster.UploadNodeUnreachable: _from(BlobUploadUnknown),
    cluster.PeerRequestInvalid: _from(PeerRequestInvalid),
    cluster.PeerAuthFailed: _from(Unauthorized),
    cluster.MembershipConflict: _from(MembershipConflict),
    cluster.UnknownMember: _from(NotFound),
    cluster.PeerEndpointUnknown: _from(NotFound),
    cluster.PeerMethodUnsupported: _from(Unsupported),
    # A session slot frees when an upload ends (seconds to minutes); a relay slot
    # when one request body has arrived.
    storage.TooManyUploads: _retry_later(TooManyRequests, 5),
    storage.InsufficientSpace: _from(InsufficientStorage),
    cluster.RelayBusy: _retry_later(Unavailable, 1),
    NoQuorum: _retry_later(Unavailable, 1, "the cluster cannot commit right now; retry later"),
    Overloaded: _retry_later(
        Unavailable, Overloaded.retry_after_seconds,
        "the cluster has no room for more writes right now; retry shortly",
    ),
    MembershipRefused: _from(MembershipConflict),
    Refused: _refused,
    access.AccessError: _from(Denied),
    access.AuthenticationRequired: _challenged,
    access.AccessDenied: _from(Denied),
    access.LoginThrottled: _throttled,
    access.AdminInputInvalid: _from(RequestInvalid),
    TokenRequestInvalid: _from(RequestInvalid),
}

# Status codes the HTTP framework raises itself, before a handler could.
_HTTP_STATUSES: dict[int, type[RegistryError]] = {404: NotFound, 405: Unsupported, 413: TooLarge}


def as_registry_error(exc: BaseException) -> RegistryError:
    """The error a client sees for `exc`: a mapped one, else an opaque, logged 500."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, HTTPException):
        if exc.code in _HTTP_STATUSES:
            return _HTTP_STATUSES[exc.code]()
        if exc.code is not None and 400 <= exc.code < 500:
            return RequestInvalid(exc.description or exc.name, status=exc.code)
    for cls in type(exc).__mro__:
        convert = DOMAIN_ERRORS.get(cls)
        if convert is not None:
            assert isinstance(exc, Exception)
            return convert(exc)
    log.error("unhandled error: %r", exc, exc_info=exc)
    return Internal()


def error_body(error: RegistryError) -> bytes:
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return json.dumps({"errors": [entry]}).encode()


def error_response(exc: BaseException) -> Response:
    """The response for any error that escaped a handler, on the client or peer API."""
    error = as_registry_error(exc)
    body = b"" if request.method == "HEAD" else error_body(error)
    response = Response(body, status=error.http_status, content_type="application/json")
    response.headers.update(error.headers)
    response.headers.update(API_VERSION)
    # An error may carry the headers of the resource it concerns (an upload's
    # Range and Location); its own length must still describe the error body.
    response.headers["Content-Length"] = str(len(body))
    return response


def first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first exception in a group of nested groups (nurseries inside nurseries)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
