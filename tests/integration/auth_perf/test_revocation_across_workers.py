"""A token revoked through one API worker is refused by every other within 1 s
(parking.accounts.denylist), the copy answers without Redis while it can vouch
for itself, and when it cannot (Redis gone or stalled) requests are refused
with a 503, never let through."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from kits import bearer
from litestar.testing import AsyncTestClient
from revocation_kit import (
    Login,
    RedisRelay,
    StartWorker,
    denylist_of,
    until,
    until_current,
)

from parking import config
from parking.accounts import store
from parking.accounts.denylist import MAX_LAG_S
from parking.api.app import create_app
from parking.auth import tokens
from parking.auth.model import Role
from parking.config import Settings

QUOTE = {
    "lot_id": "GZ-DEMO-01",
    "entry": "2026-11-27T10:00:00+08:00",
    "exit": "2026-11-27T11:00:00+08:00",
}

MY_VEHICLES = "/v1/me/vehicles"


def issued(settings: Settings) -> str:
    """A token without a login (as ``parking tokens issue`` makes): only the denylist revokes it."""
    return tokens.issue(
        settings.jwt_key,
        subject="acc-01JD3K00000000000000000000",
        role=Role.DRIVER,
        now=datetime.now(UTC),
        ttl=timedelta(minutes=10),
    )


async def exists_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    entry = stats.get("cmdstat_exists", {})
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


async def test_a_logout_through_one_worker_is_refused_by_another_within_a_second(
    start_worker: StartWorker, login: Login
) -> None:
    a, b = await start_worker(), await start_worker()
    await until_current(b)
    pair = await login(a, "13812345678")
    assert (await b.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 200
    out = await a.post("/v1/auth/logout", headers=bearer(pair["access_token"]))
    assert out.status_code == 204, out.text
    acknowledged = time.monotonic()
    # The worker that revoked it refuses at once.
    assert (await a.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 401
    while (
        answer := await b.get("/v1/me", headers=bearer(pair["access_token"]))
    ).status_code != 401:
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - acknowledged < MAX_LAG_S
        await asyncio.sleep(0.005)
    assert "revoked" in answer.json()["detail"]
    assert time.monotonic() - acknowledged < MAX_LAG_S


async def test_a_current_copy_answers_without_asking_redis(
    start_worker: StartWorker, settings: Settings, redis_client: aioredis.Redis
) -> None:
    worker = await start_worker()
    await until_current(worker)
    token = issued(settings)
    before = await exists_calls(redis_client)
    for _ in range(20):
        answer = await worker.post("/v1/tariffs/quote", json=QUOTE, headers=bearer(token))
        assert answer.status_code == 200, answer.text
    assert await exists_calls(redis_client) == before


async def test_revocations_made_before_a_worker_starts_are_loaded_with_its_copy(
    start_worker: StartWorker, settings: Settings, redis_client: aioredis.Redis
) -> None:
    token = issued(settings)
    jti = tokens.verify(settings.jwt_key, token, now=datetime.now(UTC)).token_id
    await store.deny(redis_client, [(jti, timedelta(minutes=11))], now=datetime.now(UTC))
    worker = await start_worker()
    await until_current(worker)
    before = await exists_calls(redis_client)
    refused = await worker.post("/v1/tariffs/quote", json=QUOTE, headers=bearer(token))
    assert refused.status_code == 401
    assert await exists_calls(redis_client) == before


async def test_revocations_missed_while_the_subscription_was_down_are_loaded_again(
    start_worker: StartWorker,
    settings: Settings,
    redis_client: aioredis.Redis,
    relay: tuple[RedisRelay, str],
) -> None:
    proxy, url = relay
    worker = await start_worker(redis_url=url)
    await until_current(worker)
    token = issued(settings)
    jti = tokens.verify(settings.jwt_key, token, now=datetime.now(UTC)).token_id
    proxy.freeze()
    # Published while the worker hears nothing: the message is lost to it.
    await store.deny(redis_client, [(jti, timedelta(minutes=11))], now=datetime.now(UTC))
    proxy.drop_connections()
    proxy.thaw()
    copy = denylist_of(worker)
    await until(lambda: copy.current and bool(copy.verdict(jti)), within_s=5, what="reloaded")
    refused = await worker.post("/v1/tariffs/quote", json=QUOTE, headers=bearer(token))
    assert refused.status_code == 401


async def test_requests_are_refused_with_503_once_redis_is_gone(
    start_worker: StartWorker, settings: Settings, relay: tuple[RedisRelay, str]
) -> None:
    proxy, url = relay
    worker = await start_worker(redis_url=url)
    await until_current(worker)
    token = issued(settings)
    # A route whose only use of Redis is the token check (the quote route's rate
    # limit would also need Redis, through the relay).
    assert (await worker.get(MY_VEHICLES, headers=bearer(token))).status_code == 200
    await proxy.cut()
    # The subscription sees the connection close at once: no answer from the copy.
    copy = denylist_of(worker)
    await until(lambda: not copy.current, within_s=MAX_LAG_S, what="given up")
    refused = await worker.get(MY_VEHICLES, headers=bearer(token))
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"


async def test_a_stalled_redis_stops_the_copy_vouching_within_a_second(
    start_worker: StartWorker, settings: Settings, relay: tuple[RedisRelay, str]
) -> None:
    proxy, url = relay
    worker = await start_worker(redis_url=url)
    await until_current(worker)
    token = issued(settings)
    copy = denylist_of(worker)
    proxy.freeze()
    # No EOF: only the unanswered PINGs tell, and the copy stops vouching for
    # itself MAX_LAG_S after the last PING answered was sent (+50 ms: polling).
    took = await until(lambda: not copy.current, within_s=MAX_LAG_S + 0.5, what="given up")
    assert took <= MAX_LAG_S + 0.05
    refused = await worker.post("/v1/tariffs/quote", json=QUOTE, headers=bearer(token))
    assert refused.status_code == 503


async def test_a_worker_stopped_as_it_starts_shuts_down_at_once(
    settings: Settings, city_db_url: str
) -> None:
    # The copy's task may be inside redis-py's connection handshake, which can
    # swallow a cancellation; shutting down must not wait for ever on it.
    for _ in range(3):
        app = create_app(config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url}))
        started = time.monotonic()
        async with AsyncTestClient(app=app):
            pass
        assert time.monotonic() - started < 5
