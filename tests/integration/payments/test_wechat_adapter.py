"""The WeChat Pay v3 adapter beyond the shared contract: the contactless rail, key
trouble, replay window, bills without trades, and a notification in the exact
shape of WeChat's documentation."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from payment_servers import BEIJING, Receiver, SandboxControl, SandboxProcess, new_trade_no

from parking.clock import FixedClock, SystemClock
from parking.payments.port import (
    BillNotReady,
    ForeignNotification,
    MandateState,
    OrderState,
    PaymentFailed,
    PaymentRepaid,
    PaymentSucceeded,
    ProviderRejected,
    ProviderUnavailable,
    StaleNotification,
)
from parking.payments.providers import wechat as adapter
from parking.payments.providers.wechat import WechatPayProvider
from parking.payments.wire import wechat as wire


def now() -> datetime:
    return datetime.now(UTC)


def plate() -> str:
    return "粤B" + secrets.token_hex(3).upper()[:5]


async def stay(
    wechat: WechatPayProvider, receiver: Receiver, number: str, path: str
) -> tuple[str, datetime]:
    """Register an entry an hour ago; the stay's parking id and entry time."""
    entered = now() - timedelta(hours=1)
    entry = await wechat.register_entry(
        new_trade_no("P"), number, "BLUE", entered, "畅泊一号停车场", receiver.url(path)
    )
    return entry.parking_id, entered


async def deduct(
    wechat: WechatPayProvider, receiver: Receiver, number: str, path: str, amount: int = 600
) -> tuple[str, bool]:
    parking_id, entered = await stay(wechat, receiver, number, path)
    no = new_trade_no("D")
    result = await wechat.deduct(
        no,
        amount,
        number,
        plate_color="BLUE",
        parking_id=parking_id,
        entered_at=entered,
        exited_at=now(),
        lot_name="畅泊一号停车场",
        description="停车费",
        notify_url=receiver.url(path),
    )
    return no, result.accepted


# --------------------------------------------------------------------------- contactless


async def test_deduction_without_a_mandate_is_refused(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    number, path = plate(), receiver.new_path()
    status = await wechat.mandate_status(number, "BLUE", "oDriver1")
    assert status.state is MandateState.NONE
    entry = await wechat.register_entry(
        new_trade_no("P"), number, "BLUE", now(), "畅泊一号停车场", receiver.url(path)
    )
    assert (entry.usable, entry.block_reason) == (False, "OUT_SERVICE")
    result = await wechat.deduct(
        new_trade_no("D"),
        500,
        number,
        plate_color="BLUE",
        parking_id=entry.parking_id,
        entered_at=now() - timedelta(minutes=30),
        exited_at=now(),
        lot_name="畅泊一号停车场",
        description="停车费",
        notify_url=receiver.url(path),
    )
    assert not result.accepted
    assert result.refusal_code == "NO_AUTH"


async def test_mandate_invitation_authorises_and_the_deduction_succeeds_later(
    wechat: WechatPayProvider,
    sandbox_control: SandboxControl,
    receiver: Receiver,
    http: httpx.AsyncClient,
) -> None:
    number, path = plate(), receiver.new_path()
    invitation = await wechat.create_mandate(number, "BLUE", "oDriver2")
    assert invitation.url is not None
    assert invitation.params["plate_number"] == number
    authorised = await http.post(invitation.url)  # the driver agrees on the page
    assert authorised.status_code == 200
    status = await wechat.mandate_status(number, "BLUE", "oDriver2")
    assert status.state is MandateState.ACTIVE
    assert status.opened_at is not None
    no, accepted = await deduct(wechat, receiver, number, path, amount=650)
    assert accepted
    assert (await wechat.query_deduction(no)).state is OrderState.ACCEPTED
    [record] = await receiver.wait_for(path, 1)
    event = wechat.parse_notification(record.headers, record.body, now())
    assert isinstance(event, PaymentSucceeded)
    assert (event.out_trade_no, event.amount_fen, event.contactless) == (no, 650, True)
    settled = await wechat.query_deduction(no)
    assert (settled.state, settled.paid_fen, settled.payer_id) == (OrderState.PAID, 650, "oDriver2")


async def test_failed_deduction_is_notified_and_can_be_repaid(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    number, path = plate(), receiver.new_path()
    await sandbox_control.mandate(openid="oDriver3", plate_number=number, outcome="fail")
    no, accepted = await deduct(wechat, receiver, number, path, amount=700)
    assert accepted
    [record] = await receiver.wait_for(path, 1)
    failed = wechat.parse_notification(record.headers, record.body, now())
    assert isinstance(failed, PaymentFailed)
    assert (failed.out_trade_no, failed.amount_fen, failed.contactless) == (no, 700, True)
    assert (await wechat.query_deduction(no)).state is OrderState.FAILED
    await sandbox_control.repay(no)
    records = await receiver.wait_for(path, 2)
    repaid = wechat.parse_notification(records[1].headers, records[1].body, now())
    assert isinstance(repaid, PaymentRepaid)
    assert repaid.amount_fen == 700
    assert (await wechat.query_deduction(no)).state is OrderState.PAID


async def test_paused_mandate_blocks_the_entry_and_refuses_the_deduction(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    number, path = plate(), receiver.new_path()
    await sandbox_control.mandate(openid="oDriver4", plate_number=number, state="PAUSE")
    assert (await wechat.mandate_status(number, "BLUE", "oDriver4")).state is MandateState.PAUSED
    _, accepted = await deduct(wechat, receiver, number, path)
    assert not accepted


async def test_a_mandate_serves_only_the_driver_who_gave_it(
    wechat: WechatPayProvider, sandbox_control: SandboxControl
) -> None:
    number = plate()
    await sandbox_control.mandate(openid="oOwner", plate_number=number)
    assert (await wechat.mandate_status(number, "BLUE", "oSomeoneElse")).state is MandateState.NONE


async def test_repeating_a_deduction_request_is_one_order(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    number, path = plate(), receiver.new_path()
    await sandbox_control.mandate(openid="oDriver5", plate_number=number, outcome="manual")
    parking_id, entered = await stay(wechat, receiver, number, path)
    no, exited = new_trade_no("D"), now()
    results = [
        await wechat.deduct(
            no,
            800,
            number,
            plate_color="BLUE",
            parking_id=parking_id,
            entered_at=entered,
            exited_at=exited,
            lot_name="畅泊一号停车场",
            description="停车费",
            notify_url=receiver.url(path),
        )
        for _ in range(2)
    ]
    assert all(r.accepted and r.state is OrderState.ACCEPTED for r in results)
    await sandbox_control.pay(no)
    records = await receiver.wait_for(path, 1)
    assert len(records) == 1


# --------------------------------------------------------------------------- trust


async def test_answer_signed_by_another_platform_key_is_not_believed(
    sandbox: SandboxProcess, http: httpx.AsyncClient
) -> None:
    config = adapter.load_config(sandbox.config_path)
    keys = adapter.WechatPayKeys.load(config)
    impostor = adapter.WechatPayKeys(
        merchant_private_key=keys.merchant_private_key,
        platform_public_keys={
            config.platform_public_key_id: rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            ).public_key()
        },
        api_v3_key=keys.api_v3_key,
    )
    provider = WechatPayProvider(config, impostor, http=http, clock=SystemClock())
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_order(new_trade_no(), 100, "停车费", "http://127.0.0.1:8062/x")
    assert caught.value.code == "RESPONSE_NOT_AUTHENTIC"


async def test_unreachable_provider_raises_provider_unavailable(
    sandbox: SandboxProcess, http: httpx.AsyncClient
) -> None:
    config = adapter.load_config(sandbox.config_path)
    nowhere = msgspec.structs.replace(config, base_url="http://127.0.0.1:8069")
    provider = WechatPayProvider.from_config(nowhere, http=http, clock=SystemClock())
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.query_order(new_trade_no())
    assert caught.value.code == "NETWORK"


async def test_requests_signed_with_a_skewed_clock_are_refused(
    sandbox: SandboxProcess, http: httpx.AsyncClient
) -> None:
    config = adapter.load_config(sandbox.config_path)
    skewed = FixedClock(datetime.now(UTC) - timedelta(minutes=10))
    provider = WechatPayProvider.from_config(config, http=http, clock=skewed)
    with pytest.raises(ProviderRejected) as caught:
        await provider.query_order(new_trade_no())
    assert caught.value.code == "SIGN_ERROR"


async def test_stale_notification_is_rejected_but_names_its_id(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    no, path = new_trade_no(), receiver.new_path()
    await wechat.create_order(no, 100, "停车费", receiver.url(path))
    await sandbox_control.pay(no)
    [record] = await receiver.wait_for(path, 1)
    later = now() + timedelta(minutes=6)
    with pytest.raises(StaleNotification) as caught:
        wechat.parse_notification(record.headers, record.body, later)
    assert caught.value.notification_id == wire.decode_notification(record.body).id


# --------------------------------------------------------------------------- bills


async def test_day_without_trades_has_an_empty_bill(
    wechat: WechatPayProvider, sandbox_control: SandboxControl
) -> None:
    quiet_day = (await sandbox_control.now()).astimezone(BEIJING).date() - timedelta(days=40)
    bill = await wechat.download_trade_bill(quiet_day)
    assert (bill.content, bill.bill_date) == (b"", quiet_day)


async def test_todays_bill_is_not_ready(
    wechat: WechatPayProvider, sandbox_control: SandboxControl
) -> None:
    today = (await sandbox_control.now()).astimezone(BEIJING).date()
    with pytest.raises(BillNotReady):
        await wechat.download_trade_bill(today)


# --------------------------------------------------------------------------- documented shape

# The example of WeChat's "支付成功结果通知" page: headers, envelope and the
# decrypted transaction, with our test merchant's ids.
DOC_TRANSACTION = {
    "transaction_id": "1217752501201407033233368018",
    "amount": {"payer_total": 100, "total": 100, "currency": "CNY", "payer_currency": "CNY"},
    "mchid": "{mchid}",
    "trade_state": "SUCCESS",
    "bank_type": "CMC",
    "promotion_detail": [],
    "success_time": "2018-06-08T10:34:56+08:00",
    "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    "out_trade_no": "1217752501201407033233368018",
    "appid": "{appid}",
    "trade_state_desc": "支付成功",
    "trade_type": "JSAPI",
    "attach": "自定义数据",
    "scene_info": {"device_id": "013467007045764"},
}


def documented_notification(
    sandbox: SandboxProcess, *, mchid: str | None = None
) -> tuple[dict[str, str], bytes, datetime]:
    config = adapter.load_config(sandbox.config_path)
    keys = adapter.WechatPayKeys.load(config)
    platform = serialization.load_pem_private_key(
        (sandbox.data_dir / "platform_private_key.pem").read_bytes(), password=None
    )
    assert isinstance(platform, RSAPrivateKey)
    plaintext = (
        json.dumps(DOC_TRANSACTION, ensure_ascii=False)
        .replace("{mchid}", mchid or config.mchid)
        .replace("{appid}", config.appid)
        .encode()
    )
    resource = wire.encrypt_resource(
        plaintext,
        api_v3_key=keys.api_v3_key,
        nonce="fdasflkja484",
        associated_data="transaction",
    )
    body = (
        '{"id":"EV-2018022511223320873","create_time":"2015-05-20T13:29:35+08:00",'
        '"resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS",'
        '"summary":"支付成功","resource":{"original_type":"transaction",'
        '"algorithm":"AEAD_AES_256_GCM","ciphertext":"' + resource.ciphertext + '",'
        '"associated_data":"transaction","nonce":"fdasflkja484"}}'
    ).encode()
    timestamp = int(time.time())
    headers = wire.sign_notification(
        body,
        private_key=platform,
        serial=config.platform_public_key_id,
        timestamp=timestamp,
        nonce="42fa1a4c0a16f2ec8d9b0a1ea56e0ea1",
    )
    assert base64.b64decode(headers["Wechatpay-Signature"])
    return headers, body, datetime.fromtimestamp(timestamp, UTC)


def test_documented_notification_decodes_to_payment_succeeded(
    sandbox: SandboxProcess, wechat: WechatPayProvider
) -> None:
    headers, body, at = documented_notification(sandbox)
    event = wechat.parse_notification(headers, body, at + timedelta(seconds=2))
    assert isinstance(event, PaymentSucceeded)
    assert event.notification_id == "EV-2018022511223320873"
    assert (event.out_trade_no, event.amount_fen, event.attach) == (
        "1217752501201407033233368018",
        100,
        "自定义数据",
    )
    assert event.succeeded_at == datetime(2018, 6, 8, 10, 34, 56, tzinfo=BEIJING)


def test_notification_for_another_merchant_is_refused(
    sandbox: SandboxProcess, wechat: WechatPayProvider
) -> None:
    headers, body, at = documented_notification(sandbox, mchid="1900000109")
    with pytest.raises(ForeignNotification):
        wechat.parse_notification(headers, body, at)
