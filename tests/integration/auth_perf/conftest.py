"""Two API workers (two app instances, each with its own Redis clients and its own
copy of the denylist) over one seeded city and the real Redis, and a relay in
front of Redis that a test can cut or freeze."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from kits import on_port
from litestar.testing import AsyncTestClient
from revocation_kit import Client, Login, RedisRelay, StartWorker

from parking import config
from parking.accounts import notifier
from parking.api.app import create_app
from parking.config import Settings


@pytest.fixture
async def start_worker(
    settings: Settings, city_db_url: str, redis_client: aioredis.Redis
) -> AsyncIterator[StartWorker]:
    """``await start_worker()`` or ``await start_worker(redis_url=...)``: one more API
    worker over the same city database; all of them stop at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(redis_url: str | None = None) -> Client:
            env = {**os.environ, "PARKING_DATABASE_URL": city_db_url}
            if redis_url is not None:
                env["PARKING_REDIS_URL"] = redis_url
            app = create_app(config.load(env))
            return await stack.enter_async_context(AsyncTestClient(app=app))

        yield start


@pytest.fixture
async def relay(settings: Settings) -> AsyncIterator[tuple[RedisRelay, str]]:
    """A relay in front of the test stack's Redis, and the Redis URL through it."""
    parts = urlsplit(settings.redis_url)
    assert parts.hostname is not None
    assert parts.port is not None
    proxy = RedisRelay(parts.hostname, parts.port)
    await proxy.start()
    try:
        yield proxy, on_port(settings.redis_url, proxy.port)
    finally:
        with contextlib.suppress(Exception):
            await proxy.cut()


@pytest.fixture
def login(redis_client: aioredis.Redis) -> Login:
    """``await login(worker, phone)``: a token pair for that phone's driver, via that worker."""

    async def go(api: Client, phone: str) -> dict[str, Any]:
        sent = await api.post("/v1/auth/otp", json={"phone": phone})
        assert sent.status_code == 202, sent.text
        code = await notifier.latest_code(redis_client, sent.json()["phone"])
        assert code is not None
        issued = await api.post("/v1/auth/token", json={"phone": phone, "code": code})
        assert issued.status_code == 200, issued.text
        body: dict[str, Any] = issued.json()
        return body

    return go
