"""Paying a plate's bills for a friend's car (先离后缴), and a provider's confirmation of a
plate, against the sandbox provider as a real process (issue 10, point 7)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
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

from parking.bills import service as bills
from parking.clock import SHANGHAI, SystemClock
from parking.config import Settings
from parking.occupancy import rebuild
from parking.payments import notifications, providers
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

__all__ = ["api", "app_settings", "sandbox"]
DEMO = "GZ-DEMO-01"
FRIEND, HOLDER = "13800000081", "13800000082"
PLATE = "赣B8F810"


@pytest.fixture
async def control(sandbox: SandboxProcess) -> AsyncIterator[SandboxControl]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield SandboxControl(http, sandbox.base_url)


async def a_bill_of_the_plate(conn: asyncpg.Connection, *, closed_at: datetime) -> str:
    row = await conn.fetchrow("SELECT tariff_id, version FROM tariff_versions LIMIT 1")
    assert row is not None
    async with conn.transaction():
        bill = await bills.open_bill(
            conn,
            session_id="s-pp-" + uuid.uuid4().hex[:12],
            lot_id=DEMO,
            plate=PLATE,
            account_id=None,
            amount_fen=650,
            tariff_id=row["tariff_id"],
            tariff_version=row["version"],
            quote=b"{}",
            closed_at=closed_at,
            now=closed_at,
        )
    assert bill is not None
    return bill.id


async def test_a_friend_who_names_the_plate_pays_its_bill_and_never_sees_the_times(
    api: Client,
    login: Login,
    control: SandboxControl,
    city_db: asyncpg.Connection,
    city_db_url: str,
    sandbox: SandboxProcess,
    app_settings: Settings,
) -> None:
    friend = await login(FRIEND)
    closed_at = datetime.now(UTC) - timedelta(hours=30)
    bill = await a_bill_of_the_plate(city_db, closed_at=closed_at)

    owed = await api.post("/v1/plate-bills", json={"plate": PLATE}, headers=bearer(friend))
    unnamed = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill]},
        headers={**bearer(friend), "Idempotency-Key": "friend-1"},
    )
    named = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill], "plate": PLATE.lower()},
        headers={**bearer(friend), "Idempotency-Key": "friend-2"},
    )

    assert owed.status_code == 200, owed.text
    [item] = owed.json()["items"]
    assert item == {
        "id": bill,
        "lot_id": DEMO,
        "lot_name": await city_db.fetchval("SELECT name FROM lots WHERE id = $1", DEMO),
        "day": closed_at.astimezone(SHANGHAI).date().isoformat(),
        "amount_fen": 650,
        "status": "open",
    }
    assert owed.json()["owed_fen"] == 650
    # A bill id alone is still someone else's bill; naming the plate is the key.
    assert unnamed.status_code == 404, unnamed.text
    assert named.status_code == 201, named.text
    out_trade_no = named.json()["out_trade_no"]
    await control.pay(out_trade_no)
    # What the payments sweeper does when it asks the provider about the order.
    async with (
        httpx.AsyncClient(trust_env=False) as http,
        asyncpg.create_pool(city_db_url, min_size=1, max_size=2) as pool,
    ):
        provider = providers.build_providers(
            msgspec.structs.replace(app_settings, wechatpay_config=sandbox.config_path),
            http=http,
            clock=SystemClock(),
        )["wechat"]
        status = await provider.query_order(out_trade_no)
        await notifications.settle_from_status(pool, provider, status, now=datetime.now(UTC))

    receipt = await api.get(f"/v1/me/receipts/{bill}", headers=bearer(friend))

    assert receipt.status_code == 200, receipt.text
    body = receipt.json()
    assert (body["status"], body["amount_fen"]) == ("paid", 650)
    assert (body["entry_at"], body["exit_at"]) == (None, None)
    assert body["day"] == item["day"]


async def test_a_providers_plate_authorisation_verifies_the_binding(
    api: Client,
    login: Login,
    control: SandboxControl,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
) -> None:
    holder = await login(HOLDER)
    bound = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(holder))
    assert bound.status_code == 201, bound.text
    async with city_db.transaction():
        await sessions.record(
            city_db,
            [
                SessionChange(
                    id="s-pp-" + uuid.uuid4().hex[:12],
                    lot_id=DEMO,
                    status=SessionStatus.OPEN,
                    plate=PLATE,
                    entry_at=datetime.now(UTC),
                )
            ],
        )
    # The live core learns the stay as the gateway would have.
    await rebuild.rebuild(city_db, redis_client, now=datetime.now(UTC))
    before = await api.get("/v1/me/sessions/current", headers=bearer(holder))
    openid = "o" + uuid.uuid4().hex[:20]
    refused = await api.put(
        f"/v1/me/contactless/{bound.json()['id']}",
        json={"provider": "wechat", "payer_id": openid},
        headers=bearer(holder),
    )
    still = (await api.get("/v1/me/vehicles", headers=bearer(holder))).json()["items"]
    await control.mandate(openid=openid, plate_number=PLATE)

    on = await api.put(
        f"/v1/me/contactless/{bound.json()['id']}",
        json={"provider": "wechat", "payer_id": openid},
        headers=bearer(holder),
    )

    assert before.json() == {"items": []}
    assert refused.status_code == 409, refused.text
    assert [v["trust"] for v in still] == ["unverified"]
    assert on.status_code == 200, on.text
    [vehicle] = (await api.get("/v1/me/vehicles", headers=bearer(holder))).json()["items"]
    assert vehicle["trust"] == "verified"
    assert (
        await city_db.fetchval(
            "SELECT verified_by FROM vehicles WHERE plate = $1 AND released_at IS NULL", PLATE
        )
        == "provider:wechat"
    )
    after = await api.get("/v1/me/sessions/current", headers=bearer(holder))
    assert [c["plate"] for c in after.json()["items"]] == [PLATE]
