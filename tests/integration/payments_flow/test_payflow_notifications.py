"""Provider notifications through the real route (reliability matrix P2 to P6).

Notifications are the sandbox's, signed and encrypted with the keys it
generated, delivered over real HTTP (through the bridge) or captured and
replayed by hand.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives import serialization
from payflow_support import (
    Bridge,
    Captured,
    assert_books_straight,
    bill_status,
    eventually,
    ledger_count,
    new_account,
    open_bill,
)
from payment_servers import SandboxControl, SandboxProcess

from parking.auth.model import Role
from parking.bills.model import Bill
from parking.payments import logic
from parking.payments.providers.wechat import WechatPayProvider
from parking.payments.wire import wechat as wire

NOTIFY = "/v1/payments/notify/wechat"
_HOP_BY_HOP = {"host", "content-length", "connection", "accept-encoding"}


async def pay(
    api: httpx.AsyncClient, token_for: Callable[..., str], account: str, bills: list[Bill]
) -> dict[str, Any]:
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [b.id for b in bills]},
        headers={
            "Authorization": f"Bearer {token_for(Role.DRIVER, account)}",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    return view


def replayable(note: Captured) -> dict[str, str]:
    return {k: v for k, v in note.headers.items() if k.lower() not in _HOP_BY_HOP}


async def inbox_rows(conn: asyncpg.Connection, out_trade_no: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM payment_notifications WHERE out_trade_no = $1", out_trade_no
        )
    )


async def anomaly_kinds(conn: asyncpg.Connection, out_trade_no: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT kind FROM payment_anomalies WHERE out_trade_no = $1 ORDER BY created_at",
        out_trade_no,
    )
    return [row["kind"] for row in rows]


async def captured_payment(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    conn: asyncpg.Connection,
    token_for: Callable[..., str],
    amount: int = 500,
) -> tuple[Bill, dict[str, Any], Captured]:
    """A paid order whose signed notification the bridge kept instead of delivering."""
    account = new_account()
    bill = await open_bill(conn, amount, account_id=account)
    view = await pay(api, token_for, account, [bill])
    bridge.capture = True
    await control.pay(view["out_trade_no"])
    [note] = await bridge.wait_captured(1)
    bridge.capture = False
    return bill, view, note


# --------------------------------------------------------------------------- P3


async def test_the_same_notification_ten_times_at_once_pays_once_and_every_reply_is_success(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
) -> None:
    bill, view, note = await captured_payment(api, bridge, control, city_conn, token_for)
    replies = await asyncio.gather(
        *(api.post(note.path, content=note.body, headers=replayable(note)) for _ in range(10))
    )
    # WeChat's success answer, exactly: 204 and no body.
    assert [(r.status_code, r.content) for r in replies] == [(204, b"")] * 10
    assert await bill_status(city_conn, bill.id) == "paid"
    assert await ledger_count(city_conn, "bill_paid", bill.id) == 1
    paid_events = await city_conn.fetchval(
        "SELECT count(*) FROM bill_events WHERE bill_id = $1 AND to_status = 'paid'", bill.id
    )
    assert paid_events == 1
    assert await inbox_rows(city_conn, view["out_trade_no"]) == 1
    await assert_books_straight(city_conn)


# --------------------------------------------------------------------------- P4


async def test_bad_signature_and_tampered_body_are_refused_and_nothing_is_recorded(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
) -> None:
    bill, view, note = await captured_payment(api, bridge, control, city_conn, token_for)
    forged = {**replayable(note), "Wechatpay-Signature": base64.b64encode(os.urandom(256)).decode()}
    tampered_body = note.body.replace(b'"summary":"', b'"summary":"X', 1)
    assert tampered_body != note.body
    for headers, body in ((forged, note.body), (replayable(note), tampered_body)):
        reply = await api.post(note.path, content=body, headers=headers)
        # "Not taken" for WeChat, and not a server error: nobody is paged for a forgery.
        assert reply.status_code == 401
        assert json.loads(reply.content) == {"code": "FAIL", "message": "失败"}
    assert await inbox_rows(city_conn, view["out_trade_no"]) == 0
    assert await bill_status(city_conn, bill.id) == "paying"
    assert await ledger_count(city_conn, "bill_paid", bill.id) == 0
    # The genuine one still works: only the forgeries were refused.
    genuine = await api.post(note.path, content=note.body, headers=replayable(note))
    assert genuine.status_code == 204
    assert await bill_status(city_conn, bill.id) == "paid"


async def test_a_notified_amount_other_than_the_orders_is_an_anomaly_and_never_paid(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    view = await pay(api, token_for, account, [bill])
    await control.pay(view["out_trade_no"], notify_amount_fen=1)

    async def recorded() -> bool:
        return await anomaly_kinds(city_conn, view["out_trade_no"]) == ["amount_mismatch"]

    await eventually(recorded, what="the amount mismatch anomaly")
    # Answered success: sending it again would change nothing.
    [delivery] = await control.notifications(view["out_trade_no"])
    assert [a["status"] for a in delivery["attempts"]] == [204]
    assert await ledger_count(city_conn, "bill_paid", bill.id) == 0
    assert await bill_status(city_conn, bill.id) == "open"  # owed again, payable anew
    status = await city_conn.fetchval(
        "SELECT status FROM payment_attempts WHERE out_trade_no = $1", view["out_trade_no"]
    )
    assert status == "failed"
    finance = {"Authorization": f"Bearer {token_for(Role.FINANCE, 'li.fin')}"}
    listed = await api.get("/v1/finance/payment-anomalies", headers=finance)
    assert listed.status_code == 200
    [anomaly] = listed.json()
    assert (anomaly["kind"], anomaly["amount_fen"], anomaly["expected_fen"]) == (
        "amount_mismatch",
        1,
        500,
    )
    resolved = await api.post(
        f"/v1/finance/payment-anomalies/{anomaly['id']}/resolve",
        json={"remark": "provider confirmed 5.00 was taken; refunded by hand"},
        headers=finance,
    )
    assert resolved.status_code == 200
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_by"] == "li.fin"
    await assert_books_straight(city_conn)


async def test_a_payment_for_an_order_we_never_made_is_an_anomaly_answered_success(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    wechat: WechatPayProvider,
) -> None:
    stranger = "ZZ" + uuid.uuid4().hex[:20]
    await wechat.create_order(stranger, 300, "停车费", logic.notify_url(bridge.base_url, "wechat"))
    await control.pay(stranger)

    async def recorded() -> bool:
        return await anomaly_kinds(city_conn, stranger) == ["unknown_order"]

    await eventually(recorded, what="the unknown order anomaly")

    async def answered() -> bool:
        # the platform records the anomaly before its 204 reaches the sandbox, which
        # then records the attempt: wait for the sandbox's record too
        [delivery] = await control.notifications(stranger)
        return bool(delivery["attempts"])

    await eventually(answered, what="the sandbox to record the platform's answer")
    [delivery] = await control.notifications(stranger)
    assert [a["status"] for a in delivery["attempts"]] == [204]
    # No bill moved; the money is on the ledger all the same, held in suspense
    # (issue 10: nothing is off-ledger).
    kinds = await city_conn.fetch("SELECT kind FROM ledger_transactions")
    assert [row["kind"] for row in kinds] == ["suspense"]
    await assert_books_straight(city_conn)


# --------------------------------------------------------------------------- P5


def _stale_headers(sandbox: SandboxProcess, note: Captured, age_s: int) -> dict[str, str]:
    """The notification's exact body, signed by the sandbox's platform key ``age_s`` ago."""
    key = serialization.load_pem_private_key(
        (sandbox.data_dir / "platform_private_key.pem").read_bytes(), password=None
    )
    identity = json.loads((sandbox.data_dir / "identity.json").read_bytes())
    signed = wire.sign_notification(
        note.body,
        private_key=key,  # type: ignore[arg-type]
        serial=identity["platform_public_key_id"],
        timestamp=int(time.time()) - age_s,
        nonce=secrets.token_hex(16),
    )
    return {"Content-Type": "application/json", **signed}


async def test_a_notification_older_than_five_minutes_is_refused_unless_already_processed(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
    flow_sandbox: SandboxProcess,
) -> None:
    bill, view, note = await captured_payment(api, bridge, control, city_conn, token_for)
    stale = _stale_headers(flow_sandbox, note, age_s=400)
    refused = await api.post(note.path, content=note.body, headers=stale)
    assert refused.status_code == 401
    assert await inbox_rows(city_conn, view["out_trade_no"]) == 0
    assert await bill_status(city_conn, bill.id) == "paying"
    fresh = await api.post(note.path, content=note.body, headers=replayable(note))
    assert fresh.status_code == 204
    # Now it is a re-send of something processed: idempotent success, nothing applied again.
    again = await api.post(note.path, content=note.body, headers=stale)
    assert again.status_code == 204
    assert await ledger_count(city_conn, "bill_paid", bill.id) == 1
    # A clock skewed ahead by more than the window is refused the same way.
    ahead = _stale_headers(flow_sandbox, note, age_s=-400)
    assert (await api.post(note.path, content=note.body, headers=ahead)).status_code == 204


# --------------------------------------------------------------------------- P6


async def test_refund_notice_before_the_payment_notice_is_an_anomaly_and_moves_no_bill(
    api: httpx.AsyncClient,
    bridge: Bridge,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
    wechat: WechatPayProvider,
) -> None:
    account = new_account()
    bill = await open_bill(city_conn, 500, account_id=account)
    view = await pay(api, token_for, account, [bill])
    no = view["out_trade_no"]
    await control.control("notifications", mode="hold")
    await control.pay(no)
    # A refund made outside the platform (the merchant console), notified to us.
    await wechat.refund(
        no,
        "RFX" + uuid.uuid4().hex[:20],
        200,
        500,
        "商户后台退款",
        notify_url=logic.notify_url(bridge.base_url, "wechat"),
    )

    async def refund_settled() -> bool:
        order = (await control._http.get(f"{control._base}/sandbox/orders/{no}")).json()
        return [r["status"] for r in order["refunds"]] == ["SUCCESS"]

    await eventually(refund_settled, what="the sandbox settling the refund")
    await control.control("release", order="reverse")

    async def paid() -> bool:
        return await bill_status(city_conn, bill.id) == "paid"

    await eventually(paid, what="the payment notice arriving after the refund notice")
    assert await anomaly_kinds(city_conn, no) == ["refund_before_payment"]
    settled = await city_conn.fetchrow(
        "SELECT refunded_fen, status FROM bills WHERE id = $1", bill.id
    )
    assert (settled["refunded_fen"], settled["status"]) == (0, "paid")
    assert await ledger_count(city_conn, "refund", bill.id) == 0
    kinds = [
        row["kind"]
        for row in await city_conn.fetch(
            "SELECT kind FROM payment_notifications WHERE out_trade_no = $1 ORDER BY id", no
        )
    ]
    assert kinds == ["refund_succeeded", "payment_succeeded"]
    await assert_books_straight(city_conn)


# --------------------------------------------------------------------------- P2


async def test_a_connection_killed_mid_settlement_rolls_back_and_the_resend_pays_once(
    api: httpx.AsyncClient,
    control: SandboxControl,
    city_conn: asyncpg.Connection,
    token_for: Callable[..., str],
    db_url: str,
) -> None:
    account = new_account()
    bills = [await open_bill(city_conn, 400, account_id=account) for _ in range(2)]
    first_id, last_id = sorted(b.id for b in bills)
    view = await pay(api, token_for, account, bills)
    holder = await asyncpg.connect(db_url)
    try:
        hold = holder.transaction()
        await hold.start()
        # Bills are settled in id order: the handler pays the first (posting its
        # ledger transaction) and then waits here for the second.
        await holder.execute("SELECT 1 FROM bills WHERE id = $1 FOR UPDATE", last_id)
        await control.pay(view["out_trade_no"])
        pid: list[int] = []

        async def blocked() -> bool:
            found = await city_conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if found is not None:
                pid.append(found)
            return found is not None

        await eventually(blocked, what="the settlement waiting on the held bill")
        # The first bill is paid and posted inside the doomed transaction.
        assert await holder.fetchval("SELECT pg_terminate_backend($1)", pid[0])
        assert await ledger_count(city_conn, "bill_paid", first_id) == 0
        assert await bill_status(city_conn, first_id) == "paying"
        assert await inbox_rows(city_conn, view["out_trade_no"]) == 0
        await hold.rollback()
    finally:
        await holder.close()

    async def both_paid() -> bool:
        return {await bill_status(city_conn, b) for b in (first_id, last_id)} == {"paid"}

    await eventually(both_paid, what="the re-sent notification paying both bills")
    for bill_id in (first_id, last_id):
        assert await ledger_count(city_conn, "bill_paid", bill_id) == 1
    [delivery] = await control.notifications(view["out_trade_no"])
    statuses = [a["status"] for a in delivery["attempts"]]
    assert statuses[0] == 500  # killed: failure, so WeChat sends it again
    assert statuses[-1] == 204
    await assert_books_straight(city_conn)
