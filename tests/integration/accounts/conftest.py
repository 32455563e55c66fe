from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from kits import log_in
from litestar.testing import AsyncTestClient

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[dict[str, Any]]]


@pytest.fixture
def login(api: Client, redis_client: aioredis.Redis) -> Login:
    """``await login("13812345678")``: the token pair of that phone's driver."""

    async def go(phone: str) -> dict[str, Any]:
        return await log_in(api, redis_client, phone)

    return go
