"""The driver API against the sandbox payment provider as a real process: the shared
fixtures of the driver tests that need a provider (A1 isolation, contactless).

``parking sandbox-pay`` runs on a free port, once per test module; the app reads
its merchant config (``PARKING_WECHATPAY_CONFIG``) like the API process does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))

from kits import Client, Login, bearer, free_port
from payment_servers import SandboxControl, SandboxProcess, running_sandbox

from parking import config
from parking.api.app import create_app
from parking.config import Settings
from parking.occupancy import rebuild

__all__ = ["Client", "Login", "SandboxControl", "SandboxProcess", "bearer", "free_port"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), free_port()) as process:
        yield process


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
