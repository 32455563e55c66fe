from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from parking.auth import tokens
from parking.auth.model import STAFF_TOKEN_MAX_TTL, NotAuthenticated, Role

KEY = "k" * 43
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def make(**overrides: object) -> str:
    return tokens.issue(
        KEY, subject="alice", role=Role.OPERATOR, now=NOW, ttl=timedelta(minutes=5), **overrides
    )


def test_a_fresh_token_verifies_to_its_subject_and_role() -> None:
    principal = tokens.verify(KEY, make(), now=NOW + timedelta(minutes=1))
    assert (principal.subject, principal.role) == ("alice", Role.OPERATOR)


def test_an_expired_token_is_refused_by_the_injected_clock() -> None:
    with pytest.raises(NotAuthenticated, match="expired"):
        tokens.verify(KEY, make(), now=NOW + timedelta(minutes=6))


def test_a_token_from_the_future_is_refused() -> None:
    with pytest.raises(NotAuthenticated, match="not valid yet"):
        tokens.verify(KEY, make(), now=NOW - timedelta(minutes=1))


def test_a_wrong_audience_is_refused() -> None:
    with pytest.raises(NotAuthenticated):
        tokens.verify(KEY, make(audience="changbo-refresh"), now=NOW)


def test_a_token_signed_with_another_key_is_refused() -> None:
    other = tokens.issue(
        "x" * 43, subject="alice", role=Role.OPERATOR, now=NOW, ttl=timedelta(minutes=5)
    )
    with pytest.raises(NotAuthenticated):
        tokens.verify(KEY, other, now=NOW)


def test_alg_none_is_refused() -> None:
    claims = jwt.decode(make(), options={"verify_signature": False})
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    unsigned = (header + b"." + body + b".").decode()
    with pytest.raises(NotAuthenticated):
        tokens.verify(KEY, unsigned, now=NOW)


def test_a_tampered_role_claim_is_refused() -> None:
    header, body, signature = make().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["role"] = "finance"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(NotAuthenticated):
        tokens.verify(KEY, f"{header}.{forged}.{signature}", now=NOW)


def test_an_unknown_role_is_refused() -> None:
    token = jwt.encode(
        {
            "iss": "changbo",
            "sub": "x",
            "aud": tokens.ACCESS_AUDIENCE,
            "role": "root",
            "iat": int(NOW.timestamp()),
            "exp": int(NOW.timestamp()) + 60,
            "jti": "j",
        },
        KEY,
        algorithm="HS256",
    )
    with pytest.raises(NotAuthenticated, match="role"):
        tokens.verify(KEY, token, now=NOW)


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.FINANCE, Role.CITY])
def test_a_staff_token_is_never_issued_for_longer_than_a_shift(role: Role) -> None:
    longest = tokens.issue(KEY, subject="alice", role=role, now=NOW, ttl=STAFF_TOKEN_MAX_TTL)
    assert tokens.verify(KEY, longest, now=NOW).role is role
    with pytest.raises(ValueError, match="at most 12 h"):
        tokens.issue(
            KEY, subject="alice", role=role, now=NOW, ttl=STAFF_TOKEN_MAX_TTL + timedelta(1)
        )


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.FINANCE, Role.CITY])
def test_a_staff_token_made_to_live_longer_is_refused_even_with_our_signature(role: Role) -> None:
    # Signed with the platform's key, but not by `tokens.issue`.
    claims = jwt.decode(make(), options={"verify_signature": False})
    claims |= {"role": role.value, "exp": claims["iat"] + 30 * 24 * 3600}
    forged = jwt.encode(claims, KEY, algorithm="HS256")
    with pytest.raises(NotAuthenticated, match="at most 12 h"):
        tokens.verify(KEY, forged, now=NOW)
    with pytest.raises(NotAuthenticated, match="at most 12 h"):
        tokens.VerifiedTokens(KEY).verify(forged, now=NOW)


def test_the_lifetime_bound_is_for_staff_only() -> None:
    # A driver's refresh token lives 30 days; a device's token is not a person's.
    for role, audience in ((Role.DRIVER, "changbo-refresh"), (Role.DEVICE, tokens.ACCESS_AUDIENCE)):
        token = tokens.issue(
            KEY, subject="acc-1", role=role, now=NOW, ttl=timedelta(days=30), audience=audience
        )
        assert tokens.verify(KEY, token, now=NOW, audience=audience).role is role
