"""JWT access tokens (HS256, audience, expiry), verified strictly.

The algorithm list is fixed, so `alg=none` or an RSA/HMAC confusion token is
refused; audience, expiry, issued-at and the role claim are required.

An operator's token also names the operator company they work for (the
``company`` claim): signed with the rest, so it cannot be changed without the
key, and read on every call without a database round trip. The claim rather
than a staff table looked up per request, because staff tokens are issued by
whoever holds the key (`parking tokens issue`, which checks the company exists)
and live at most as long as their ttl: moving someone to another company is
issuing them a new token (and revoking the old one), as for any other change
of what a staff token grants.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

import jwt

from parking.auth.model import (
    FIELD_ROLES,
    STAFF_ROLES,
    STAFF_TOKEN_MAX_TTL,
    NotAuthenticated,
    Principal,
    Role,
)

ACCESS_AUDIENCE = "changbo-api"
ISSUER = "changbo"
_ALGORITHMS = ["HS256"]
_LEEWAY = timedelta(seconds=5)
#: operator_companies.id's rule (migration 0014)
_COMPANY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: a lot id, a district code or a department's name
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def issue(
    key: str,
    *,
    subject: str,
    role: Role,
    now: datetime,
    ttl: timedelta,
    audience: str = ACCESS_AUDIENCE,
    company: str | None = None,
    scope: str | None = None,
) -> str:
    """A signed token. ``company`` is required for an operator (the company they act
    for), refused for every other role; a staff token may not outlive
    `STAFF_TOKEN_MAX_TTL` (ValueError)."""
    if (role is Role.OPERATOR) != (company is not None):
        raise ValueError("an operator token names its company; no other role's does")
    if (role in FIELD_ROLES) != (scope is not None):
        raise ValueError(f"a {role.value} token names its scope; only field roles' do")
    if scope is not None and _SCOPE.fullmatch(scope) is None:
        raise ValueError(f"not a scope: {scope!r}")
    if role in STAFF_ROLES and ttl > STAFF_TOKEN_MAX_TTL:
        raise ValueError(
            f"a {role.value} token lives at most {_hours(STAFF_TOKEN_MAX_TTL)} h, "
            f"not {_hours(ttl)} h"
        )
    claims: dict[str, str | int] = {
        "iss": ISSUER,
        "sub": subject,
        "aud": audience,
        "role": role.value,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_urlsafe(12),
    }
    if company is not None:
        claims["company"] = company
    if scope is not None:
        claims["scope"] = scope
    return jwt.encode(claims, key, algorithm="HS256")


def verify(key: str, token: str, *, now: datetime, audience: str = ACCESS_AUDIENCE) -> Principal:
    return _checked(key, token, now=now, audience=audience)[0]


def _checked(
    key: str, token: str, *, now: datetime, audience: str
) -> tuple[Principal, float, float]:
    """The token's principal, and the instants (epoch s, leeway included) from which
    and until which it is valid."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=_ALGORITHMS,
            audience=audience,
            issuer=ISSUER,
            leeway=_LEEWAY,
            options={
                "require": ["exp", "iat", "sub", "aud", "iss", "jti"],
                # Times are checked below against the injected clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise NotAuthenticated(f"invalid token: {exc}") from exc
    leeway = _LEEWAY.total_seconds()
    valid_until = int(claims["exp"]) + leeway
    valid_from = int(claims.get("nbf", claims["iat"])) - leeway
    _check_times(valid_from, valid_until, now.timestamp())
    try:
        role = Role(str(claims.get("role")))
    except ValueError as exc:
        raise NotAuthenticated("token has no valid role") from exc
    if role in STAFF_ROLES and int(claims["exp"]) - int(claims["iat"]) > (
        STAFF_TOKEN_MAX_TTL.total_seconds()
    ):
        # Signed with our key, yet longer than we ever issue: made around the
        # CLI (or by a leaked key), refused rather than trusted for days.
        raise NotAuthenticated(
            f"a {role.value} token may live at most {_hours(STAFF_TOKEN_MAX_TTL)} h"
        )
    company = claims.get("company")
    if role is Role.OPERATOR:
        # An operator token without its company would be an operator of no lots
        # at best, of every lot if some route forgot to look: refused outright.
        if not isinstance(company, str) or _COMPANY.fullmatch(company) is None:
            raise NotAuthenticated("an operator token must name its company")
    else:
        company = None
    scope = claims.get("scope")
    if role in FIELD_ROLES:
        # Like an operator's company: a field token without its scope is refused.
        if not isinstance(scope, str) or _SCOPE.fullmatch(scope) is None:
            raise NotAuthenticated(f"a {role.value} token must name its scope")
    else:
        scope = None
    principal = Principal(
        subject=str(claims["sub"]),
        role=role,
        token_id=str(claims["jti"]),
        company=company,
        scope=scope,
    )
    return principal, valid_from, valid_until


def expires_at(token: str) -> datetime:
    """When a token (already verified) expires, from its ``exp`` claim."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return datetime.fromtimestamp(int(claims["exp"]), tz=UTC)


def _hours(ttl: timedelta) -> str:
    return f"{ttl.total_seconds() / 3600:g}"


def _check_times(valid_from: float, valid_until: float, at: float) -> None:
    if valid_until <= at:
        raise NotAuthenticated("token expired")
    if valid_from > at:
        raise NotAuthenticated("token not valid yet")


class VerifiedTokens:
    """A worker's memory of access tokens whose signature and claims it has checked.

    HS256 verification through PyJWT costs about 40 us, and a driver's app sends
    the same token with every call for its 15 minutes: each worker checks a
    token's signature, audience, issuer and role once, then answers from here.
    The key is the raw token (header, claims and signature), so a token that
    differs in any byte is verified afresh, and a failed verification is never
    remembered (a flood of bad tokens cannot fill the cache). Expiry and
    not-before are still checked on every call against the caller's clock,
    with the same leeway as `verify`; an expired entry is dropped. Revocation is
    not this cache's business: the caller checks the denylist every time.

    At most ``max_entries`` tokens are kept (about 600 bytes each, so 12 MB at
    the default); when full, expired entries go, then the oldest (insertion
    order), which for tokens that all live 15 minutes are those expiring soonest.
    """

    __slots__ = ("_audience", "_entries", "_key", "_max_entries")

    def __init__(
        self, key: str, *, audience: str = ACCESS_AUDIENCE, max_entries: int = 20_000
    ) -> None:
        if max_entries < 1:
            raise ValueError("the cache needs room for at least one token")
        self._key = key
        self._audience = audience
        self._max_entries = max_entries
        # token -> (principal, valid from, valid until): epoch seconds, leeway included
        self._entries: dict[str, tuple[Principal, float, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str, *, now: datetime) -> Principal:
        """The same answer as `verify` (``NotAuthenticated`` when it would raise)."""
        at = now.timestamp()
        entry = self._entries.get(token)
        if entry is None:
            entry = _checked(self._key, token, now=now, audience=self._audience)
            if len(self._entries) >= self._max_entries:
                self._evict(at)
            self._entries[token] = entry
            return entry[0]
        principal, valid_from, valid_until = entry
        if valid_until <= at:
            del self._entries[token]
        _check_times(valid_from, valid_until, at)
        return principal

    def _evict(self, at: float) -> None:
        """Drop the expired entries, then the oldest down to three quarters full, so a
        full cache pays this scan once per quarter of its size, not on every insert."""
        for token in [t for t, (_, _, until) in self._entries.items() if until <= at]:
            del self._entries[token]
        keep = self._max_entries * 3 // 4
        while len(self._entries) > keep:
            del self._entries[next(iter(self._entries))]
