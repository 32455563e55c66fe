"""The dashboard's figures are read on the stack's streaming replica, and the platform
keeps answering them from the primary while the replica is down."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from kits import bearer, on_port
from litestar.testing import AsyncTestClient

from parking import config
from parking.api.app import create_app
from parking.api.infra import REPLICA_READS
from parking.auth.model import Role
from parking.config import Settings, read_secrets
from parking.stack import binaries
from parking.stack.replica import PostgresReplica

SERIES = {
    "metric": "entries",
    "step": "day",
    "from": "2026-11-01T00:00:00+08:00",
    "to": "2026-12-01T00:00:00+08:00",
}


@pytest.fixture
def replica(settings: Settings) -> Iterator[PostgresReplica]:
    standby = PostgresReplica(settings, binaries.ensure(log=lambda _: None), lambda _: None)
    secrets = read_secrets(settings.stack_dir)
    assert secrets is not None
    standby.up(secrets.postgres)
    try:
        yield standby
    finally:
        standby.start()  # as the next test expects it: running


@pytest.fixture
async def replica_url(replica: PostgresReplica, city_db_url: str) -> str:
    """The test's database on the replica, once the replica has it (streamed)."""
    url = on_port(city_db_url, replica.port)
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError):
            assert time.monotonic() < deadline, "the replica never had the test's database"
            await asyncio.sleep(0.2)
            continue
        try:
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
        finally:
            await conn.close()
        return url


@pytest.fixture
async def replica_api(
    city_db_url: str, replica_url: str, redis_client: aioredis.Redis
) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    on = config.load(
        {
            **os.environ,
            "PARKING_DATABASE_URL": city_db_url,
            "PARKING_REPLICA_DATABASE_URL": replica_url,
        }
    )
    async with AsyncTestClient(app=create_app(on)) as client:
        yield client


def _reads(where: str) -> float:
    return float(REPLICA_READS.labels(where)._value.get())


async def test_the_dashboards_series_is_read_on_the_replica_and_on_the_primary_while_it_is_down(
    replica_api: AsyncTestClient,  # type: ignore[type-arg]
    replica: PostgresReplica,
    token_for: Callable[..., str],
) -> None:
    city = bearer(token_for(Role.CITY, "city-ops"))
    on_replica, on_primary = _reads("replica"), _reads("primary")
    got = await replica_api.get("/v1/city/timeseries", params=SERIES, headers=city)
    assert got.status_code == 200, got.text
    assert (_reads("replica"), _reads("primary")) == (on_replica + 1, on_primary)
    figures = got.json()

    replica.down()
    assert not replica.running()
    again = await replica_api.get("/v1/city/timeseries", params=SERIES, headers=city)
    assert again.status_code == 200, again.text
    assert again.json() == figures
    assert _reads("primary") == on_primary + 1
    day = await replica_api.get("/v1/city/days/2026-11-20", headers=city)
    assert day.status_code == 200, day.text
    ready = await replica_api.get("/readyz")
    assert ready.status_code == 200  # the replica is not needed to serve
