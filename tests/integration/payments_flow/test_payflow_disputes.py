"""Disputes through the real API: a driver disputes, finance approves (a full or partial refund
through the sandbox, reversing the revenue in the ledger; a write-off of an unpaid bill) or
rejects, each step in the audit log with the operator and the remark."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from payflow_support import (
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
from parking.payments import sweeper
from parking.payments.providers.wechat import WechatPayProvider

FINANCE = "wang.fin"


def as_driver(token_for: Callable[..., str], account: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(Role.DRIVER, account)}"}


def as_finance(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(Role.FINANCE, FINANCE)}"}


async def paid_bill(
    api: httpx.AsyncClient,
    control: SandboxControl,
    conn: asyncpg.Connection,
    token_for: Callable[..., str],
    amount: int = 500,
) -> tuple[str, Bill, str]:
    account = new_account()
    bill = await open_bill(conn, amount, account_id=account)
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill.id]},
        headers={**as_driver(token_for, account), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201
    no = response.json()["out_trade_no"]
    await control.pay(no)

    async def paid() -> bool:
        return await bill_status(conn, bill.id) == "paid"

    await eventually(paid, what="the bill paid")
    return account, bill, no


async def dispute(
    api: httpx.AsyncClient, token_for: Callable[..., str], account: str, bill: Bill
) -> dict[str, Any]:
    response = await api.post(
        f"/v1/bills/{bill.id}/dispute",
        json={"reason": "我只停了十分钟"},
        headers=as_driver(token_for, account),
    )
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    assert view["status"] == "open"
    assert view["bill_status"] == "disputed"
    return view


async def audit_trail(conn: asyncpg.Connection, bill_id: str) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        "SELECT actor, action, details FROM audit_log WHERE target = $1 ORDER BY id",
        f"bill:{bill_id}",
    )
    return [
        (row["actor"], row["action"], json.loads(row["details"]).get("remark", "")) for row in rows
    ]


async def refunded_fen(conn: asyncpg.Connection, bill_id: str) -> int:
    return int(await conn.fetchval("SELECT refunded_fen FROM bills WHERE id = $1", bill_id))


@pytest.mark.parametrize(("amount", "refund"), [(500, None), (500, 200)])
async def test_an_approved_dispute_refunds_through_the_provider_and_the_ledger(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
    amount: int,
    refund: int | None,
) -> None:
    account, bill, no = await paid_bill(api, control, city_conn, token_for, amount)
    opened = await dispute(api, token_for, account, bill)
    listed = await api.get("/v1/finance/disputes", headers=as_finance(token_for))
    assert [d["id"] for d in listed.json()] == [opened["id"]]
    body: dict[str, Any] = {"remark": "入场记录有误，退款"}
    if refund is not None:
        body["amount_fen"] = refund
    approved = await api.post(
        f"/v1/finance/disputes/{opened['id']}/approve", json=body, headers=as_finance(token_for)
    )
    assert approved.status_code == 200, approved.text
    view = approved.json()
    expected = refund or amount
    assert (view["status"], view["refund_fen"], view["decided_by"]) == (
        "approved",
        expected,
        FINANCE,
    )

    async def refunded() -> bool:
        return await refunded_fen(city_conn, bill.id) == expected

    await eventually(refunded, what="the provider's refund confirmation")
    assert await bill_status(city_conn, bill.id) == "refunded"
    [refund_tx] = [
        tx for tx in await ledger.transactions_of(city_conn, bill.id) if tx.kind.value == "refund"
    ]
    assert {(p.account, p.amount_fen) for p in refund_tx.postings} == {
        ("refunds:GZ-PF-01", expected),
        ("clearing:wechat", -expected),
    }
    order = (await control._http.get(f"{control._base}/sandbox/orders/{no}")).json()
    assert [(r["refund_fen"], r["status"]) for r in order["refunds"]] == [(expected, "SUCCESS")]
    trail = await audit_trail(city_conn, bill.id)
    assert trail[0][:2] == (account, "dispute.opened")
    assert trail[1] == (FINANCE, "dispute.approved", "入场记录有误，退款")
    assert trail[2][:2] == ("payments", "refund.completed")
    after = await api.get(
        "/v1/finance/disputes", params={"status": "approved"}, headers=as_finance(token_for)
    )
    assert [d["refund_status"] for d in after.json()] == ["refunded"]
    await assert_books_straight(city_conn)


async def test_a_rejected_dispute_returns_the_bill_to_paid_with_an_audited_remark(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
) -> None:
    account, bill, _ = await paid_bill(api, control, city_conn, token_for)
    opened = await dispute(api, token_for, account, bill)
    rejected = await api.post(
        f"/v1/finance/disputes/{opened['id']}/reject",
        json={"remark": "视频显示停车两小时"},
        headers=as_finance(token_for),
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert await bill_status(city_conn, bill.id) == "paid"
    assert await ledger_count(city_conn, "refund", bill.id) == 0
    trail = await audit_trail(city_conn, bill.id)
    assert trail[-1] == (FINANCE, "dispute.rejected", "视频显示停车两小时")
    again = await api.post(
        f"/v1/finance/disputes/{opened['id']}/approve",
        json={"remark": "changed my mind"},
        headers=as_finance(token_for),
    )
    assert again.status_code == 409
    await assert_books_straight(city_conn)


async def test_an_upheld_dispute_of_an_unpaid_bill_writes_it_off(
    api: httpx.AsyncClient, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 700, account_id=account)
    opened = await dispute(api, token_for, account, bill)
    approved = await api.post(
        f"/v1/finance/disputes/{opened['id']}/approve",
        json={"remark": "设备故障，免单"},
        headers=as_finance(token_for),
    )
    assert approved.status_code == 200
    assert approved.json()["written_off"] is True
    assert await bill_status(city_conn, bill.id) == "written_off"
    assert await ledger_count(city_conn, "write_off", bill.id) == 1
    await assert_books_straight(city_conn)


async def test_a_refund_the_provider_could_not_take_is_sent_again_by_the_sweeper(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    wechat: WechatPayProvider,
    token_for: Callable[..., str],
    bridge: Any,
) -> None:
    account, bill, _ = await paid_bill(api, control, city_conn, token_for)
    opened = await dispute(api, token_for, account, bill)
    await control.control("outage", enabled=True)
    approved = await api.post(
        f"/v1/finance/disputes/{opened['id']}/approve",
        json={"remark": "退款"},
        headers=as_finance(token_for),
    )
    await control.control("outage", enabled=False)
    assert approved.status_code == 200
    assert approved.json()["refund_status"] == "approved"  # decided, not paid out yet
    assert await bill_status(city_conn, bill.id) == "disputed"
    report = await sweeper.sweep_once(
        pool,
        {"wechat": wechat},
        now=datetime.now(UTC) + timedelta(minutes=1),
        notify_base_url=bridge.base_url,
    )
    assert report.refunds_pending == 1  # sent; the provider is processing it

    async def refunded() -> bool:
        return await bill_status(city_conn, bill.id) == "refunded"

    await eventually(refunded, what="the re-sent refund confirmed")
    await assert_books_straight(city_conn)


async def test_a_driver_cannot_dispute_someone_elses_bill_and_cannot_use_finance_routes(
    api: httpx.AsyncClient, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    bill = await open_bill(city_conn, 500, account_id=new_account())
    stranger = new_account()
    response = await api.post(
        f"/v1/bills/{bill.id}/dispute",
        json={"reason": "not mine"},
        headers=as_driver(token_for, stranger),
    )
    assert response.status_code == 404
    assert await bill_status(city_conn, bill.id) == "open"
    forbidden = await api.get("/v1/finance/disputes", headers=as_driver(token_for, stranger))
    assert forbidden.status_code == 403
    anomalies = await api.get(
        "/v1/finance/payment-anomalies", headers=as_driver(token_for, stranger)
    )
    assert anomalies.status_code == 403
