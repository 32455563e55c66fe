from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from parking.auth import tokens
from parking.auth.model import NotAuthenticated, Role

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
