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
    args: dict[str, object] = {"company": "gz-urban"} | overrides
    return tokens.issue(
        KEY, subject="alice", role=Role.OPERATOR, now=NOW, ttl=timedelta(minutes=5), **args
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
        "x" * 43,
        subject="alice",
        role=Role.OPERATOR,
        now=NOW,
        ttl=timedelta(minutes=5),
        company="gz-urban",
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


def test_an_operator_token_carries_its_company() -> None:
    principal = tokens.verify(KEY, make(company="gz-south"), now=NOW)
    assert (principal.role, principal.company) == (Role.OPERATOR, "gz-south")


def _signed(claims: dict[str, object]) -> str:
    base = {
        "iss": "changbo",
        "sub": "alice",
        "aud": tokens.ACCESS_AUDIENCE,
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 60,
        "jti": "j",
    }
    return jwt.encode(base | claims, KEY, algorithm="HS256")


@pytest.mark.parametrize("company", [None, "", "GZ URBAN", 7])
def test_an_operator_token_without_a_valid_company_is_refused(company: object) -> None:
    claims: dict[str, object] = {"role": "operator"}
    if company is not None:
        claims["company"] = company
    with pytest.raises(NotAuthenticated, match="company"):
        tokens.verify(KEY, _signed(claims), now=NOW)


def test_a_company_claim_gives_no_other_role_a_company() -> None:
    principal = tokens.verify(KEY, _signed({"role": "city", "company": "gz-urban"}), now=NOW)
    assert (principal.role, principal.company) == (Role.CITY, None)


def test_issuing_an_operator_token_needs_a_company_and_only_an_operator_one() -> None:
    with pytest.raises(ValueError, match="company"):
        tokens.issue(KEY, subject="a", role=Role.OPERATOR, now=NOW, ttl=timedelta(minutes=1))
    with pytest.raises(ValueError, match="company"):
        tokens.issue(
            KEY, subject="a", role=Role.CITY, now=NOW, ttl=timedelta(minutes=1), company="gz-urban"
        )


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.FINANCE, Role.CITY])
def test_a_staff_token_is_never_issued_for_longer_than_a_shift(role: Role) -> None:
    company = "gz-urban" if role is Role.OPERATOR else None
    longest = tokens.issue(
        KEY, subject="alice", role=role, now=NOW, ttl=STAFF_TOKEN_MAX_TTL, company=company
    )
    assert tokens.verify(KEY, longest, now=NOW).role is role
    with pytest.raises(ValueError, match="at most 12 h"):
        tokens.issue(
            KEY,
            subject="alice",
            role=role,
            now=NOW,
            ttl=STAFF_TOKEN_MAX_TTL + timedelta(1),
            company=company,
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
