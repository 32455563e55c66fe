"""The per-worker cache of verified access tokens answers exactly as `tokens.verify`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from parking.auth import tokens
from parking.auth.model import NotAuthenticated, Role

KEY = "k" * 43
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def make(
    subject: str = "alice",
    *,
    ttl: timedelta = timedelta(minutes=5),
    audience: str = tokens.ACCESS_AUDIENCE,
) -> str:
    return tokens.issue(KEY, subject=subject, role=Role.DRIVER, now=NOW, ttl=ttl, audience=audience)


def test_a_cached_token_verifies_to_the_same_principal_as_verify() -> None:
    cache = tokens.VerifiedTokens(KEY)
    token = make()
    first = cache.verify(token, now=NOW)
    again = cache.verify(token, now=NOW + timedelta(minutes=1))
    assert first == again == tokens.verify(KEY, token, now=NOW)
    assert len(cache) == 1


def test_a_cached_token_is_checked_once_for_its_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tokens.VerifiedTokens(KEY)
    token = make()
    cache.verify(token, now=NOW)
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(a))
    cache.verify(token, now=NOW)
    assert calls == []


def test_a_cached_token_is_refused_once_it_expires() -> None:
    cache = tokens.VerifiedTokens(KEY)
    token = make()
    cache.verify(token, now=NOW)
    # The same 5 s leeway as verify: still fine 4 s after exp, refused at 5 s.
    cache.verify(token, now=NOW + timedelta(minutes=5, seconds=4))
    with pytest.raises(NotAuthenticated, match="expired"):
        cache.verify(token, now=NOW + timedelta(minutes=5, seconds=5))
    assert len(cache) == 0
    with pytest.raises(NotAuthenticated, match="expired"):
        cache.verify(token, now=NOW + timedelta(minutes=6))


def test_a_cached_token_is_refused_before_it_is_valid() -> None:
    cache = tokens.VerifiedTokens(KEY)
    token = make()
    cache.verify(token, now=NOW)
    with pytest.raises(NotAuthenticated, match="not valid yet"):
        cache.verify(token, now=NOW - timedelta(minutes=1))


def test_a_token_differing_in_its_signature_is_verified_afresh_and_refused() -> None:
    cache = tokens.VerifiedTokens(KEY)
    token = make()
    cache.verify(token, now=NOW)
    header, body, signature = token.split(".")
    forged = f"{header}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(NotAuthenticated):
        cache.verify(forged, now=NOW)
    assert len(cache) == 1


def test_refused_tokens_are_not_remembered() -> None:
    cache = tokens.VerifiedTokens(KEY)
    other_key = tokens.issue(
        "x" * 43, subject="alice", role=Role.DRIVER, now=NOW, ttl=timedelta(minutes=5)
    )
    for bad in (other_key, make(audience="changbo-refresh"), "not.a.token"):
        for _ in range(2):
            with pytest.raises(NotAuthenticated):
                cache.verify(bad, now=NOW)
    assert len(cache) == 0


def test_the_cache_of_one_key_does_not_vouch_for_another_key() -> None:
    token = make()
    tokens.VerifiedTokens(KEY).verify(token, now=NOW)
    with pytest.raises(NotAuthenticated):
        tokens.VerifiedTokens("y" * 43).verify(token, now=NOW)


def test_a_full_cache_drops_expired_then_oldest_entries_and_keeps_answering() -> None:
    cache = tokens.VerifiedTokens(KEY, max_entries=8)
    short = [make(f"s{n}", ttl=timedelta(seconds=1)) for n in range(4)]
    long = [make(f"l{n}") for n in range(20)]
    for token in short:
        cache.verify(token, now=NOW)
    later = NOW + timedelta(seconds=30)
    for token in long:
        cache.verify(token, now=later)
        assert len(cache) <= 8
    # Evicted tokens are simply verified again.
    assert cache.verify(long[0], now=later).subject == "l0"
    with pytest.raises(NotAuthenticated, match="expired"):
        cache.verify(short[0], now=later)
