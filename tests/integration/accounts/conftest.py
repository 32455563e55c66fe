from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from parking import config
from parking.accounts import notifier
from parking.api.app import create_app
from parking.config import Settings

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[dict[str, Any]]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_settings(settings: Settings, city_db_url: str) -> Settings:
    return config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url})


@pytest.fixture
async def api(app_settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[Client]:
    """The real app over a fresh seeded city, with Redis flushed (rate limits, codes)."""
    async with AsyncTestClient(app=create_app(app_settings)) as client:
        yield client


@pytest.fixture
def login(api: Client, redis_client: aioredis.Redis) -> Login:
    """``await login("13812345678")``: the token pair of that phone's driver."""

    async def go(phone: str) -> dict[str, Any]:
        sent = await api.post("/v1/auth/otp", json={"phone": phone})
        assert sent.status_code == 202, sent.text
        code = await notifier.latest_code(redis_client, sent.json()["phone"])
        assert code is not None
        issued = await api.post("/v1/auth/token", json={"phone": phone, "code": code})
        assert issued.status_code == 200, issued.text
        body: dict[str, Any] = issued.json()
        return body

    return go
