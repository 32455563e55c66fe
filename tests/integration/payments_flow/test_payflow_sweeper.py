"""The sweeper (reliability matrix P7) and money arriving for attempts we had given up on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from payflow_support import (
    Bridge,
    assert_books_straight,
    bill_status,
    eventually,
    ledger_count,
    new_account,
    open_bill,
)
from payment_servers import SandboxControl

from parking.auth.model import Role
from parking.bills.model import Bill
from parking.ledger import service as ledger
from parking.payments import notifications as payment_notifications
from parking.payments import pay as pay_flow
from parking.payments import sweeper
from parking.payments.model import AttemptStatus, Payer
from parking.payments.port import ProviderUnavailable
from parking.payments.providers.wechat import WechatPayProvider

NOW_SLACK = timedelta(0)


async def pay(
    api: httpx.AsyncClient, token_for: Callable[..., str], account: str, bill: Bill
) -> dict[str, Any]:
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill.id]},
        headers={
            "Authorization": f"Bearer {token_for(Role.DRIVER, account)}",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    return view


async def attempt_status(conn: asyncpg.Connection, out_trade_no: str) -> str:
    return str(
        await conn.fetchval(
            "SELECT status FROM payment_attempts WHERE out_trade_no = $1", out_trade_no
        )
    )


async def test_a_payment_whose_notification_was_dropped_is_settled_by_the_sweeper(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
    token_for: Callable[..., str],
) -> None:
    await control.control("notifications", mode="drop")
    account = new_account()
    bill = await open_bill(city_conn, 650, account_id=account)
    view = await pay(api, token_for, account, bill)
    await control.pay(view["out_trade_no"])
    await asyncio.sleep(0.3)
    assert await bill_status(city_conn, bill.id) == "paying"  # the provider never called
    now = datetime.now(UTC)
    report = await sweeper.sweep_once(pool, {"wechat": wechat}, now=now, stuck_after=NOW_SLACK)
    assert (report.queried, report.settled) == (1, 1)
    assert await bill_status(city_conn, bill.id) == "paid"
    assert await attempt_status(city_conn, view["out_trade_no"]) == "paid"
    assert await ledger_count(city_conn, "bill_paid", bill.id) == 1
    again = await sweeper.sweep_once(
        pool, {"wechat": wechat}, now=now + timedelta(minutes=5), stuck_after=NOW_SLACK
    )
    assert again.queried == 0
    await assert_books_straight(city_conn)


async def test_an_unpaid_order_is_left_until_it_expires_then_closed_and_its_bill_reopened(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
    token_for: Callable[..., str],
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    view = await pay(api, token_for, account, bill)
    no = view["out_trade_no"]
    providers = {"wechat": wechat}
    now = datetime.now(UTC)
    early = await sweeper.sweep_once(pool, providers, now=now, stuck_after=NOW_SLACK)
    assert (early.queried, early.still_pending) == (1, 1)
    assert await bill_status(city_conn, bill.id) == "paying"
    late = await sweeper.sweep_once(
        pool, providers, now=now + timedelta(minutes=20), stuck_after=NOW_SLACK
    )
    assert late.expired == 1
    assert await attempt_status(city_conn, no) == "expired"
    assert await bill_status(city_conn, bill.id) == "open"
    order = (await control._http.get(f"{control._base}/sandbox/orders/{no}")).json()
    assert order["state"] == "CLOSED"  # closed at the provider: it can never be paid now
    # Leave first, pay later: the driver simply pays again.
    again = await pay(api, token_for, account, bill)
    assert again["out_trade_no"] != no
    await assert_books_straight(city_conn)


class Unreachable:
    """The provider never hears of the order: the process died right after committing it."""

    name = "wechat"

    async def create_order(self, *args: Any, **kwargs: Any) -> Any:
        raise ProviderUnavailable("wechat", "NETWORK", "connection refused")


async def test_an_attempt_whose_order_never_reached_the_provider_expires_and_frees_the_bill(
    city_conn: asyncpg.Connection, pool: asyncpg.Pool, wechat: WechatPayProvider, bridge: Bridge
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    now = datetime.now(UTC)
    with pytest.raises(ProviderUnavailable):
        await pay_flow.pay(
            pool,
            Unreachable(),  # type: ignore[arg-type]
            bill_ids=[bill.id],
            payer=Payer(account_id=account),
            idempotency_key="never-sent",
            notify_url=f"{bridge.base_url}/v1/payments/notify/wechat",
            now=now,
        )
    assert await bill_status(city_conn, bill.id) == "paying"
    report = await sweeper.sweep_once(
        pool, {"wechat": wechat}, now=now + timedelta(minutes=20), stuck_after=NOW_SLACK
    )
    assert report.expired == 1
    assert await bill_status(city_conn, bill.id) == "open"


async def test_money_taken_for_an_expired_attempt_still_pays_the_owed_bill(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    token_for: Callable[..., str],
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    view = await pay(api, token_for, account, bill)
    # Our side gave up (our clock ran ahead of the provider's), the driver paid anyway.
    assert await payment_notifications.end_attempt(
        pool, view["id"], AttemptStatus.EXPIRED, reason="test", now=datetime.now(UTC)
    )
    assert await bill_status(city_conn, bill.id) == "open"
    await control.pay(view["out_trade_no"])

    async def paid() -> bool:
        return await bill_status(city_conn, bill.id) == "paid"

    await eventually(paid, what="the late payment applied")
    row = await city_conn.fetchrow(
        "SELECT kind, status, action FROM payment_anomalies WHERE out_trade_no = $1",
        view["out_trade_no"],
    )
    assert dict(row) == {"kind": "paid_after_close", "status": "resolved", "action": "applied"}
    await assert_books_straight(city_conn)


async def test_a_second_payment_of_a_paid_bill_is_refunded_automatically(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    token_for: Callable[..., str],
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    first = await pay(api, token_for, account, bill)
    assert await payment_notifications.end_attempt(
        pool, first["id"], AttemptStatus.EXPIRED, reason="test", now=datetime.now(UTC)
    )
    second = await pay(api, token_for, account, bill)
    await control.pay(second["out_trade_no"])

    async def paid() -> bool:
        return await bill_status(city_conn, bill.id) == "paid"

    await eventually(paid, what="the second order paying the bill")
    # The driver also pays the first QR code, still open at the provider.
    await control.pay(first["out_trade_no"])

    async def refunded() -> bool:
        row = await city_conn.fetchrow(
            "SELECT status FROM refund_requests WHERE out_trade_no = $1", first["out_trade_no"]
        )
        return row is not None and row["status"] == "refunded"

    await eventually(refunded, what="the duplicate payment refunded")
    anomaly = await city_conn.fetchrow(
        "SELECT kind, status, action, amount_fen FROM payment_anomalies WHERE out_trade_no = $1",
        first["out_trade_no"],
    )
    assert dict(anomaly) == {
        "kind": "duplicate_payment",
        "status": "resolved",
        "action": "auto_refund",
        "amount_fen": 500,
    }
    order = (
        await control._http.get(f"{control._base}/sandbox/orders/{first['out_trade_no']}")
    ).json()
    assert [(r["refund_fen"], r["status"]) for r in order["refunds"]] == [(500, "SUCCESS")]
    bill_row = await city_conn.fetchrow(
        "SELECT status, payment_ref, refunded_fen FROM bills WHERE id = $1", bill.id
    )
    assert dict(bill_row) == {
        "status": "paid",
        "payment_ref": second["out_trade_no"],
        "refunded_fen": 0,
    }
    assert await ledger_count(city_conn, "bill_paid", bill.id) == 1
    # The second 500 fen were on the ledger the whole time: held in suspense when
    # they arrived, paid back out of it when the provider confirmed the refund.
    anomaly_id = await city_conn.fetchval(
        "SELECT id FROM payment_anomalies WHERE out_trade_no = $1", first["out_trade_no"]
    )
    held = await ledger.transactions_of(city_conn, anomaly_id)
    assert [
        (tx.kind.value, sorted((p.account, p.amount_fen) for p in tx.postings)) for tx in held
    ] == [
        ("suspense", [("clearing:wechat", 500), ("suspense:wechat", -500)]),
        ("refund", [("clearing:wechat", -500), ("suspense:wechat", 500)]),
    ]
    assert await ledger.account_balance(city_conn, "suspense:wechat") == 0
    await assert_books_straight(city_conn)
