"""What many API tests share: the bearer header, a driver's login, a binding's id, a
free port.

The fixtures built on these (``app_settings``, ``api``, ``login``) are in
``tests/conftest.py``; a folder overrides one only where its app differs (a
payment sandbox, a live core).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from parking.accounts import notifier

Client = AsyncTestClient  # type: ignore[type-arg]
#: ``await login("13812345678")``: the access token of that phone's driver
Login = Callable[[str], Awaitable[str]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def log_in(api: Any, redis_client: aioredis.Redis, phone: str) -> dict[str, Any]:
    """The token pair of the phone's driver, through the real OTP routes (the code read
    back from where the local notifier keeps it)."""
    sent = await api.post("/v1/auth/otp", json={"phone": phone})
    assert sent.status_code == 202, sent.text
    code = await notifier.latest_code(redis_client, sent.json()["phone"])
    assert code is not None
    issued = await api.post("/v1/auth/token", json={"phone": phone, "code": code})
    assert issued.status_code == 200, issued.text
    body: dict[str, Any] = issued.json()
    return body


def login_with(api: Any, redis_client: aioredis.Redis) -> Login:
    async def go(phone: str) -> str:
        token: str = (await log_in(api, redis_client, phone))["access_token"]
        return token

    return go


async def vehicle_id(api: Any, token: str, plate: str) -> str:
    """The id of the driver's binding of ``plate``, from ``GET /v1/me/vehicles``: routes
    name a binding by its id (a plate never goes in a URL)."""
    listed = await api.get("/v1/me/vehicles", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    ids = [v["id"] for v in listed.json()["items"] if v["plate"] == plate]
    assert len(ids) == 1, (plate, listed.text)
    found: str = ids[0]
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
