"""Why access was refused, as the rest of node/ sees it; node/api/errors.py maps these
to UNAUTHORIZED (401, with the challenge), DENIED (403) and TOOMANYREQUESTS (429)."""

from __future__ import annotations


class AccessError(Exception):
    """Base of every refusal of this package."""


class AuthenticationRequired(AccessError):
    """No credentials, bad ones, or a token that does not cover the action: the client
    should (re)authenticate. `challenge` is the WWW-Authenticate value to send."""

    def __init__(self, message: str, *, challenge: str) -> None:
        super().__init__(message)
        self.challenge = challenge


class AccessDenied(AccessError):
    """The caller is known and its grants do not allow the action."""


class LoginThrottled(AccessError):
    """Too many failed logins from this address lately."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed logins from this address; retry later")
        self.retry_after = retry_after


class AdminInputInvalid(AccessError):
    """An admin request whose values cannot be used (a bad pattern, role or hash)."""
