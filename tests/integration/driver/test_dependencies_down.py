"""Matrix A9 on the routes themselves: while Redis or PostgreSQL does not answer, a
driver's request is a 503 problem with Retry-After, logged as one line without a stack
trace, and it works again when the server is back. Each server is reached through a
relay the test cuts (the server is gone for this API, the stack keeps running).

Found by a CI run: a scan entry whose Redis connect did not complete answered a 500
("unhandled error", a traceback in the log)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from kits import bearer, flushed_redis, log_in, on_port, relay_in_thread
from litestar.testing import AsyncTestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from parking import config
from parking.api.app import create_app
from parking.api.problems import EXCEPTION_HANDLERS, dependency_down_handler
from parking.config import Settings
from parking.occupancy import rebuild
from parking.qr import keys, logic
from parking.qr.model import QrKind
from parking.redisclient import ClusterUnavailable

DEMO = "GZ-DEMO-01"
ALICE = "13800000031"


def _server_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    async with flushed_redis(settings.redis_url, cluster=False) as client:
        yield client


def _entry_code(settings: Settings) -> dict[str, str]:
    keyring = keys.load_or_create(keys.path_in(settings.stack_dir))
    target = logic.target(QrKind.LANE, DEMO, "in1")
    return {"code": logic.sign(target, keyring=keyring, now=datetime.now(UTC))}


def _is_a_retry_later(response: httpx.Response, logged: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 503
    assert body["type"].endswith("/service-unavailable")
    assert "Traceback" not in response.text
    assert "unhandled error" not in logged, logged
    assert "Traceback" not in logged, logged


async def test_a_scan_while_redis_is_gone_is_a_503_and_works_when_it_is_back(
    settings: Settings,
    city_db_url: str,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    with relay_in_thread(*_server_of(settings.redis_url)) as redis_relay:
        env = {
            **os.environ,
            "PARKING_DATABASE_URL": city_db_url,
            "PARKING_REDIS_URL": on_port(settings.redis_url, redis_relay.relay.port),
        }
        async with AsyncTestClient(app=create_app(config.load(env))) as api:
            alice = (await log_in(api, redis_client, ALICE))["access_token"]
            redis_relay.cut()
            capsys.readouterr()

            gone = await api.post(
                "/v1/scans/entry", json=_entry_code(settings), headers=bearer(alice)
            )

            # Found cut by the driver's token check (its copy of the revocations lost
            # its subscription) or by the scan itself: a 503 either way.
            _is_a_retry_later(gone, capsys.readouterr().err)
            # Redis back where this API looks for it: the next scan lets the car in.
            redis_relay.restart()
            back = await api.post(
                "/v1/scans/entry", json=_entry_code(settings), headers=bearer(alice)
            )
            assert back.status_code == 201, back.text


async def test_a_read_while_postgres_is_gone_is_a_503(
    settings: Settings,
    city_db_url: str,
    redis_client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with relay_in_thread(*_server_of(city_db_url)) as pg_relay:
        env = {**os.environ, "PARKING_DATABASE_URL": on_port(city_db_url, pg_relay.relay.port)}
        async with AsyncTestClient(app=create_app(config.load(env))) as api:
            alice = (await log_in(api, redis_client, ALICE))["access_token"]
            assert (await api.get("/v1/me/vehicles", headers=bearer(alice))).status_code == 200
            pg_relay.cut()
            capsys.readouterr()

            gone = await api.get("/v1/me/vehicles", headers=bearer(alice))

            logged = capsys.readouterr().err
            _is_a_retry_later(gone, logged)
            assert "a dependency did not answer" in logged, logged
            pg_relay.restart()
            back = await api.get("/v1/me/vehicles", headers=bearer(alice))
            assert back.status_code == 200, back.text


@pytest.mark.parametrize(
    "error",
    [
        RedisTimeoutError("connecting to Redis timed out"),  # the CI run's
        RedisConnectionError("connection to Redis lost"),
        ClusterUnavailable("slot 866 has no master now"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        ConnectionRefusedError(111, "Connect call failed"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_error_that_says_a_server_is_not_there_is_answered_503(error: Exception) -> None:
    # Litestar picks the handler of the first class in the error's MRO it has one for.
    handler = next(EXCEPTION_HANDLERS[c] for c in type(error).__mro__ if c in EXCEPTION_HANDLERS)
    assert handler is dependency_down_handler
