"""Drivers paying bills through the real API and the sandbox provider (matrix P8 and the
end-to-end flow whose ledger ``parking ledger trial-balance`` must show balanced)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
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
from parking.payments.port import ProviderUnavailable

Client = httpx.AsyncClient


def driver(token_for: Callable[..., str], account: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token_for(Role.DRIVER, account)}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


async def attempts_of(conn: asyncpg.Connection, bill_id: str) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM payment_bills WHERE bill_id = $1", bill_id)
    )


async def test_driver_pays_two_bills_with_one_order_and_the_notification_pays_each_once(
    api: Client,
    city_conn: asyncpg.Connection,
    control: SandboxControl,
    token_for: Callable[..., str],
    db_url: str,
) -> None:
    account = new_account()
    first = await open_bill(city_conn, 500, account_id=account)
    second = await open_bill(city_conn, 1200, account_id=account)
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [second.id, first.id], "provider": "wechat"},
        headers=driver(token_for, account, "pay-1"),
    )
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["amount_fen"] == 1700
    assert view["status"] == "pending"
    assert view["code_url"].startswith("weixin://wxpay/bizpayurl")
    assert sorted(view["bill_ids"]) == sorted([first.id, second.id])
    assert len(view["out_trade_no"]) <= 32
    assert await bill_status(city_conn, first.id) == "paying"

    await control.pay(view["out_trade_no"])

    async def paid() -> bool:
        return {await bill_status(city_conn, b.id) for b in (first, second)} == {"paid"}

    await eventually(paid, what="both bills paid")
    for bill in (first, second):
        assert await ledger_count(city_conn, "bill_paid", bill.id) == 1
    polled = await api.get(f"/v1/payments/{view['id']}", headers=driver(token_for, account))
    assert polled.status_code == 200
    assert polled.json()["status"] == "paid"
    await assert_books_straight(city_conn)
    # The end-to-end run's books, as finance prints them every morning.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parking",
        "ledger",
        "trial-balance",
        "--json",
        env={**os.environ, "PARKING_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    balance = json.loads(out)
    assert balance["total_fen"] == 0
    by_account = {a["account"]: a["balance_fen"] for a in balance["accounts"]}
    assert by_account["clearing:wechat"] == 1700
    assert by_account["receivables"] == 0


async def test_another_drivers_bill_is_not_found_and_nothing_is_ordered(
    api: Client, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    bill = await open_bill(city_conn, 500, account_id=new_account())
    unowned = await open_bill(city_conn, 300, account_id=None)
    for target in (bill, unowned):
        response = await api.post(
            "/v1/bills/pay",
            json={"bill_ids": [target.id]},
            headers=driver(token_for, new_account(), f"k-{target.id}"),
        )
        assert response.status_code == 404, response.text
        assert await bill_status(city_conn, target.id) == "open"
        assert await attempts_of(city_conn, target.id) == 0


async def test_pay_without_an_idempotency_key_is_a_bad_request(
    api: Client, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    response = await api.post(
        "/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=driver(token_for, account)
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"]
    assert await attempts_of(city_conn, bill.id) == 0


async def test_extra_fields_in_the_pay_body_are_refused(
    api: Client, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill.id], "amount_fen": 1},
        headers=driver(token_for, account, "extra"),
    )
    assert response.status_code == 400


async def test_retry_with_the_same_key_replays_the_response_and_makes_one_order(
    api: Client,
    city_conn: asyncpg.Connection,
    control: SandboxControl,
    token_for: Callable[..., str],
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 800, account_id=account)
    headers = driver(token_for, account, "same-key")
    responses = [
        await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
        for _ in range(3)
    ]
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert responses[1].content == responses[0].content == responses[2].content
    assert responses[1].headers.get("idempotent-replayed") == "true"
    assert await attempts_of(city_conn, bill.id) == 1
    # The provider has exactly the one order.
    order = await control._http.get(
        f"{control._base}/sandbox/orders/{responses[0].json()['out_trade_no']}"
    )
    assert order.status_code == 200
    assert order.json()["amount_fen"] == 800


async def test_same_key_with_another_body_is_422(
    api: Client, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    account = new_account()
    first = await open_bill(city_conn, 500, account_id=account)
    second = await open_bill(city_conn, 600, account_id=account)
    headers = driver(token_for, account, "reused")
    ok = await api.post("/v1/bills/pay", json={"bill_ids": [first.id]}, headers=headers)
    assert ok.status_code == 201
    other = await api.post("/v1/bills/pay", json={"bill_ids": [second.id]}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    assert await attempts_of(city_conn, second.id) == 0
    assert await bill_status(city_conn, second.id) == "open"


async def test_a_bill_paid_in_the_browser_gets_the_cashier_page_which_comes_back_to_the_page(
    api: Client,
    city_conn: asyncpg.Connection,
    control: SandboxControl,
    token_for: Callable[..., str],
) -> None:
    """channel h5 (the page a scanned code opens): the provider's cashier page, which
    returns to ``return_to`` on the platform's public address; paid like any order."""
    account = new_account()
    bill = await open_bill(city_conn, 700, account_id=account)
    body = {"bill_ids": [bill.id], "channel": "h5", "return_to": "/q/tok_EN-1?paid=1"}
    for wrong, why in (
        ({"bill_ids": [bill.id], "channel": "h5"}, "needs return_to"),
        ({"bill_ids": [bill.id], "return_to": "/q/tok"}, "channel h5"),
        ({**body, "return_to": "https://evil.example/q/x"}, "return_to"),
        ({**body, "return_to": "/v1/me"}, "return_to"),
    ):
        refused = await api.post(
            "/v1/bills/pay",
            json=wrong,
            headers=driver(token_for, account, f"h5-{why.replace(' ', '-')}"),
        )
        assert refused.status_code == 400, refused.text
        assert why in refused.text
    assert await attempts_of(city_conn, bill.id) == 0

    headers = driver(token_for, account, "h5-ok")
    response = await api.post("/v1/bills/pay", json=body, headers=headers)
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["kind"] == "h5"
    cashier = httpx.URL(view["code_url"])
    assert cashier.path == "/sandbox/h5/checkmweb"
    assert cashier.params["redirect_url"].startswith("http")
    assert cashier.params["redirect_url"].endswith("/q/tok_EN-1?paid=1")
    # the same key for a QR code instead is another request
    other = await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    assert other.status_code == 422
    await control.pay(view["out_trade_no"])

    async def paid() -> bool:
        return await bill_status(city_conn, bill.id) == "paid"

    await eventually(paid, what="the bill paid")
    assert await ledger_count(city_conn, "bill_paid", bill.id) == 1
    kind = await city_conn.fetchval("SELECT kind FROM payment_attempts WHERE id = $1", view["id"])
    assert kind == "h5"


async def test_an_open_bill_with_a_live_order_cannot_be_paid_again_under_another_key(
    api: Client, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    ok = await api.post(
        "/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=driver(token_for, account, "a")
    )
    assert ok.status_code == 201
    again = await api.post(
        "/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=driver(token_for, account, "b")
    )
    assert again.status_code == 409
    assert again.json()["type"].endswith("payment-in-progress")
    # The refusal is the key's stored answer too.
    replay = await api.post(
        "/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=driver(token_for, account, "b")
    )
    assert replay.status_code == 409
    assert replay.headers.get("idempotent-replayed") == "true"


class GatedProvider:
    """The sandbox adapter, with create_order held until the test opens the gate."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create_order(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return await self._inner.create_order(*args, **kwargs)


async def test_a_retry_while_the_first_request_is_in_flight_is_409(
    api: Client, api_app: Litestar, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    infra = api_app.state.infra
    gated = GatedProvider(infra.providers["wechat"])
    infra.providers["wechat"] = gated
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    headers = driver(token_for, account, "in-flight")
    first = asyncio.create_task(
        api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    )
    await asyncio.wait_for(gated.entered.wait(), 5)
    second = await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    assert second.status_code == 409
    assert second.json()["type"].endswith("idempotency-key-in-flight")
    gated.gate.set()
    done = await first
    assert done.status_code == 201
    assert gated.calls == 1
    third = await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    assert third.status_code == 201
    assert third.content == done.content


class TimesOutAfterCreating:
    """The provider creates the order but the answer is lost (a timeout): the worst case."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.fail_next = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create_order(self, *args: Any, **kwargs: Any) -> Any:
        order = await self._inner.create_order(*args, **kwargs)
        if self.fail_next:
            self.fail_next = False
            raise ProviderUnavailable(self._inner.name, "TIMEOUT", "read timed out")
        return order


async def test_a_lost_provider_answer_is_healed_by_a_retry_with_the_same_order_number(
    api: Client, api_app: Litestar, city_conn: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    infra = api_app.state.infra
    infra.providers["wechat"] = TimesOutAfterCreating(infra.providers["wechat"])
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    headers = driver(token_for, account, "lost-answer")
    failed = await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    assert failed.status_code == 503
    assert failed.headers.get("retry-after")
    pending = await city_conn.fetchrow(
        "SELECT out_trade_no, code_url FROM payment_attempts a JOIN payment_bills b "
        "ON b.attempt_id = a.id WHERE b.bill_id = $1",
        bill.id,
    )
    assert pending["code_url"] is None
    retried = await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    assert retried.status_code == 201, retried.text
    assert retried.json()["out_trade_no"] == pending["out_trade_no"]
    assert retried.json()["code_url"]
    assert await attempts_of(city_conn, bill.id) == 1


async def test_provider_outage_is_503_and_the_same_key_succeeds_afterwards(
    api: Client,
    city_conn: asyncpg.Connection,
    control: SandboxControl,
    token_for: Callable[..., str],
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    headers = driver(token_for, account, "outage")
    await control.control("outage", enabled=True)
    down = await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    assert down.status_code == 503
    await control.control("outage", enabled=False)
    up = await api.post("/v1/bills/pay", json={"bill_ids": [bill.id]}, headers=headers)
    assert up.status_code == 201
    assert await attempts_of(city_conn, bill.id) == 1


@pytest.mark.parametrize("role", [Role.FINANCE, Role.OPERATOR])
async def test_staff_tokens_cannot_pay(
    api: Client, city_conn: asyncpg.Connection, token_for: Callable[..., str], role: Role
) -> None:
    bill = await open_bill(city_conn, 500, account_id=new_account())
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill.id]},
        headers={"Authorization": f"Bearer {token_for(role)}", "Idempotency-Key": "x"},
    )
    assert response.status_code == 403
