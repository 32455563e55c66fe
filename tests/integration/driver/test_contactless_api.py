"""Contactless payment (无感支付) switched on and off through the driver API, against the
sandbox provider: ``parking sandbox-pay`` as a real process on a free port, which the
app asks over HTTP (WeChat Pay v3) whether the driver authorised the plate."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from sandboxkit import (
    Client,
    Login,
    SandboxControl,
    SandboxProcess,
    api,
    app_settings,
    bearer,
    sandbox,
)

__all__ = ["api", "app_settings", "sandbox"]
ALICE = "13800000041"
PLATE = "赣B5C222"


@pytest.fixture
async def control(sandbox: SandboxProcess) -> AsyncIterator[SandboxControl]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield SandboxControl(http, sandbox.base_url)


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
