"""Contactless payment (无感支付): a deduction at exit, the result later; any failure leaves
an ordinary open bill (leave first, pay later)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from payflow_support import (
    Bridge,
    assert_books_straight,
    bill_status,
    eventually,
    new_account,
    new_plate,
    open_bill,
)
from payment_servers import SandboxControl

from parking.auth.model import Role
from parking.ids import new_id
from parking.payments import contactless as payment_contactless
from parking.payments import sweeper, txn
from parking.payments.model import Deduction, DeductionStatus, MandateNotAuthorised, MandateState
from parking.payments.providers.wechat import WechatPayProvider

LOT_NAME = "支付测试停车场"


async def a_holder(pool: asyncpg.Pool, plate: str) -> str:
    """An account that has the plate bound (a mandate pays only for its holder's plate)."""
    now = datetime.now(UTC)
    account = new_id("acc", now)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO accounts (id, phone, created_at) VALUES ($1, $2, $3)",
            account,
            "+86139" + str(uuid.uuid4().int)[:8],
            now,
        )
        # Bound and verified as the accounts domain stores a plate the provider confirmed
        # (its audit line is not this suite's story).
        await conn.execute(
            "INSERT INTO vehicles (id, account_id, plate, bound_at, verified_at, verified_by)"
            " VALUES ($1, $2, $3, $4, $4, 'provider:wechat')",
            new_id("veh", now),
            account,
            plate,
            now,
        )
    return account


async def mandated(
    pool: asyncpg.Pool,
    control: SandboxControl,
    wechat: WechatPayProvider,
    *,
    outcome: str = "success",
) -> tuple[str, str]:
    """A plate whose driver (holding it: issue 10 point 3) authorised contactless payment at
    the provider and with us."""
    plate, openid = new_plate(), "o" + uuid.uuid4().hex[:20]
    account = await a_holder(pool, plate)
    await control.mandate(openid=openid, plate_number=plate, outcome=outcome)
    mandate = await payment_contactless.enable_mandate(
        pool,
        wechat,
        plate=plate,
        payer_id=openid,
        account_id=account,
        by=account,
        now=datetime.now(UTC),
    )
    assert mandate.state is MandateState.ACTIVE
    return account, plate


async def deduct(
    pool: asyncpg.Pool, wechat: WechatPayProvider, bridge: Bridge, bill_id: str
) -> Deduction | None:
    now = datetime.now(UTC)
    return await payment_contactless.on_bill_opened(
        pool,
        {"wechat": wechat},
        bill_id,
        entered_at=now - timedelta(hours=2),
        lot_name=LOT_NAME,
        notify_base_url=bridge.base_url,
        now=now,
    )


async def test_an_accepted_deduction_pays_the_bill_when_its_result_is_notified(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
) -> None:
    account, plate = await mandated(pool, control, wechat)
    bill = await open_bill(city_conn, 900, account_id=account, plate=plate)
    deduction = await deduct(pool, wechat, bridge, bill.id)
    assert deduction is not None
    assert deduction.status is DeductionStatus.ACCEPTED
    assert await bill_status(city_conn, bill.id) == "paying"  # the car leaves now

    async def paid() -> bool:
        return await bill_status(city_conn, bill.id) == "paid"

    await eventually(paid, what="the deduction result paying the bill")
    again = await deduct(pool, wechat, bridge, bill.id)
    assert again is not None
    assert again.id == deduction.id
    assert again.status is DeductionStatus.SUCCEEDED
    await assert_books_straight(city_conn)


async def test_a_failed_deduction_leaves_an_open_bill_the_driver_pays_later(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
    token_for: Callable[..., str],
) -> None:
    account, plate = await mandated(pool, control, wechat, outcome="fail")
    bill = await open_bill(city_conn, 900, account_id=account, plate=plate)
    deduction = await deduct(pool, wechat, bridge, bill.id)
    assert deduction is not None
    assert deduction.status is DeductionStatus.ACCEPTED

    async def reopened() -> bool:
        return await bill_status(city_conn, bill.id) == "open"

    await eventually(reopened, what="the failed deduction reopening the bill")
    async with pool.acquire() as conn:
        failed = await txn.deduction_of_bill(conn, bill.id)  # type: ignore[arg-type]
    assert failed is not None
    assert failed.status is DeductionStatus.FAILED
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill.id]},
        headers={
            "Authorization": f"Bearer {token_for(Role.DRIVER, account)}",
            "Idempotency-Key": "later",
        },
    )
    assert response.status_code == 201
    await control.pay(response.json()["out_trade_no"])

    async def paid() -> bool:
        return await bill_status(city_conn, bill.id) == "paid"

    await eventually(paid, what="the later payment")
    await assert_books_straight(city_conn)


async def test_a_plate_the_provider_no_longer_serves_is_refused_and_its_bill_stays_open(
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
) -> None:
    account, plate = await mandated(pool, control, wechat)
    openid = "o" + uuid.uuid4().hex[:20]
    # The driver switched the service off in WeChat; we have not heard yet.
    await control.mandate(openid=openid, plate_number=plate, state="OUT_SERVICE")
    bill = await open_bill(city_conn, 900, account_id=account, plate=plate)
    deduction = await deduct(pool, wechat, bridge, bill.id)
    assert deduction is not None
    assert deduction.status is DeductionStatus.REFUSED
    assert deduction.refusal_code == "OUT_SERVICE"
    assert await bill_status(city_conn, bill.id) == "open"
    await assert_books_straight(city_conn)


async def test_provider_unavailable_at_exit_leaves_an_open_bill_and_is_rechecked(
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
) -> None:
    account, plate = await mandated(pool, control, wechat)
    bill = await open_bill(city_conn, 900, account_id=account, plate=plate)
    await control.control("outage", enabled=True)
    deduction = await deduct(pool, wechat, bridge, bill.id)
    await control.control("outage", enabled=False)
    assert deduction is not None
    assert deduction.status is DeductionStatus.UNAVAILABLE
    assert await bill_status(city_conn, bill.id) == "open"
    recheck = await city_conn.fetchval(
        "SELECT recheck FROM payment_attempts WHERE id = $1", deduction.attempt_id
    )
    assert recheck is True
    # The sweeper asks whether the timed-out request was taken after all: it was not.
    report = await sweeper.sweep_once(
        pool,
        {"wechat": wechat},
        now=datetime.now(UTC) + timedelta(minutes=1),
        stuck_after=timedelta(0),
    )
    assert report.queried == 1
    recheck = await city_conn.fetchval(
        "SELECT recheck FROM payment_attempts WHERE id = $1", deduction.attempt_id
    )
    assert recheck is False


async def test_no_mandate_means_no_deduction(
    bridge: Bridge, city_conn: asyncpg.Connection, pool: asyncpg.Pool, wechat: WechatPayProvider
) -> None:
    bill = await open_bill(city_conn, 900, account_id=new_account())
    assert await deduct(pool, wechat, bridge, bill.id) is None
    assert await bill_status(city_conn, bill.id) == "open"


async def test_a_mandate_is_only_enabled_when_the_provider_shows_it_authorised(
    control: SandboxControl, pool: asyncpg.Pool, wechat: WechatPayProvider
) -> None:
    with pytest.raises(MandateNotAuthorised):
        await payment_contactless.enable_mandate(
            pool,
            wechat,
            plate=new_plate(),
            payer_id="oNobody",
            account_id=new_account(),
            by="test",
            now=datetime.now(UTC),
        )


async def test_a_disabled_mandate_stops_deductions(
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
) -> None:
    account, plate = await mandated(pool, control, wechat)
    async with city_conn.transaction():
        revoked = await payment_contactless.disable_mandate(
            city_conn, provider="wechat", plate=plate, by=account, now=datetime.now(UTC)
        )
    assert revoked is not None
    assert revoked.state is MandateState.REVOKED
    bill = await open_bill(city_conn, 900, account_id=account, plate=plate)
    assert await deduct(pool, wechat, bridge, bill.id) is None
    audit = await city_conn.fetch(
        "SELECT action FROM audit_log WHERE target = $1 ORDER BY id", f"plate:{plate}"
    )
    assert [row["action"] for row in audit] == ["mandate.enabled", "mandate.disabled"]
