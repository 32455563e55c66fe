"""The sandbox provider process itself: signatures, deliveries, misbehaviour, bills, restarts."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from payment_servers import (
    BEIJING,
    RETRY_SCALE,
    Receiver,
    SandboxControl,
    SandboxProcess,
    new_trade_no,
)

from parking.clock import SystemClock
from parking.payments.port import (
    H5Scene,
    OrderState,
    PaymentSucceeded,
    ProviderRejected,
    RefundSucceeded,
)
from parking.payments.providers import wechat as adapter
from parking.payments.providers.wechat import WechatPayProvider
from parking.payments.wire import wechat as wire


def now() -> datetime:
    return datetime.now(UTC)


def notification_id(body: bytes) -> str:
    return wire.decode_notification(body).id


async def paid(
    wechat: WechatPayProvider,
    control: SandboxControl,
    receiver: Receiver,
    *,
    amount: int = 1000,
    path: str | None = None,
) -> tuple[str, str]:
    no = new_trade_no()
    path = path or receiver.new_path()
    await wechat.create_order(no, amount, "停车费", receiver.url(path))
    await control.pay(no)
    return no, path


async def wait_for_deliveries(
    control: SandboxControl, out_trade_no: str, count: int, within: float = 5.0
) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await control.notifications(out_trade_no)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{out_trade_no}: fewer than {count} notifications")


# --------------------------------------------------------------------------- signatures and keys


async def test_request_with_a_bad_merchant_signature_is_refused_with_sign_error(
    sandbox: SandboxProcess, http: httpx.AsyncClient
) -> None:
    config = adapter.load_config(sandbox.config_path)
    keys = adapter.WechatPayKeys.load(config)
    path = f"/v3/pay/transactions/out-trade-no/{new_trade_no()}?mchid={config.mchid}"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    authorization = wire.sign_request(
        "GET",
        path,
        b"",
        mchid=config.mchid,
        serial_no=config.merchant_serial,
        private_key=stranger,
        timestamp=int(time.time()),
        nonce=secrets.token_hex(16),
    )
    response = await http.get(sandbox.base_url + path, headers={"Authorization": authorization})
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "SIGN_ERROR"
    assert isinstance(body["message"], str)
    assert body["message"]
    # Even the refusal is signed by the platform, like every v3 answer.
    wire.verify_notification(
        dict(response.headers.items()),
        response.content,
        public_keys=keys.platform_public_keys,
        now=now(),
    )
    unsigned = await http.get(sandbox.base_url + path)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "SIGN_ERROR")


async def test_adapter_with_the_wrong_merchant_key_gets_sign_error(
    sandbox: SandboxProcess, http: httpx.AsyncClient
) -> None:
    config = adapter.load_config(sandbox.config_path)
    keys = adapter.WechatPayKeys.load(config)
    wrong = adapter.WechatPayKeys(
        merchant_private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        platform_public_keys=keys.platform_public_keys,
        api_v3_key=keys.api_v3_key,
    )
    provider = WechatPayProvider(config, wrong, http=http, clock=SystemClock())
    with pytest.raises(ProviderRejected) as caught:
        await provider.query_order(new_trade_no())
    assert (caught.value.code, caught.value.http_status) == ("SIGN_ERROR", 401)


def test_keys_and_merchant_config_are_private_files(sandbox: SandboxProcess) -> None:
    folder = sandbox.data_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (
        "platform_private_key.pem",
        "platform_public_key.pem",
        "merchant_private_key.pem",
        "merchant_public_key.pem",
        "apiv3_key",
        "identity.json",
        "merchant.json",
        "sandbox.sqlite3",
    ):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    config = adapter.load_config(sandbox.config_path)
    assert config.base_url == sandbox.base_url
    assert Path(config.merchant_private_key_path).is_file()


# --------------------------------------------------------------------------- deliveries


async def test_failed_deliveries_are_retried_on_the_wechat_schedule(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    path = receiver.new_path()
    receiver.script(path, [500, 500, 503])
    no, _ = await paid(wechat, sandbox_control, receiver, path=path)
    records = await receiver.wait_for(path, 4)
    assert [r.status for r in records] == [500, 500, 503, 200]
    # One notification, re-sent with the same body and a fresh signature each time.
    assert len({notification_id(r.body) for r in records}) == 1
    assert len({r.body for r in records}) == 1
    assert len({r.headers["Wechatpay-Nonce"] for r in records}) == 4
    for record in records:
        event = wechat.parse_notification(record.headers, record.body, now())
        assert isinstance(event, PaymentSucceeded)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(records)]
    for gap, scheduled in zip(gaps, (15, 15, 30), strict=True):
        assert gap >= scheduled * RETRY_SCALE * 0.9
    [delivery] = await sandbox_control.notifications(no)
    assert delivery["state"] == "delivered"
    assert delivery["failures"] == 3


async def test_unreachable_notify_url_counts_as_a_failed_attempt(
    wechat: WechatPayProvider, sandbox_control: SandboxControl
) -> None:
    no = new_trade_no()
    await wechat.create_order(no, 100, "停车费", "http://127.0.0.1:8068/nobody-listens")
    await sandbox_control.pay(no)
    deadline = time.monotonic() + 5
    failures = 0
    while time.monotonic() < deadline and failures < 2:
        await asyncio.sleep(0.05)
        [delivery] = await sandbox_control.notifications(no)
        failures = int(str(delivery["failures"]))
    assert failures >= 2
    assert delivery["state"] in ("pending", "in_flight")
    assert all(a["status"] == 0 for a in delivery["attempts"])


async def test_duplicates_control_sends_extra_copies_of_one_notification(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    await sandbox_control.control("notifications", duplicates=2)
    _, path = await paid(wechat, sandbox_control, receiver)
    records = await receiver.wait_for(path, 3)
    await asyncio.sleep(0.2)
    assert len(receiver.records(path)) == 3
    events = [wechat.parse_notification(r.headers, r.body, now()) for r in records]
    assert len({e.notification_id for e in events}) == 1


async def test_dropped_notification_is_never_sent_but_the_order_is_paid(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    await sandbox_control.control("notifications", mode="drop")
    no, path = await paid(wechat, sandbox_control, receiver)
    await asyncio.sleep(0.3)
    assert receiver.records(path) == []
    [delivery] = await sandbox_control.notifications(no)
    assert delivery["state"] == "dropped"
    # What a sweeper does when the callback never comes (P7).
    assert (await wechat.query_order(no)).state is OrderState.PAID


async def test_held_notifications_released_in_reverse_put_the_refund_first(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    await sandbox_control.control("notifications", mode="hold")
    no, path = await paid(wechat, sandbox_control, receiver)
    await wechat.refund(
        no, new_trade_no("R"), 1000, 1000, "全额退款", notify_url=receiver.url(path)
    )
    await wait_for_deliveries(sandbox_control, no, 2)
    assert receiver.records(path) == []
    await sandbox_control.control("release", order="reverse")
    records = await receiver.wait_for(path, 2)
    events = [wechat.parse_notification(r.headers, r.body, now()) for r in records]
    assert [type(e) for e in events] == [RefundSucceeded, PaymentSucceeded]


async def test_delay_control_postpones_the_first_attempt(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    await sandbox_control.control("notifications", delay_seconds=0.6)
    started = time.time()
    _, path = await paid(wechat, sandbox_control, receiver)
    [record] = await receiver.wait_for(path, 1)
    assert record.at - started >= 0.55


async def test_pay_with_a_wrong_notified_amount_reports_that_amount(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    no, path = new_trade_no(), receiver.new_path()
    await wechat.create_order(no, 1000, "停车费", receiver.url(path))
    await sandbox_control.pay(no, notify_amount_fen=1)
    [record] = await receiver.wait_for(path, 1)
    event = wechat.parse_notification(record.headers, record.body, now())
    assert isinstance(event, PaymentSucceeded)
    assert event.amount_fen == 1
    assert (await wechat.query_order(no)).amount_fen == 1000


# --------------------------------------------------------------------------- bills and the clock


async def download_entries(
    wechat: WechatPayProvider, day: datetime
) -> dict[str, wire.TradeBillRow]:
    bill = await wechat.download_trade_bill(day.date())
    parsed = wire.parse_trade_bill(bill.content.decode("utf-8"))
    return {row.out_trade_no: row for row in parsed.rows if row.out_refund_no is None}


async def test_bill_controls_change_amount_omit_and_add_orders(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    today = (await sandbox_control.now()).astimezone(BEIJING)
    wrong, _ = await paid(wechat, sandbox_control, receiver, amount=1000)
    omitted, _ = await paid(wechat, sandbox_control, receiver, amount=2000)
    kept, _ = await paid(wechat, sandbox_control, receiver, amount=3000)
    unknown = new_trade_no("X")
    await sandbox_control.control("bill_wrong_amount", out_trade_no=wrong, amount_fen=999)
    await sandbox_control.control("bill_omit", out_trade_no=omitted)
    await sandbox_control.control(
        "bill_add_unknown", out_trade_no=unknown, amount_fen=777, bill_date=today.date().isoformat()
    )
    midnight = datetime.combine(today.date() + timedelta(days=1), datetime.min.time(), BEIJING)
    await sandbox_control.move_to(midnight + timedelta(hours=10, seconds=1))
    rows = await download_entries(wechat, today)
    assert rows[wrong].settlement_total_fen == 999
    assert omitted not in rows
    assert rows[kept].settlement_total_fen == 3000
    assert rows[unknown].settlement_total_fen == 777


async def test_bill_buckets_payments_by_the_beijing_day_of_success(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    day = (await sandbox_control.now()).astimezone(BEIJING).date() + timedelta(days=3)
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), BEIJING)
    await sandbox_control.move_to(midnight - timedelta(seconds=3))
    late, _ = await paid(wechat, sandbox_control, receiver, amount=111)
    await sandbox_control.move_to(midnight + timedelta(seconds=1))
    early, _ = await paid(wechat, sandbox_control, receiver, amount=222)
    await sandbox_control.move_to(midnight + timedelta(days=1, hours=10, seconds=1))
    first_day = await download_entries(wechat, midnight - timedelta(days=1))
    second_day = await download_entries(wechat, midnight)
    assert late in first_day
    assert early not in first_day
    assert early in second_day
    assert late not in second_day
    assert first_day[late].trade_time.astimezone(BEIJING).date() == day


async def test_clock_control_moves_business_time_but_not_signatures(
    wechat: WechatPayProvider, sandbox_control: SandboxControl, receiver: Receiver
) -> None:
    before = await sandbox_control.now()
    await sandbox_control.move_to(before + timedelta(hours=2))
    assert await sandbox_control.now() - before >= timedelta(hours=2)
    # Signed answers still carry real time, so the adapter still believes them.
    no, _ = await paid(wechat, sandbox_control, receiver)
    status = await wechat.query_order(no)
    assert status.succeeded_at is not None
    assert status.succeeded_at - now() >= timedelta(hours=1, minutes=59)


async def test_unpaid_order_past_its_deadline_reads_closed_and_cannot_be_paid(
    wechat: WechatPayProvider,
    sandbox_control: SandboxControl,
    receiver: Receiver,
    http: httpx.AsyncClient,
    sandbox: SandboxProcess,
) -> None:
    business_now = await sandbox_control.now()
    no = new_trade_no()
    await wechat.create_order(
        no,
        300,
        "停车费",
        receiver.url(receiver.new_path()),
        expires_at=business_now + timedelta(minutes=30),
    )
    assert (await wechat.query_order(no)).state is OrderState.PENDING
    await sandbox_control.move_to(business_now + timedelta(minutes=31))
    assert (await wechat.query_order(no)).state is OrderState.CLOSED
    refused = await http.post(f"{sandbox.base_url}/sandbox/orders/{no}/pay")
    assert refused.status_code == 409


# --------------------------------------------------------------------------- H5: the cashier page


async def test_an_h5_order_is_paid_at_the_cashier_page_which_sends_the_browser_back(
    wechat: WechatPayProvider,
    sandbox_control: SandboxControl,
    receiver: Receiver,
    http: httpx.AsyncClient,
    sandbox: SandboxProcess,
) -> None:
    """WeChat H5 (MWEB): the adapter sends the payer's scene, appends ``redirect_url`` to
    the ``h5_url``; the cashier (the WeChat app's stand-in) pays and redirects back; the
    notification, the query and the day's bill (trade type MWEB) follow."""
    no, path = new_trade_no(), receiver.new_path()
    back = "http://127.0.0.1:9/q/abc_DEF-1?paid=1"
    order = await wechat.create_order(
        no,
        1234,
        "停车费 赣B00001",
        receiver.url(path),
        h5=H5Scene(client_ip="10.1.2.3", return_url=back),
    )
    url = httpx.URL(order.code_url)
    assert str(url).startswith(f"{sandbox.base_url}/sandbox/h5/checkmweb?prepay_id=wx")
    assert url.params["redirect_url"] == back
    # the same request again is the same order (WeChat: same out_trade_no, same body)
    again = await wechat.create_order(
        no,
        1234,
        "停车费 赣B00001",
        receiver.url(path),
        h5=H5Scene(client_ip="10.1.2.3", return_url=back),
    )
    assert httpx.URL(again.code_url).params["prepay_id"] == url.params["prepay_id"]
    assert (await wechat.query_order(no)).state is OrderState.PENDING

    page = await http.get(url)
    assert page.status_code == 200
    assert "¥12.34" in page.text
    assert 'id="confirm"' in page.text
    paid_back = await http.post(
        f"{sandbox.base_url}/sandbox/h5/pay",
        data={"prepay_id": url.params["prepay_id"], "redirect_url": back},
    )
    assert paid_back.status_code == 303
    assert paid_back.headers["location"] == back
    [record] = await receiver.wait_for(path, 1)
    event = wechat.parse_notification(record.headers, record.body, now())
    assert isinstance(event, PaymentSucceeded)
    assert (event.out_trade_no, event.amount_fen) == (no, 1234)
    assert (await wechat.query_order(no)).state is OrderState.PAID
    # paid already: the cashier says so and pays nothing twice
    assert 'id="confirm"' not in (await http.get(url)).text
    again_paid = await http.post(
        f"{sandbox.base_url}/sandbox/h5/pay",
        data={"prepay_id": url.params["prepay_id"], "redirect_url": back},
    )
    assert again_paid.status_code == 303
    assert len(await sandbox_control.notifications(no)) == 1

    today = (await sandbox_control.now()).astimezone(BEIJING)
    midnight = datetime.combine(today.date() + timedelta(days=1), datetime.min.time(), BEIJING)
    await sandbox_control.move_to(midnight + timedelta(hours=10, seconds=1))
    assert (await download_entries(wechat, today))[no].trade_type == "MWEB"


async def test_the_cashier_refuses_an_unknown_order_and_a_return_address_that_is_not_a_page(
    wechat: WechatPayProvider, receiver: Receiver, http: httpx.AsyncClient, sandbox: SandboxProcess
) -> None:
    unknown = await http.get(f"{sandbox.base_url}/sandbox/h5/checkmweb?prepay_id=wx0&package=1")
    assert unknown.status_code == 404
    assert "订单不存在" in unknown.text
    no = new_trade_no()
    order = await wechat.create_order(
        no,
        100,
        "停车费",
        receiver.url(receiver.new_path()),
        h5=H5Scene(client_ip="127.0.0.1", return_url="javascript:alert(1)"),
    )
    refused = await http.get(order.code_url)
    assert refused.status_code == 400
    assert "redirect_url" in refused.text
    assert (await wechat.query_order(no)).state is OrderState.PENDING


# --------------------------------------------------------------------------- restarts


async def test_restart_keeps_orders_keys_and_undelivered_notifications(
    tmp_path: Path, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    process = SandboxProcess(tmp_path, 8064)
    process.start()
    try:
        identity = msgspec.json.decode((process.data_dir / "identity.json").read_bytes())
        provider = WechatPayProvider.from_config(
            adapter.load_config(process.config_path), http=http, clock=SystemClock()
        )
        control = SandboxControl(http, process.base_url)
        await control.control("notifications", mode="hold")
        no, path = new_trade_no(), receiver.new_path()
        await provider.create_order(no, 4321, "停车费", receiver.url(path))
        await control.pay(no)
        process.stop()
        process.start()
        assert msgspec.json.decode((process.data_dir / "identity.json").read_bytes()) == identity
        status = await provider.query_order(no)
        assert (status.state, status.amount_fen) == (OrderState.PAID, 4321)
        await control.control("release", order="fifo")
        [record] = await receiver.wait_for(path, 1)
        assert isinstance(
            provider.parse_notification(record.headers, record.body, now()), PaymentSucceeded
        )
    finally:
        process.stop()
