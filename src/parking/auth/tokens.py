"""JWT access tokens (HS256, audience, expiry), verified strictly.

The algorithm list is fixed, so `alg=none` or an RSA/HMAC confusion token is
refused; audience, expiry, issued-at and the role claim are required.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import jwt

from parking.auth.model import NotAuthenticated, Principal, Role

ACCESS_AUDIENCE = "changbo-api"
ISSUER = "changbo"
_ALGORITHMS = ["HS256"]
_LEEWAY = timedelta(seconds=5)


def issue(
    key: str,
    *,
    subject: str,
    role: Role,
    now: datetime,
    ttl: timedelta,
    audience: str = ACCESS_AUDIENCE,
) -> str:
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": audience,
        "role": role.value,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, key, algorithm="HS256")


def verify(key: str, token: str, *, now: datetime, audience: str = ACCESS_AUDIENCE) -> Principal:
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
    if int(claims["exp"]) + leeway <= now.timestamp():
        raise NotAuthenticated("token expired")
    if int(claims.get("nbf", claims["iat"])) - leeway > now.timestamp():
        raise NotAuthenticated("token not valid yet")
    try:
        role = Role(str(claims.get("role")))
    except ValueError as exc:
        raise NotAuthenticated("token has no valid role") from exc
    return Principal(subject=str(claims["sub"]), role=role, token_id=str(claims["jti"]))
