"""Contactless payment (无感支付) switched on and off through the driver API, against the
sandbox provider: ``parking sandbox-pay`` as a real process on a free port, which the
app asks over HTTP (WeChat Pay v3) whether the driver authorised the plate."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
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

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[str]]
ALICE = "13800000041"
PLATE = "赣B5C222"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = SandboxProcess(tmp_path_factory.mktemp("contactless-sandbox"), free_port())
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def control(sandbox: SandboxProcess) -> AsyncIterator[SandboxControl]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield SandboxControl(http, sandbox.base_url)


@pytest.fixture
async def api(
    settings: Settings,
    city_db_url: str,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    sandbox: SandboxProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Client]:
    monkeypatch.setenv("PARKING_WECHATPAY_CONFIG", str(sandbox.config_path))
    app_settings = config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url})
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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def alice_with_her_plate(api: Client, login: Login) -> tuple[str, str]:
    """Alice's token and account, her plate bound."""
    alice = await login(ALICE)
    bound = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(alice))
    assert bound.status_code == 201, bound.text
    me = await api.get("/v1/me", headers=bearer(alice))
    account: str = me.json()["id"]
    return alice, account


async def test_a_driver_turns_contactless_on_and_off_for_their_plate(
    api: Client, login: Login, control: SandboxControl, city_db: asyncpg.Connection
) -> None:
    alice, account = await alice_with_her_plate(api, login)
    openid = "o" + uuid.uuid4().hex[:20]
    # She authorised WeChat Pay's vehicle service for the plate (in WeChat, not with us).
    await control.mandate(openid=openid, plate_number=PLATE)

    on = await api.put(
        f"/v1/me/contactless/{PLATE}",
        json={"provider": "wechat", "payer_id": openid},
        headers=bearer(alice),
    )

    assert on.status_code == 200, on.text
    body = on.json()
    assert (body["provider"], body["plate"], body["state"]) == ("wechat", PLATE, "active")
    stored = await city_db.fetchrow(
        "SELECT state, account_id, payer_id FROM contactless_mandates WHERE id = $1", body["id"]
    )
    assert stored is not None
    assert dict(stored) == {"state": "active", "account_id": account, "payer_id": openid}

    off = await api.delete(f"/v1/me/contactless/{PLATE}", headers=bearer(alice))

    assert off.status_code == 204, off.text
    assert (
        await city_db.fetchval("SELECT state FROM contactless_mandates WHERE id = $1", body["id"])
        == "revoked"
    )
    actions = await city_db.fetch(
        "SELECT action, actor FROM audit_log WHERE target = $1 AND action LIKE 'mandate.%' "
        "ORDER BY id",
        f"plate:{PLATE}",
    )
    assert [(a["action"], a["actor"]) for a in actions] == [
        ("mandate.enabled", account),
        ("mandate.disabled", account),
    ]


async def test_contactless_stays_off_until_the_driver_authorised_it_at_the_provider(
    api: Client, login: Login, control: SandboxControl, city_db: asyncpg.Connection
) -> None:
    alice, _ = await alice_with_her_plate(api, login)

    on = await api.put(
        f"/v1/me/contactless/{PLATE}",
        json={"provider": "wechat", "payer_id": "o" + uuid.uuid4().hex[:20]},
        headers=bearer(alice),
    )

    assert on.status_code == 409, on.text
    assert on.json()["type"].endswith("/mandate-not-authorised")
    assert await city_db.fetchval("SELECT count(*) FROM contactless_mandates") == 0
