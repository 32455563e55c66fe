"""Operator decisions move the money, and mandates follow the plate's holder (issue 10,
points 2 and 3).

The real app over a fresh copy of the seeded city, the sandbox provider as a real
process on a free port, and a loopback bridge that carries its notifications
(payments, refunds) to the app: a deduction pays a bill and a refund completes
exactly as in production. Each scenario ends with the books straight: the
ledger's trial balance is 0 and its receivables equal the bills still owed.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from kits import vehicle_id
from litestar import Litestar
from sandboxkit import SandboxControl, SandboxProcess, bearer, free_port, sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments_flow"))

from payflow_support import Bridge, assert_books_straight, client_forward, eventually, serve

from parking import config
from parking.accounts import notifier
from parking.api.app import create_app
from parking.auth.model import Role
from parking.bills import service as bills
from parking.clock import SystemClock
from parking.config import Settings
from parking.occupancy import rebuild
from parking.payments import contactless as payment_contactless
from parking.payments.model import Deduction, DeductionStatus
from parking.payments.providers import wechat as wechat_adapter
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

__all__ = ["sandbox"]
DEMO = "GZ-DEMO-01"
FEE = 1500


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def control(sandbox: SandboxProcess, http: httpx.AsyncClient) -> SandboxControl:
    return SandboxControl(http, sandbox.base_url)


@pytest.fixture
def wechat(sandbox: SandboxProcess, http: httpx.AsyncClient) -> wechat_adapter.WechatPayProvider:
    found = wechat_adapter.load_config(sandbox.config_path)
    return wechat_adapter.WechatPayProvider.from_config(found, http=http, clock=SystemClock())


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    server = Bridge(free_port(), prefix=f"/t/{uuid.uuid4().hex[:10]}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def app(
    settings: Settings,
    city_db_url: str,
    sandbox: SandboxProcess,
    bridge: Bridge,
    monkeypatch: pytest.MonkeyPatch,
) -> Litestar:
    monkeypatch.setenv("PARKING_WECHATPAY_CONFIG", str(sandbox.config_path))
    monkeypatch.setenv("PARKING_NOTIFY_BASE_URL", bridge.base_url)
    return create_app(config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url}))


@pytest.fixture
async def api(
    app: Litestar, bridge: Bridge, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    async with serve(app) as client:
        bridge.forward = client_forward(client)
        yield client
        bridge.forward = None


@pytest.fixture
async def pool(city_db_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(city_db_url, min_size=1, max_size=6)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def operator(token_for: Callable[..., str]) -> dict[str, str]:
    return bearer(token_for(Role.OPERATOR, "op-wang"))


# --------------------------------------------------------------------------- the story


def a_plate() -> str:
    return "赣B" + uuid.uuid4().hex[:5].upper()


async def a_driver(
    api: httpx.AsyncClient,
    redis: aioredis.Redis,
    plate: str | None = None,
    *,
    verified_by: dict[str, str] | None = None,
) -> tuple[str, str]:
    """A driver who logged in (and bound ``plate``): their token and account. With
    ``verified_by`` (an operator's headers) the plate is verified the way a driver does it:
    a claim with the 行驶证 photo, approved (a stay is billed to a verified holder only)."""
    phone = "138" + str(uuid.uuid4().int)[:8]
    sent = await api.post("/v1/auth/otp", json={"phone": phone})
    assert sent.status_code == 202, sent.text
    code = await notifier.latest_code(redis, sent.json()["phone"])
    issued = await api.post("/v1/auth/token", json={"phone": phone, "code": code})
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    if plate is not None:
        bound = await api.post("/v1/me/vehicles", json={"plate": plate}, headers=bearer(token))
        assert bound.status_code == 201, bound.text
        if verified_by is not None:
            claim = await api.post(
                "/v1/me/plate-claims",
                json={
                    "plate": plate,
                    "evidence": "行驶证 No. 360702-TEST",
                    "photo_ref": "upload/xsz.jpg",
                },
                headers=bearer(token),
            )
            assert claim.status_code == 201, claim.text
            approved = await api.post(
                f"/v1/operator/plate-claims/{claim.json()['id']}/approve",
                json={},
                headers=verified_by,
            )
            assert approved.status_code == 200, approved.text
    account: str = (await api.get("/v1/me", headers=bearer(token))).json()["id"]
    return token, account


async def contactless_on(
    api: httpx.AsyncClient, control: SandboxControl, token: str, plate: str
) -> str:
    """The driver authorised WeChat's parking service for the plate, then turned it on here."""
    openid = "o" + uuid.uuid4().hex[:20]
    await control.mandate(openid=openid, plate_number=plate)
    on = await api.put(
        f"/v1/me/contactless/{await vehicle_id(api, token, plate)}",
        json={"provider": "wechat", "payer_id": openid},
        headers=bearer(token),
    )
    assert on.status_code == 200, on.text
    mandate_id: str = on.json()["id"]
    return mandate_id


async def a_closed_stay(conn: asyncpg.Connection, plate: str) -> tuple[str, str]:
    """What the persister writes when a car left: a closed, priced session and its bill."""
    tariff = await conn.fetchrow("SELECT tariff_id, version FROM tariff_versions LIMIT 1")
    assert tariff is not None
    exit_at = datetime.now(UTC) - timedelta(minutes=5)
    session_id = f"s-{uuid.uuid4().hex[:16]}"
    async with conn.transaction():
        [bill_id] = await sessions.record(
            conn,
            [
                SessionChange(
                    id=session_id,
                    lot_id=DEMO,
                    status=SessionStatus.CLOSED,
                    plate=plate,
                    entry_at=exit_at - timedelta(hours=2),
                    exit_at=exit_at,
                    fee_fen=FEE,
                    tariff_id=tariff["tariff_id"],
                    tariff_version=tariff["version"],
                    pricing_reason="test",
                )
            ],
        )
    return session_id, bill_id


async def an_anomaly(conn: asyncpg.Connection, session_id: str, plate: str) -> str:
    anomaly_id = f"low_confidence:{uuid.uuid4().hex[:8]}"
    await conn.execute(
        "INSERT INTO anomalies (id, kind, lot_id, plate, session_id, created_at) "
        "VALUES ($1, 'low_confidence', $2, $3, $4, now())",
        anomaly_id,
        DEMO,
        plate,
        session_id,
    )
    return anomaly_id


async def resolve(
    api: httpx.AsyncClient, operator: dict[str, str], anomaly_id: str, **body: Any
) -> httpx.Response:
    return await api.post(
        f"/v1/operator/anomalies/{anomaly_id}/resolve", json=body, headers=operator
    )


async def deducted(
    pool: asyncpg.Pool, wechat: wechat_adapter.WechatPayProvider, bridge: Bridge, bill_id: str
) -> Deduction | None:
    """What the persister does right after the bill opened: ask the mandate's provider."""
    now = datetime.now(UTC)
    return await payment_contactless.on_bill_opened(
        pool,
        {"wechat": wechat},
        bill_id,
        entered_at=now - timedelta(hours=2),
        lot_name="赣州演示停车场",
        notify_base_url=bridge.base_url,
        now=now,
    )


async def status_of(conn: asyncpg.Connection, bill_id: str) -> str:
    return str((await bills.get(conn, bill_id)).status.value)


async def becomes(conn: asyncpg.Connection, bill_id: str, status: str, what: str) -> None:
    async def there() -> bool:
        return await status_of(conn, bill_id) == status

    await eventually(there, within=12.0, what=what)


async def paid_contactless(
    api: httpx.AsyncClient,
    redis: aioredis.Redis,
    control: SandboxControl,
    pool: asyncpg.Pool,
    wechat: wechat_adapter.WechatPayProvider,
    bridge: Bridge,
    conn: asyncpg.Connection,
    plate: str,
) -> tuple[str, str]:
    """The plate's holder pays contactless: its closed stay is deducted and paid. Returns
    (session, bill)."""
    token, _ = await a_driver(api, redis, plate)
    await contactless_on(api, control, token, plate)
    session_id, bill_id = await a_closed_stay(conn, plate)
    deduction = await deducted(pool, wechat, bridge, bill_id)
    assert deduction is not None
    assert deduction.status is DeductionStatus.ACCEPTED
    await becomes(conn, bill_id, "paid", "the deduction paying the bill")
    return session_id, bill_id


async def owed_by(conn: asyncpg.Connection, plate: str) -> list[str]:
    return [b.id for b in await bills.open_bills(conn, plate=plate)]


# --------------------------------------------------------------------------- point 2: void


async def test_voiding_a_closed_session_writes_off_its_open_bill(
    api: httpx.AsyncClient, operator: dict[str, str], city_db: asyncpg.Connection
) -> None:
    plate = a_plate()
    session_id, bill_id = await a_closed_stay(city_db, plate)
    anomaly_id = await an_anomaly(city_db, session_id, plate)
    assert await owed_by(city_db, plate) == [bill_id]

    got = await resolve(api, operator, anomaly_id, action="void", remark="a test car")

    assert got.status_code == 200, got.text
    assert await status_of(city_db, bill_id) == "written_off"
    assert await owed_by(city_db, plate) == []
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM ledger_transactions WHERE kind = 'write_off' "
            "AND correlation_id = $1",
            bill_id,
        )
        == 1
    )
    [event] = await city_db.fetch(
        "SELECT actor, remark FROM bill_events WHERE bill_id = $1 AND to_status = 'written_off'",
        bill_id,
    )
    assert event["actor"] == "operator:op-wang"
    assert "a test car" in event["remark"]
    details = json.loads(
        await city_db.fetchval(
            "SELECT details FROM audit_log WHERE action = 'anomaly.void' AND target = $1",
            f"anomaly:{anomaly_id}",
        )
    )
    assert details["money"]["written_off"] == [bill_id]
    await assert_books_straight(city_db)


async def test_voiding_a_closed_session_refunds_its_paid_bill_through_the_provider(
    api: httpx.AsyncClient,
    operator: dict[str, str],
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    control: SandboxControl,
    pool: asyncpg.Pool,
    wechat: wechat_adapter.WechatPayProvider,
    bridge: Bridge,
) -> None:
    plate = a_plate()
    session_id, bill_id = await paid_contactless(
        api, redis_client, control, pool, wechat, bridge, city_db, plate
    )
    anomaly_id = await an_anomaly(city_db, session_id, plate)

    got = await resolve(api, operator, anomaly_id, action="void", remark="barrier test run")

    assert got.status_code == 200, got.text
    [request] = await city_db.fetch(
        "SELECT out_trade_no, amount_fen, decided_by FROM refund_requests WHERE bill_id = $1",
        bill_id,
    )
    assert (request["amount_fen"], request["decided_by"]) == (FEE, "op-wang")
    await becomes(city_db, bill_id, "refunded", "the provider refunding the voided stay")
    bill = await bills.get(city_db, bill_id)
    assert bill.refunded_fen == FEE
    actions = {
        r["action"]
        for r in await city_db.fetch(
            "SELECT action FROM audit_log WHERE target = $1", f"bill:{bill_id}"
        )
    }
    assert {"refund.requested", "refund.completed"} <= actions
    assert await city_db.fetchval("SELECT status FROM sessions WHERE id = $1", session_id) == (
        "voided"
    )
    await assert_books_straight(city_db)


async def test_voiding_a_session_whose_payment_is_in_flight_is_refused_until_it_ends(
    api: httpx.AsyncClient,
    operator: dict[str, str],
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
) -> None:
    plate = a_plate()
    token, _ = await a_driver(api, redis_client, plate, verified_by=operator)
    session_id, bill_id = await a_closed_stay(city_db, plate)
    paying = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill_id]},
        headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert paying.status_code == 201, paying.text
    assert await status_of(city_db, bill_id) == "paying"
    anomaly_id = await an_anomaly(city_db, session_id, plate)

    got = await resolve(api, operator, anomaly_id, action="void", remark="a test car")

    assert got.status_code == 409, got.text
    assert "a payment is in flight" in got.json()["detail"]
    assert await city_db.fetchval("SELECT status FROM sessions WHERE id = $1", session_id) == (
        "closed"
    )
    assert await status_of(city_db, bill_id) == "paying"
    await assert_books_straight(city_db)


# --------------------------------------------------------------------------- point 2: fix-plate


async def test_fixing_the_plate_of_a_billed_session_moves_its_open_bill_to_the_right_plate(
    api: httpx.AsyncClient,
    operator: dict[str, str],
    city_db: asyncpg.Connection,
    city_db_url: str,
    redis_client: aioredis.Redis,
) -> None:
    wrong, right = a_plate(), a_plate()
    _, holder = await a_driver(api, redis_client, right, verified_by=operator)
    session_id, bill_id = await a_closed_stay(city_db, wrong)
    anomaly_id = await an_anomaly(city_db, session_id, wrong)
    told: list[str] = []
    listener = await asyncpg.connect(city_db_url)
    await listener.add_listener("parking_plate_owed", lambda *args: told.append(args[3]))

    try:
        got = await resolve(
            api, operator, anomaly_id, action="fix-plate", plate=right, remark="image shows 5"
        )
    finally:
        await listener.close()

    assert got.status_code == 200, got.text
    assert await owed_by(city_db, wrong) == []
    assert await owed_by(city_db, right) == [bill_id]
    bill = await bills.get(city_db, bill_id)
    assert (bill.plate, bill.account_id, bill.status.value) == (right, holder, "open")

    # The gateways' arrears flags of both plates follow (parking_plate_owed at commit).
    async def both_told() -> bool:
        return {wrong, right} <= set(told)

    await eventually(both_told, what="both plates notified as owing differently")
    await assert_books_straight(city_db)


async def test_fixing_the_plate_of_a_session_paid_at_the_cashier_is_refused_with_the_reason(
    api: httpx.AsyncClient,
    operator: dict[str, str],
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    control: SandboxControl,
) -> None:
    wrong, right = a_plate(), a_plate()
    token, _ = await a_driver(api, redis_client, wrong, verified_by=operator)
    session_id, bill_id = await a_closed_stay(city_db, wrong)
    paying = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill_id]},
        headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert paying.status_code == 201, paying.text
    await control.pay(paying.json()["out_trade_no"])
    await becomes(city_db, bill_id, "paid", "the cashier payment")
    anomaly_id = await an_anomaly(city_db, session_id, wrong)

    got = await resolve(
        api, operator, anomaly_id, action="fix-plate", plate=right, remark="misread"
    )

    assert got.status_code == 409, got.text
    problem = got.json()
    assert problem["type"].endswith("/plate-not-movable")
    assert "refund it through a dispute first" in problem["detail"]
    # Nothing of the decision was kept: the session, the bill and the anomaly are as they were.
    assert await city_db.fetchval("SELECT plate FROM sessions WHERE id = $1", session_id) == wrong
    assert (await bills.get(city_db, bill_id)).plate == wrong
    assert await city_db.fetchval("SELECT status FROM anomalies WHERE id = $1", anomaly_id) == (
        "open"
    )
    await assert_books_straight(city_db)


async def test_fixing_the_plate_refunds_the_wrong_plates_deduction_and_bills_the_right_plate(
    api: httpx.AsyncClient,
    operator: dict[str, str],
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    control: SandboxControl,
    pool: asyncpg.Pool,
    wechat: wechat_adapter.WechatPayProvider,
    bridge: Bridge,
) -> None:
    wrong, right = a_plate(), a_plate()
    session_id, bill_id = await paid_contactless(
        api, redis_client, control, pool, wechat, bridge, city_db, wrong
    )
    _, right_holder = await a_driver(api, redis_client, right, verified_by=operator)
    anomaly_id = await an_anomaly(city_db, session_id, wrong)

    got = await resolve(
        api, operator, anomaly_id, action="fix-plate", plate=right, remark="image shows 8 not B"
    )

    assert got.status_code == 200, got.text
    await becomes(city_db, bill_id, "refunded", "the wrong plate's deduction refunded")
    assert (await bills.get(city_db, bill_id)).refunded_fen == FEE
    [again] = await bills.open_bills(city_db, plate=right)
    assert (again.session_id, again.amount_fen, again.kind.value) == (session_id, FEE, "rebill")
    assert again.account_id == right_holder
    assert await owed_by(city_db, wrong) == []
    details = json.loads(
        await city_db.fetchval(
            "SELECT details FROM audit_log WHERE action = 'anomaly.fix-plate' AND target = $1",
            f"anomaly:{anomaly_id}",
        )
    )
    assert details["money"]["rebilled"] == [again.id]
    await assert_books_straight(city_db)


# --------------------------------------------------------------------------- point 3: mandates


async def mandate_state(conn: asyncpg.Connection, mandate_id: str) -> str:
    return str(
        await conn.fetchval("SELECT state FROM contactless_mandates WHERE id = $1", mandate_id)
    )


async def test_unbinding_a_plate_revokes_its_contactless_mandate(
    api: httpx.AsyncClient,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    control: SandboxControl,
) -> None:
    plate = a_plate()
    token, account = await a_driver(api, redis_client, plate)
    mandate_id = await contactless_on(api, control, token, plate)

    vehicle = await vehicle_id(api, token, plate)
    gone = await api.delete(f"/v1/me/vehicles/{vehicle}", headers=bearer(token))

    assert gone.status_code == 204, gone.text
    assert await mandate_state(city_db, mandate_id) == "revoked"
    [row] = await city_db.fetch(
        "SELECT actor, details FROM audit_log WHERE action = 'mandate.revoked' AND target = $1",
        f"plate:{plate}",
    )
    assert row["actor"] == account
    assert json.loads(row["details"])["mandate_id"] == mandate_id


async def test_a_plate_lost_to_an_approved_claim_takes_the_losers_mandate_with_it(
    api: httpx.AsyncClient,
    operator: dict[str, str],
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    control: SandboxControl,
    pool: asyncpg.Pool,
    wechat: wechat_adapter.WechatPayProvider,
    bridge: Bridge,
) -> None:
    plate = a_plate()
    squatter, _ = await a_driver(api, redis_client, plate)
    mandate_id = await contactless_on(api, control, squatter, plate)
    owner, owner_account = await a_driver(api, redis_client)
    claim = await api.post(
        "/v1/me/plate-claims",
        json={"plate": plate, "evidence": "行驶证 No. 360702-TEST", "photo_ref": "upload/xsz.jpg"},
        headers=bearer(owner),
    )
    assert claim.status_code == 201, claim.text

    approved = await api.post(
        f"/v1/operator/plate-claims/{claim.json()['id']}/approve", json={}, headers=operator
    )

    assert approved.status_code == 200, approved.text
    assert await mandate_state(city_db, mandate_id) == "revoked"
    # The owner's next stay is not deducted from the squatter's WeChat account.
    _, bill_id = await a_closed_stay(city_db, plate)
    assert await deducted(pool, wechat, bridge, bill_id) is None
    bill = await bills.get(city_db, bill_id)
    assert (bill.status.value, bill.account_id) == ("open", owner_account)
    assert await city_db.fetchval("SELECT count(*) FROM contactless_deductions") == 0
    await assert_books_straight(city_db)


async def test_no_deduction_is_asked_under_a_mandate_of_an_account_that_lost_the_plate(
    api: httpx.AsyncClient,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    control: SandboxControl,
    pool: asyncpg.Pool,
    wechat: wechat_adapter.WechatPayProvider,
    bridge: Bridge,
) -> None:
    plate = a_plate()
    token, _ = await a_driver(api, redis_client, plate)
    mandate_id = await contactless_on(api, control, token, plate)
    # A mandate left behind by a binding released before mandates followed the holder.
    await city_db.execute(
        "UPDATE vehicles SET released_at = now(), released_reason = 'unbound' "
        "WHERE plate = $1 AND released_at IS NULL",
        plate,
    )
    assert await mandate_state(city_db, mandate_id) == "active"
    _, bill_id = await a_closed_stay(city_db, plate)

    assert await deducted(pool, wechat, bridge, bill_id) is None

    assert await status_of(city_db, bill_id) == "open"
    assert await city_db.fetchval("SELECT count(*) FROM contactless_deductions") == 0
    assert await city_db.fetchval("SELECT count(*) FROM payment_attempts") == 0
