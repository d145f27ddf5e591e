"""Every error a client can see, and the one place that turns them into OCI responses.

Handlers and the layers below them raise typed exceptions; `error_response`
maps each to the status and `{"errors": [{"code", "message", "detail"}]}`
envelope the OCI Distribution spec names. Anything else that escapes a
handler becomes a logged 500 with the same envelope and no traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from consensus.engine import NoQuorum, Refusal, Refused

log = logging.getLogger(__name__)


class RegistryError(Exception):
    """An error with a name a client understands; subclasses set code and status."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unknown error"

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


class TooManyRequests(RegistryError):
    code, status, default_message = "TOOMANYREQUESTS", 429, "too many requests"


class Unavailable(RegistryError):
    """The cluster cannot commit or reach what it needs right now; retry later."""

    code, status, default_message = "UNAVAILABLE", 503, "service temporarily unavailable"


class Internal(RegistryError):
    code, status, default_message = "UNKNOWN", 500, "internal error"


def error_body(error: RegistryError) -> bytes:
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return json.dumps({"errors": [entry]}).encode()


def as_registry_error(exc: BaseException) -> RegistryError:
    """The error a client sees for `exc`: itself when it is ours, else an opaque 500."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, NoQuorum):
        return Unavailable("the cluster cannot commit right now; retry later")
    if isinstance(exc, Refused):
        return _BY_REFUSAL[exc.refusal](detail=exc.detail)
    log.error("unhandled error: %r", exc, exc_info=exc)
    return Internal()


class PaginationNumberInvalid(RegistryError):
    code, status, default_message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results"


class ContentCorrupt(RegistryError):
    """Stored bytes failed verification; serving them would hand out wrong content."""

    code, status, default_message = "UNKNOWN", 500, "stored content failed verification"


# What a client sees when the state machine refuses a command.
_BY_REFUSAL: dict[Refusal, type[RegistryError]] = {
    Refusal.BLOB_MISSING: BlobUnknown,
    Refusal.REFERENCED_BLOB_MISSING: ManifestBlobUnknown,
    Refusal.MANIFEST_MISSING: ManifestUnknown,
    Refusal.COMMAND_INVALID: Internal,
}
