"""The API's connections, opened once per worker in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import asyncpg
import redis.asyncio as aioredis
from litestar import Litestar

from parking.config import Settings
from parking.devices.publisher import Publisher


@dataclass(slots=True)
class Infra:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    publisher: Publisher


@asynccontextmanager
async def connection(
    infra: Infra, *, transaction: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection typed as a Connection (the pool's proxy forwards every call);
    with ``transaction=True`` the block is one transaction, committed on success."""
    async with infra.pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        if transaction:
            async with conn.transaction():
                yield conn
        else:
            yield conn


def infra_of(app: Litestar) -> Infra:
    infra: Infra = app.state.infra
    return infra


def lifespan_for(settings: Settings):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The pool is created lazily-tolerant: min_size=0 lets the API start (and
        # answer /healthz, and 503 on /readyz) while PostgreSQL is still down.
        pool = await asyncpg.create_pool(
            settings.database_url, min_size=0, max_size=10, command_timeout=10
        )
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=2,
            socket_connect_timeout=2,
            health_check_interval=30,
        )
        publisher = Publisher(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            role="api",
        )
        publisher.start()
        app.state.infra = Infra(settings=settings, pool=pool, redis=client, publisher=publisher)
        try:
            yield
        finally:
            publisher.stop()
            await client.aclose()
            await asyncio.wait_for(pool.close(), timeout=10)

    return lifespan
