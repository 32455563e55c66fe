"""The driver API against the sandbox payment provider as a real process: the shared
fixtures of the driver tests that need a provider (A1 isolation, contactless).

``parking sandbox-pay`` runs on a free port, once per test module; the app reads
its merchant config (``PARKING_WECHATPAY_CONFIG``) like the API process does.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))

from payment_servers import SandboxControl, SandboxProcess

from parking import config
from parking.accounts import notifier
from parking.api.app import create_app
from parking.config import Settings
from parking.occupancy import rebuild

__all__ = ["SandboxControl", "SandboxProcess"]

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[str]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = SandboxProcess(tmp_path_factory.mktemp("sandbox"), free_port())
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def app_settings(
    settings: Settings,
    city_db_url: str,
    sandbox: SandboxProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    monkeypatch.setenv("PARKING_WECHATPAY_CONFIG", str(sandbox.config_path))
    return config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url})


@pytest.fixture
async def api(
    app_settings: Settings, redis_client: aioredis.Redis, city_db: asyncpg.Connection
) -> AsyncIterator[Client]:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    async with AsyncTestClient(app=create_app(app_settings)) as client:
        yield client


@pytest.fixture
def login(api: Client, redis_client: aioredis.Redis) -> Login:
    async def go(phone: str) -> str:
        sent = await api.post("/v1/auth/otp", json={"phone": phone})
        assert sent.status_code == 202, sent.text
        code = await notifier.latest_code(redis_client, sent.json()["phone"])
        issued = await api.post("/v1/auth/token", json={"phone": phone, "code": code})
        assert issued.status_code == 200, issued.text
        token: str = issued.json()["access_token"]
        return token

    return go
