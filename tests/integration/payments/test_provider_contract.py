"""ONE contract for every payment provider adapter, run against each over real HTTP.

- ``wechat-sandbox``: the WeChat Pay v3 adapter talking to ``parking sandbox-pay``;
- ``alipay-gateway``: the Alipay adapter talking to a loopback OpenAPI gateway.

What differs between providers is hidden in the ``harness`` fixture (how a
driver scans and pays, when a bill is ready); every assertion here is about
the port, so a third adapter gets the same suite by adding a harness.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from payment_servers import Harness, Receiver, new_trade_no

from parking.payments.port import (
    PAID_STATES,
    OrderNotFound,
    OrderState,
    PaymentSucceeded,
    ProviderRejected,
    ProviderUnavailable,
    RefundState,
    RefundSucceeded,
    TradeBillFile,
)
from parking.payments.providers.alipay import BILL_KIND
from parking.payments.providers.wechat import TRADE_BILL_KIND
from parking.payments.wire import NotificationRejected
from parking.payments.wire import alipay as ali_wire
from parking.payments.wire import wechat as wx_wire


def now() -> datetime:
    return datetime.now(UTC)


def bill_entries(bill: TradeBillFile) -> set[tuple[str, str, int]]:
    """``(out_trade_no, "pay" | out_refund_no, fen)`` rows, whatever the provider's format."""
    if bill.kind == TRADE_BILL_KIND:
        parsed = wx_wire.parse_trade_bill(bill.content.decode("utf-8"))
        return {
            (row.out_trade_no, row.out_refund_no, row.refund_fen or 0)
            if row.out_refund_no
            else (row.out_trade_no, "pay", row.settlement_total_fen)
            for row in parsed.rows
        }
    assert bill.kind == BILL_KIND
    alipay_bill = ali_wire.parse_bill_zip(bill.content)
    return {
        (row.out_trade_no, row.refund_request_no or "pay", abs(row.merchant_received_fen))
        for row in alipay_bill.rows
    }


async def paid_order(harness: Harness, receiver: Receiver, amount: int = 1234) -> tuple[str, str]:
    """A paid order and its notification path."""
    no = new_trade_no()
    path = receiver.new_path()
    await harness.provider.create_order(no, amount, "停车费 粤B12345", receiver.url(path))
    await harness.pay(no)
    return no, path


async def test_create_order_returns_a_code_the_driver_can_scan(
    harness: Harness, receiver: Receiver
) -> None:
    no = new_trade_no()
    order = await harness.provider.create_order(
        no, 800, "停车费", receiver.url(receiver.new_path()), attach="bill-1"
    )
    assert order.out_trade_no == no
    assert order.amount_fen == 800
    assert order.provider == harness.provider.name
    assert order.code_url.startswith(("weixin://", "https://qr.alipay.com/"))
    await harness.scan(no)
    status = await harness.provider.query_order(no)
    assert (status.state, status.amount_fen, status.paid_fen) == (OrderState.PENDING, 800, None)


async def test_creating_the_same_order_twice_gives_one_order(
    harness: Harness, receiver: Receiver
) -> None:
    no = new_trade_no()
    url = receiver.url(receiver.new_path())
    first = await harness.provider.create_order(no, 500, "停车费", url)
    second = await harness.provider.create_order(no, 500, "停车费", url)
    assert first.code_url == second.code_url


async def test_paid_order_queries_as_paid_with_transaction_id(
    harness: Harness, receiver: Receiver
) -> None:
    no, _ = await paid_order(harness, receiver, amount=1234)
    status = await harness.provider.query_order(no)
    assert status.state is OrderState.PAID
    assert status.amount_fen == 1234
    assert status.paid_fen == 1234
    assert status.transaction_id
    assert status.succeeded_at is not None
    assert status.succeeded_at.utcoffset() is not None


async def test_payment_notification_verifies_and_decodes_to_payment_succeeded(
    harness: Harness, receiver: Receiver
) -> None:
    no, path = await paid_order(harness, receiver, amount=2345)
    [received] = await receiver.wait_for(path, 1)
    event = harness.provider.parse_notification(received.headers, received.body, now())
    assert isinstance(event, PaymentSucceeded)
    assert event.out_trade_no == no
    assert (event.amount_fen, event.paid_fen) == (2345, 2345)
    assert event.notification_id
    assert event.provider == harness.provider.name
    status = await harness.provider.query_order(no)
    assert event.transaction_id == status.transaction_id


async def test_tampered_notification_body_is_rejected(harness: Harness, receiver: Receiver) -> None:
    _, path = await paid_order(harness, receiver, amount=999)
    [received] = await receiver.wait_for(path, 1)
    body = received.body.replace(b"9.99", b"0.01") if b"9.99" in received.body else None
    if body is None:  # WeChat's amount is encrypted: alter the signed envelope instead
        body = received.body.replace(b'"summary":"', b'"summary":"x')
    assert body != received.body
    with pytest.raises(NotificationRejected):
        harness.provider.parse_notification(received.headers, body, now())


async def test_notification_with_a_foreign_signature_is_rejected(
    harness: Harness, receiver: Receiver
) -> None:
    _, path = await paid_order(harness, receiver)
    [received] = await receiver.wait_for(path, 1)
    headers = dict(received.headers)
    body = received.body
    forged = "A" * 342 + "=="
    if "Wechatpay-Signature" in headers:
        headers["Wechatpay-Signature"] = forged
    else:
        body = body.replace(b"&sign=", b"&sign=AAAA", 1)
    with pytest.raises(NotificationRejected):
        harness.provider.parse_notification(headers, body, now())


async def test_partial_refund_succeeds_and_is_notified(
    harness: Harness, receiver: Receiver
) -> None:
    no, path = await paid_order(harness, receiver, amount=1000)
    refund_no = new_trade_no("R")
    refund = await harness.provider.refund(
        no, refund_no, 300, 1000, "多收了", notify_url=receiver.url(path)
    )
    assert (refund.out_trade_no, refund.out_refund_no) == (no, refund_no)
    assert (refund.refund_fen, refund.total_fen) == (300, 1000)
    assert refund.state in (RefundState.PROCESSING, RefundState.SUCCEEDED)
    records = await receiver.wait_for(path, 2)
    events = [harness.provider.parse_notification(r.headers, r.body, now()) for r in records]
    [refunded] = [e for e in events if isinstance(e, RefundSucceeded)]
    assert (refunded.out_trade_no, refunded.out_refund_no) == (no, refund_no)
    assert refunded.refund_fen in (300, None)  # Alipay states only the running total
    assert refunded.refund_fen == 300 or refunded.refunded_total_fen == 300
    queried = await harness.provider.query_refund(no, refund_no)
    assert (queried.state, queried.refund_fen) == (RefundState.SUCCEEDED, 300)
    assert (await harness.provider.query_order(no)).state in PAID_STATES


async def test_repeating_a_refund_request_refunds_once(
    harness: Harness, receiver: Receiver
) -> None:
    no, path = await paid_order(harness, receiver, amount=1000)
    refund_no = new_trade_no("R")
    await harness.provider.refund(no, refund_no, 400, 1000, "重复", notify_url=receiver.url(path))
    again = await harness.provider.refund(
        no, refund_no, 400, 1000, "重复", notify_url=receiver.url(path)
    )
    assert again.refund_fen == 400
    with pytest.raises(ProviderRejected):
        await harness.provider.refund(no, new_trade_no("R"), 700, 1000, "超过可退金额")


async def test_refunding_an_unknown_order_is_rejected(harness: Harness) -> None:
    with pytest.raises(ProviderRejected):
        await harness.provider.refund(new_trade_no(), new_trade_no("R"), 100, 100, "无此订单")


async def test_querying_an_unknown_order_raises_order_not_found(harness: Harness) -> None:
    with pytest.raises(OrderNotFound):
        await harness.provider.query_order(new_trade_no())


async def test_closed_order_stays_unpaid(harness: Harness, receiver: Receiver) -> None:
    no = new_trade_no()
    await harness.provider.create_order(no, 600, "停车费", receiver.url(receiver.new_path()))
    await harness.scan(no)
    await harness.provider.close_order(no)
    status = await harness.provider.query_order(no)
    assert status.state is OrderState.CLOSED
    assert status.paid_fen is None


async def test_closing_a_paid_order_is_rejected(harness: Harness, receiver: Receiver) -> None:
    no, _ = await paid_order(harness, receiver)
    with pytest.raises(ProviderRejected):
        await harness.provider.close_order(no)
    assert (await harness.provider.query_order(no)).state is OrderState.PAID


async def test_trade_bill_lists_the_days_payments_and_refunds(
    harness: Harness, receiver: Receiver
) -> None:
    day = await harness.today()
    first, path = await paid_order(harness, receiver, amount=1500)
    second, _ = await paid_order(harness, receiver, amount=2500)
    refund_no = new_trade_no("R")
    await harness.provider.refund(
        first, refund_no, 500, 1500, "部分退款", notify_url=receiver.url(path)
    )
    await harness.make_bill_ready(day)
    bill = await harness.provider.download_trade_bill(day)
    assert bill.bill_date == day
    entries = bill_entries(bill)
    assert {(first, "pay", 1500), (second, "pay", 2500), (first, refund_no, 500)} <= entries


async def test_provider_outage_raises_provider_unavailable(harness: Harness) -> None:
    await harness.set_outage(True)
    try:
        with pytest.raises(ProviderUnavailable):
            await harness.provider.query_order(new_trade_no())
    finally:
        await harness.set_outage(False)


def test_notification_replies_say_received_or_retry(harness: Harness) -> None:
    ok = harness.provider.notification_reply(True)
    retry = harness.provider.notification_reply(False)
    if harness.name == "alipay":
        assert (ok.status, ok.body) == (200, b"success")
        assert retry.body != b"success"
    else:
        assert 200 <= ok.status < 300
        assert retry.status >= 400
        assert b'"code":"FAIL"' in retry.body


def test_a_notification_that_is_not_authentic_is_answered_401_with_the_failure_body(
    harness: Harness,
) -> None:
    rejected = harness.provider.rejection_reply()
    retry = harness.provider.notification_reply(False)
    # WeChat Pay reads any 4xx as "not taken", Alipay reads only the body.
    assert rejected.status == 401
    assert (rejected.headers, rejected.body) == (retry.headers, retry.body)
    assert rejected.body != b"success"
