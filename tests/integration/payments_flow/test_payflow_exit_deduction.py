"""无感支付 at the exit: the persister bills the closed session in its transaction,
then its contactless hook asks the provider for the deduction right away."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from payflow_support import LOT, TARIFF, Bridge, assert_books_straight, bill_status, eventually
from payment_servers import SandboxControl
from test_payflow_contactless import mandated

from parking import config
from parking.clock import SystemClock
from parking.occupancy import records as occupancy_records
from parking.occupancy.model import AnomalyKind
from parking.payments.providers.wechat import WechatPayProvider
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus
from parking.workers.persister import ContactlessHook


async def test_a_mandated_plate_is_deducted_as_soon_as_its_exit_is_persisted(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
    db_url: str,
) -> None:
    _account, plate = await mandated(pool, control, wechat)
    exit_at = datetime.now(UTC)
    closed = SessionChange(
        id="s-exit-deduction",
        lot_id=LOT,
        status=SessionStatus.CLOSED,
        plate=plate,
        entry_at=exit_at - timedelta(hours=2),
        exit_at=exit_at,
        fee_fen=700,
        tariff_id=TARIFF,
        tariff_version=1,
        pricing_reason="tariff",
        quote=b'{"total_fen": 700}',
    )
    # What the persister does with an exit: the session and its bill in one transaction.
    async with city_conn.transaction():
        opened = await sessions.record(city_conn, [closed], now=exit_at)
    assert len(opened) == 1
    assert await bill_status(city_conn, opened[0]) == "open"

    settings = config.load({**os.environ, "PARKING_DATABASE_URL": db_url})
    hook = ContactlessHook(
        settings,
        providers={"wechat": wechat},
        clock=SystemClock(),
        notify_base_url=bridge.base_url,
    )
    try:
        await hook(opened)
    finally:
        await hook.close()
    # Accepted: the car has left and the bill waits for the result, which pays it.
    assert await bill_status(city_conn, opened[0]) in {"paying", "paid"}

    async def paid() -> bool:
        return await bill_status(city_conn, opened[0]) == "paid"

    await eventually(paid, what="the deduction result paying the exit's bill")
    await assert_books_straight(city_conn)


async def test_a_stay_waiting_for_review_is_never_deducted_until_an_operator_confirms_it(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
    db_url: str,
) -> None:
    """mqtt.md "Clocks" 4: a stay past the lot's review limits is billed as usual, but its
    plate's mandate is not charged while its fee_review anomaly is open."""
    _account, plate = await mandated(pool, control, wechat)
    exit_at = datetime.now(UTC)
    closed = SessionChange(
        id="s-review-deduction",
        lot_id=LOT,
        status=SessionStatus.CLOSED,
        plate=plate,
        entry_at=exit_at - timedelta(days=8),
        exit_at=exit_at,
        fee_fen=12_000,
        tariff_id=TARIFF,
        tariff_version=1,
        pricing_reason="tariff",
        quote=b'{"total_fen": 12000}',
        flags=(AnomalyKind.FEE_REVIEW,),
    )
    # What the persister writes for such an exit: the session, its bill and the
    # review anomaly, in one transaction.
    async with city_conn.transaction():
        opened = await sessions.record(city_conn, [closed], now=exit_at)
        await occupancy_records.insert_anomalies(
            city_conn,
            [
                (
                    f"{AnomalyKind.FEE_REVIEW}:gate-out:1",
                    AnomalyKind.FEE_REVIEW,
                    LOT,
                    "gate-out",
                    plate,
                    closed.id,
                    None,
                    '{"review": "long_stay", "fee_fen": 12000}',
                    exit_at,
                )
            ],
        )
    [bill_id] = opened

    settings = config.load({**os.environ, "PARKING_DATABASE_URL": db_url})
    hook = ContactlessHook(
        settings, providers={"wechat": wechat}, clock=SystemClock(), notify_base_url=bridge.base_url
    )
    try:
        await hook(opened)
        # billed as usual, and nobody asked the provider for the money
        assert await bill_status(city_conn, bill_id) == "open"
        assert (
            await city_conn.fetchval(
                "SELECT count(*) FROM contactless_deductions WHERE bill_id = $1", bill_id
            )
            == 0
        )
        # An operator confirms the fee (resolves the anomaly): the bill may be deducted.
        await city_conn.execute(
            "UPDATE anomalies SET status = 'resolved', resolved_at = now(), "
            "resolution = 'confirm-fee: checked the images' WHERE session_id = $1",
            closed.id,
        )
        await hook(opened)
    finally:
        await hook.close()
    assert await bill_status(city_conn, bill_id) in {"paying", "paid"}
