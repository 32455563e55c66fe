"""The Alipay adapter beyond the shared contract, against the loopback gateway."""

from __future__ import annotations

import asyncio
import urllib.parse
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from payment_servers import FakeAlipayGateway, Receiver, new_trade_no

from parking.clock import SystemClock
from parking.payments.port import (
    ForeignNotification,
    OrderNotFound,
    OrderState,
    PaymentSucceeded,
    ProviderRejected,
    ProviderUnavailable,
)
from parking.payments.providers import alipay as adapter
from parking.payments.providers.alipay import AlipayProvider
from parking.payments.wire import BadSignature
from parking.payments.wire import alipay as wire


def now() -> datetime:
    return datetime.now(UTC)


# A trade_status_sync notification in the shape of Alipay's documentation
# (异步通知参数说明), with the loopback gateway's app and seller ids.
def documented_form(gateway: FakeAlipayGateway, **changes: str) -> dict[str, str]:
    form = {
        "gmt_create": "2024-05-01 08:30:00",
        "charset": "utf-8",
        "gmt_payment": "2024-05-01 08:30:05",
        "notify_time": "2024-05-01 08:30:06",
        "subject": "停车费 粤B12345",
        "buyer_id": "2088102169940354",
        "invoice_amount": "12.00",
        "version": "1.0",
        "notify_id": "ac05099524730693a8b330c5ecf72da9786",
        "fund_bill_list": '[{"amount":"12.00","fundChannel":"ALIPAYACCOUNT"}]',
        "notify_type": "trade_status_sync",
        "out_trade_no": "CB20240501083000001",
        "total_amount": "12.00",
        "trade_status": "TRADE_SUCCESS",
        "trade_no": "2024050122001412341234567890",
        "auth_app_id": gateway.app_id,
        "receipt_amount": "12.00",
        "point_amount": "0.00",
        "app_id": gateway.app_id,
        "buyer_pay_amount": "12.00",
        "seller_id": gateway.seller_id,
        **changes,
    }
    form["sign_type"] = "RSA2"
    form["sign"] = wire.sign_params(form, gateway.alipay_key)
    return form


def form_body(form: dict[str, str]) -> bytes:
    return urllib.parse.urlencode(form).encode("ascii")


def test_documented_notification_decodes_and_the_reply_is_exactly_success(
    alipay_gateway: FakeAlipayGateway, alipay: AlipayProvider
) -> None:
    event = alipay.parse_notification({}, form_body(documented_form(alipay_gateway)), now())
    assert isinstance(event, PaymentSucceeded)
    assert event.notification_id == "ac05099524730693a8b330c5ecf72da9786"
    assert (event.out_trade_no, event.amount_fen, event.paid_fen) == (
        "CB20240501083000001",
        1200,
        1200,
    )
    assert event.transaction_id == "2024050122001412341234567890"
    status, headers, body = alipay.notification_reply(True)
    assert (status, body) == (200, b"success")
    assert headers["Content-Type"].startswith("text/plain")


def test_notification_for_another_app_is_refused(
    alipay_gateway: FakeAlipayGateway, alipay: AlipayProvider
) -> None:
    form = documented_form(alipay_gateway, app_id="2021000199999999")
    with pytest.raises(ForeignNotification):
        alipay.parse_notification({}, form_body(form), now())


def test_notification_repeating_a_field_is_refused(
    alipay_gateway: FakeAlipayGateway, alipay: AlipayProvider
) -> None:
    body = form_body(documented_form(alipay_gateway)) + b"&total_amount=0.01"
    with pytest.raises(BadSignature):
        alipay.parse_notification({}, body, now())


async def test_gateway_refuses_a_request_signed_with_another_key(
    alipay_gateway: FakeAlipayGateway, http: httpx.AsyncClient
) -> None:
    config = adapter.load_config(alipay_gateway.config_path)
    keys = adapter.AlipayKeys(
        app_private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        alipay_public_key=alipay_gateway.alipay_key.public_key(),
    )
    provider = AlipayProvider(config, keys, http=http, clock=SystemClock())
    with pytest.raises(ProviderRejected) as caught:
        await provider.query_order(new_trade_no())
    assert caught.value.code == "isv.invalid-signature"


async def test_answer_signed_by_another_key_is_not_believed(
    alipay_gateway: FakeAlipayGateway, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    config = adapter.load_config(alipay_gateway.config_path)
    keys = adapter.AlipayKeys(
        app_private_key=alipay_gateway.app_key,
        alipay_public_key=rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        ).public_key(),
    )
    provider = AlipayProvider(config, keys, http=http, clock=SystemClock())
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_order(new_trade_no(), 100, "停车费", receiver.url("/x"))
    assert caught.value.code == "RESPONSE_NOT_AUTHENTIC"


async def test_unscanned_precreated_order_is_not_found(
    alipay: AlipayProvider, receiver: Receiver
) -> None:
    no = new_trade_no()
    await alipay.create_order(no, 100, "停车费", receiver.url(receiver.new_path()))
    with pytest.raises(OrderNotFound):
        await alipay.query_order(no)


async def test_full_refund_closes_the_trade_and_queries_as_refunded(
    alipay_gateway: FakeAlipayGateway, alipay: AlipayProvider, receiver: Receiver
) -> None:
    no = new_trade_no()
    await alipay.create_order(no, 1000, "停车费", receiver.url(receiver.new_path()))
    await asyncio.to_thread(alipay_gateway.pay, no)
    await alipay.refund(no, new_trade_no("R"), 1000, 1000, "全额退款")
    status = await alipay.query_order(no)
    assert (status.state, status.provider_state) == (OrderState.REFUNDED, "TRADE_CLOSED")


async def test_unknown_refund_is_not_found(
    alipay_gateway: FakeAlipayGateway, alipay: AlipayProvider, receiver: Receiver
) -> None:
    no = new_trade_no()
    await alipay.create_order(no, 1000, "停车费", receiver.url(receiver.new_path()))
    await asyncio.to_thread(alipay_gateway.pay, no)
    with pytest.raises(OrderNotFound):
        await alipay.query_refund(no, new_trade_no("R"))
