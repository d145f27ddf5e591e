"""The gate every client request passes: who is asking, may they, and their tokens.

`Gate` reads the access tables of the replicated state through a cached
`AccessView`, rebuilt whenever the state's access version moves, so a check
costs a dictionary lookup. Whatever the local state does not know yet (an
account made a moment ago through another node, a key rotated there) is
looked for again after a read barrier before a caller is refused, and the
token endpoint always reads through a barrier: a grant revoked anywhere is
refused at the next token request on every node that can reach a quorum.

Three modes (`auth` in the configuration): `none` lets every request through;
`basic` checks HTTP Basic credentials on every request; `token` speaks the
Docker token protocol (401 with a Bearer challenge, tokens from `/token`) and
accepts Basic credentials too.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from consensus.engine import AddSigningKey, Engine, NoQuorum
from node.access import rules
from node.access.audit import AuditLog
from node.access.callers import ANONYMOUS, PEER, ROBOT, SECRET, USER, Caller
from node.access.errors import AccessDenied, AuthenticationRequired, LoginThrottled
from node.access.passwords import VerifiedCache, hash_password, secret_matches
from node.access.rules import PULL, GrantRule, Scope
from node.access.throttle import LoginThrottle
from node.access.tokens import (
    ACCESS,
    CATALOG,
    REFRESH,
    SigningKeyView,
    TokenClaims,
    TokenRejected,
    issue,
    new_signing_key,
    password_version,
    verify,
)

log = logging.getLogger(__name__)

MODES = ("none", "basic", "token")
FIRST_KEY_COMMAND_ID = "first-token-signing-key"  # one first key, however many nodes race
# What a challenge asks for, by the action a request performs.
CHALLENGE_ACTIONS = {rules.PULL: "pull", rules.PUSH: "pull,push", rules.DELETE: "delete"}
_hash_checks = trio.CapacityLimiter(2)  # argon2 is slow on purpose: bound the CPU it takes


class TokenRequestInvalid(Exception):
    """A token request the endpoint cannot answer (unknown service, grant type)."""


@dataclass(frozen=True)
class AccountView:
    name: str
    robot: bool
    secret_hash: str
    expires_at: int | None


@dataclass
class AccessView:
    """The access tables at one version, indexed for the checks."""

    version: int = -1
    accounts: dict[str, AccountView] = field(default_factory=dict)
    grants: dict[str, tuple[GrantRule, ...]] = field(default_factory=dict)
    public: tuple[str, ...] = ()
    keys: dict[str, SigningKeyView] = field(default_factory=dict)
    current_key: SigningKeyView | None = None


def _load_view(queries: object, version: int) -> AccessView:
    view = AccessView(version=version)
    for account in queries.accounts():  # type: ignore[attr-defined]
        view.accounts[account.name] = AccountView(
            account.name, account.robot, account.secret_hash, account.expires_at
        )
    by_principal: dict[str, list[GrantRule]] = {}
    for grant in queries.grants():  # type: ignore[attr-defined]
        by_principal.setdefault(grant.principal, []).append(GrantRule(grant.pattern, grant.role))
    view.grants = {name: tuple(rules_) for name, rules_ in by_principal.items()}
    view.public = tuple(queries.public_patterns())  # type: ignore[attr-defined]
    for key in queries.signing_keys():  # type: ignore[attr-defined]
        loaded = SigningKeyView.load(key.kid, key.private_pem, key.retire_at)
        view.keys[key.kid] = loaded
        if key.retire_at is None:
            view.current_key = loaded
    return view


@dataclass(frozen=True)
class GateSettings:
    mode: str = "none"
    service: str = "flotilla"
    token_ttl: int = 300
    refresh_ttl: int = 30 * 86400
    realm: str | None = None  # the token endpoint's URL; None: this node's, as asked


class Gate:
    def __init__(self, engine: Engine, settings: GateSettings, audit: AuditLog, *,
                 throttle: LoginThrottle | None = None, cache: VerifiedCache | None = None,
                 counters: Counter[str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        # auth_login_failed, auth_login_throttled, auth_tokens_issued (the node's event
        # counters, which /metrics shows)
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.settings = settings
        self.audit = audit
        self.throttle = throttle or LoginThrottle()
        self.cache = cache or VerifiedCache()
        self.clock = clock
        self._view = AccessView()
        self._decoy_hash: str | None = None

    @property
    def open(self) -> bool:
        """No access control: every request goes through (auth = none)."""
        return self.settings.mode == "none"

    def view(self) -> AccessView:
        version = self.engine.queries.access_version()
        if version != self._view.version:
            self._view = _load_view(self.engine.queries, version)
        return self._view

    async def fresh_view(self) -> AccessView:
        """The view after a read barrier: nothing committed before the call is missed.
        Without a quorum the local view answers (an edge site cut off keeps working)."""
        try:
            await self.engine.barrier()
        except NoQuorum:
            log.warning("no quorum for a fresh read of the access tables; using this node's")
        return self.view()

    # -- who is asking ---------------------------------------------------------

    def challenge(self, realm: str, *, scope: str | None = None, error: str | None = None) -> str:
        if self.settings.mode == "basic":
            return 'Basic realm="flotilla"'
        parts = [f'realm="{self.settings.realm or realm}"', f'service="{self.settings.service}"']
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    async def authenticate(self, authorization: str | None, address: str, realm: str) -> Caller:
        """The caller a request's Authorization header proves, or anonymous without one;
        AuthenticationRequired for bad credentials, LoginThrottled after too many."""
        if self.open or not authorization:
            return Caller(ANONYMOUS, "", address)
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            name, secret = _basic(value, self.challenge(realm))
            return await self.login(name, secret, address, realm)
        if scheme == "bearer" and self.settings.mode == "token":
            claims = await self._verify(value.strip(), ACCESS, realm)
            kind = ANONYMOUS
            if claims.subject:
                account = self.view().accounts.get(claims.subject)
                kind = ROBOT if account is not None and account.robot else USER
            return Caller(kind, claims.subject, address, token_access=claims.access)
        raise AuthenticationRequired("unsupported authorization scheme",
                                     challenge=self.challenge(realm))

    async def login(self, name: str, secret: str, address: str, realm: str) -> Caller:
        """The account `name` if `secret` is its password or robot token."""
        wait = self.throttle.retry_after(address)
        if wait is not None:
            self.counters["auth_login_throttled"] += 1
            raise LoginThrottled(wait)
        known = self.view().accounts.get(name)
        account = await self._check_secret(known, name, secret)
        if account is None:
            # Perhaps made or changed a moment ago through another node: checked again
            # only if the fresh read differs, so a wrong guess costs one hash, not two.
            fresh = (await self.fresh_view()).accounts.get(name)
            if fresh is not None and fresh != known:
                account = await self._check_secret(fresh, name, secret)
        if account is None:
            self.throttle.failed(address)
            self.counters["auth_login_failed"] += 1
            self.audit.record("login_failed", Caller(ANONYMOUS, "", address), account=name[:64])
            raise AuthenticationRequired("invalid username or password",
                                         challenge=self.challenge(realm))
        return Caller(ROBOT if account.robot else USER, account.name, address)

    async def _check_secret(self, account: AccountView | None, name: str,
                            secret: str) -> AccountView | None:
        """`account` if `secret` is its secret. An unknown or expired account costs the
        same hash as a wrong password, so the time taken does not tell which names exist."""
        usable = account is not None and (
            account.expires_at is None or account.expires_at > self.clock()
        )
        if usable and self.cache.hit(name, secret, account.secret_hash):
            return account
        async with _hash_checks:
            stored = account.secret_hash if usable else await self._decoy()
            ok = await trio.to_thread.run_sync(secret_matches, stored, secret)
        if not ok or not usable:
            return None
        self.cache.remember(name, secret, stored)
        return account

    async def _decoy(self) -> str:
        """A password hash no secret matches, made once: what unknown names are checked
        against."""
        if self._decoy_hash is None:
            self._decoy_hash = await trio.to_thread.run_sync(
                hash_password, secrets.token_urlsafe(16)
            )
        return self._decoy_hash

    async def _verify(self, token: str, kind: str, realm: str) -> TokenClaims:
        view = self.view()
        try:
            try:
                return verify(token, view.keys, service=self.settings.service,
                              now=self.clock(), kind=kind)
            except TokenRejected:
                view = await self.fresh_view()  # a key rotated a moment ago elsewhere
                return verify(token, view.keys, service=self.settings.service,
                              now=self.clock(), kind=kind)
        except TokenRejected as exc:
            raise AuthenticationRequired(
                str(exc), challenge=self.challenge(realm, error="invalid_token")
            ) from None

    # -- may they --------------------------------------------------------------

    def allowed(self, caller: Caller, repo: str) -> frozenset[str]:
        """What `caller` may do on `repo` by its grants now (tokens aside)."""
        if self.open or caller.kind == PEER:
            return rules.ROLE_ACTIONS["admin"]
        view = self.view()
        actions = rules.granted_actions(view.grants.get(caller.name, ()), repo) \
            if caller.is_account else frozenset()
        if rules.is_public(view.public, repo):
            actions |= {PULL}
        return actions

    def authorize(self, caller: Caller, repo: str, action: str, realm: str) -> None:
        """Return if `caller` may perform `action` on `repo`; AuthenticationRequired (401:
        log in, or get a token that covers it) or AccessDenied (403) otherwise."""
        if self.open or caller.kind == PEER:
            return
        if caller.token_access is not None and action in caller.token_access.get(repo, ()):
            return
        if caller.token_access is None and action in self.allowed(caller, repo):
            return
        scope = f"repository:{repo}:{CHALLENGE_ACTIONS.get(action, action)}"
        if not caller.is_account or (
            caller.token_access is not None and action in self.allowed(caller, repo)
        ):
            error = "insufficient_scope" if caller.token_access is not None else None
            raise AuthenticationRequired(
                "authentication required" if not caller.is_account else
                "the token does not cover this request",
                challenge=self.challenge(realm, scope=scope, error=error),
            )
        raise AccessDenied(f"{caller.name} may not {action} {repo}")

    def authorize_login(self, caller: Caller, realm: str) -> None:
        """For `/v2/` itself: any authenticated caller (what `docker login` checks)."""
        if self.open or caller.kind == PEER or caller.is_account:
            return
        if caller.token_access is not None:  # an anonymous token
            return
        raise AuthenticationRequired("authentication required", challenge=self.challenge(realm))

    def authorize_catalog(self, caller: Caller, realm: str) -> None:
        """The catalog takes a login in auth modes; a token must name the catalog scope
        (`registry:catalog:*`), as the token protocol has it."""
        if self.open or caller.kind == PEER:
            return
        if caller.token_access is not None:
            if CATALOG in caller.token_access:
                return
            raise AuthenticationRequired(
                "the token does not cover the catalog",
                challenge=self.challenge(realm, scope="registry:catalog:*",
                                         error="insufficient_scope"),
            )

    def may_list(self, caller: Caller, repo: str) -> bool:
        """Whether the catalog shows `repo` to `caller`."""
        return PULL in self.allowed(caller, repo)

    def is_admin(self, caller: Caller) -> bool:
        """Whether `caller` may change accounts, grants, public patterns and keys: an
        account with the admin role on `*` (by password, not a token), or the secret."""
        if self.open or caller.kind in (PEER, SECRET):
            return True
        return caller.is_account and caller.token_access is None and rules.is_admin(
            self.view().grants.get(caller.name, ())
        )

    # -- tokens ---------------------------------------------------------------

    async def refresh_login(self, token: str, address: str, realm: str) -> Caller:
        """The account a refresh token names, if it still exists with the same secret."""
        wait = self.throttle.retry_after(address)
        if wait is not None:
            raise LoginThrottled(wait)
        try:
            claims = await self._verify(token, REFRESH, realm)
        except AuthenticationRequired:
            self.throttle.failed(address)
            raise
        account = (await self.fresh_view()).accounts.get(claims.subject)
        if (
            account is None
            or claims.password_version != password_version(account.secret_hash)
            or (account.expires_at is not None and account.expires_at <= self.clock())
        ):
            self.throttle.failed(address)
            raise AuthenticationRequired("the refresh token is no longer valid",
                                         challenge=self.challenge(realm))
        return Caller(ROBOT if account.robot else USER, account.name, address)

    async def grant_tokens(self, caller: Caller, scopes: list[Scope], service: str, *,
                           refresh: bool) -> dict[str, object]:
        """The token endpoint's answer: an access token with what `caller` may do of
        `scopes` (possibly nothing), and with `refresh` a refresh token for accounts."""
        if service != self.settings.service:
            raise TokenRequestInvalid(f"this registry's service is {self.settings.service!r}")
        view = await self.fresh_view()
        access: dict[str, frozenset[str]] = {}
        for scope in scopes:
            if scope.type == "registry":
                access[CATALOG] = frozenset({"*"})
                continue
            granted = rules.allowed_scope(scope, self.allowed(caller, scope.name))
            if granted.actions:
                access[scope.name] = access.get(scope.name, frozenset()) | set(granted.actions)
        key = view.current_key or await self._first_key()
        now = int(self.clock())
        ttl = self.settings.token_ttl
        claims = TokenClaims(ACCESS, caller.name, now + ttl, now, access)
        token = issue(key, claims, service=service)
        self.counters["auth_tokens_issued"] += 1
        answer: dict[str, object] = {
            "token": token, "access_token": token, "expires_in": ttl,
            "issued_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }
        account = view.accounts.get(caller.name)
        if refresh and caller.is_account and account is not None:
            answer["refresh_token"] = issue(key, TokenClaims(
                REFRESH, caller.name, now + self.settings.refresh_ttl, now,
                password_version=password_version(account.secret_hash),
            ), service=service)
        return answer

    async def _first_key(self) -> SigningKeyView:
        kid, pem = new_signing_key()
        await self.engine.propose(self.signing_key_command(kid, pem, FIRST_KEY_COMMAND_ID))
        key = self.view().current_key
        assert key is not None  # applied here before propose returned
        return key

    def signing_key_command(self, kid: str, pem: bytes, command_id: str | None = None
                            ) -> AddSigningKey:
        """A command that makes a new key current; the old one verifies while any token
        or refresh token it signed may still be alive."""
        extra: Mapping[str, str] = {"id": command_id} if command_id else {}
        return AddSigningKey(kid=kid, private_pem=pem, now=int(self.clock()),
                             keep_seconds=self.settings.refresh_ttl + 60, **extra)


def _basic(value: str, challenge: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthenticationRequired("malformed Basic credentials", challenge=challenge) from None
    name, sep, secret = decoded.partition(":")
    if not sep or not name:
        raise AuthenticationRequired("malformed Basic credentials", challenge=challenge)
    return name, secret
