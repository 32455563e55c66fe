"""The sandbox provider's use cases: logic decides, the store keeps, one call each.

Kept whole (over 600 lines): one use case per provider API call, in the API's order.

Every method runs synchronously on the event loop and commits before it
returns, so an HTTP answer never promises state a crash could lose.

Two clocks: ``business_now`` (real time plus the offset ``/sandbox/clock``
moved it by) stamps orders, payments, refunds and bill days; real time
(``clock``) stamps signatures and schedules deliveries, because the merchant
checks signature freshness against its own clock and retries are about
elapsed time, not business days.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import string
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

import msgspec

from counterparts.payments import logic
from counterparts.payments.keys import SandboxKeys
from counterparts.payments.model import (
    ApiError,
    Attempt,
    BillAddUnknownCommand,
    BillOmitCommand,
    BillWrongAmountCommand,
    ClockCommand,
    CloseRequest,
    ControlCommand,
    Controls,
    DeductionOutcome,
    DeductRequest,
    Delivery,
    DeliveryState,
    ExtraBillRow,
    FailCommand,
    H5OrderRequest,
    Mandate,
    MandateCommand,
    NativeOrderRequest,
    NotificationsCommand,
    Order,
    OrderKind,
    OutageCommand,
    ParkingEntryRequest,
    PayCommand,
    RefundRequest,
    RefundsCommand,
    ReleaseCommand,
    ResetCommand,
)
from counterparts.payments.store import SandboxStore
from parking.clock import Clock
from parking.payments.wire import BEIJING
from parking.payments.wire import wechat as wire

#: The CLI hands ``SandboxSettings`` (JSON) to granian's worker through this variable.
SETTINGS_ENV: Final = "PARKING_SANDBOX_PAY_SETTINGS"
#: A bill download URL is valid for 5 minutes (WeChat documents 5 min / 30 s).
BILL_LINK_TTL_S: Final = 300.0
#: Gap between released held notifications, so "reverse" really arrives reversed.
RELEASE_GAP_S: Final = 0.2
#: Delay before a duplicate copy follows an acknowledged delivery.
DUPLICATE_GAP_S: Final = 0.05
_ALNUM: Final = string.ascii_letters + string.digits


class SandboxSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How ``parking sandbox-pay`` was started (passed to the app as JSON)."""

    data_dir: str
    public_url: str
    host: str = "127.0.0.1"
    port: int = 8090
    #: Multiplies WeChat's retry intervals (15 s, 15 s, 30 s, 3 min...): 0.01 in tests.
    retry_scale: float = 1.0
    #: Seconds before an accepted deduction or a refund settles.
    settle_delay: float = 2.0
    #: Chance that an acknowledged notification is sent once more anyway.
    duplicate_rate: float = 0.02
    #: Seconds the sandbox waits for the merchant's reply (WeChat: about 5 s).
    delivery_timeout: float = 5.0
    log_level: str = "info"
    log_format: str = "json"
    #: where the Alipay side listens (``counterparts.payments.alipay``); None: no Alipay
    alipay_port: int | None = None


def _digits(count: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(count))


class SandboxPay:
    def __init__(
        self,
        store: SandboxStore,
        keys: SandboxKeys,
        settings: SandboxSettings,
        *,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self._clock = clock
        self._rng = rng or random.Random()  # chaos, not cryptography
        self._bill_links: dict[str, tuple[bytes, float]] = {}

    # ----------------------------------------------------------------- clocks

    def real_now(self) -> float:
        return self._clock.now().timestamp()

    def business_now(self) -> datetime:
        moment = self._clock.now() + timedelta(seconds=self.store.clock_offset())
        return moment.astimezone(BEIJING).replace(microsecond=0)

    def move_clock(self, command: ClockCommand) -> datetime:
        offset = self.store.clock_offset()
        if command.to is not None:
            offset = (command.to - self._clock.now()).total_seconds()
        if command.advance_seconds is not None:
            offset += command.advance_seconds
        self.store.save_clock_offset(offset)
        return self.business_now()

    # ----------------------------------------------------------------- signatures

    @property
    def _ours(self) -> tuple[str, str]:
        return self.keys.identity.mchid, self.keys.identity.appid

    def authenticate(self, authorization: str, *, method: str, target: str, body: bytes) -> str:
        """Check the merchant's ``Authorization``; 401 ``SIGN_ERROR`` as WeChat answers.

        Returns the merchant id the request was signed for.
        """
        identity = self.keys.identity
        try:
            auth = wire.verify_request_authorization(
                authorization,
                method=method,
                path_with_query=target,
                body=body,
                public_keys={
                    (identity.mchid, identity.merchant_serial): self.keys.merchant_public_key
                },
                now=self._clock.now(),
            )
        except wire.AuthorizationRejected as exc:
            raise ApiError(401, "SIGN_ERROR", f"错误的签名，验签失败: {exc}") from exc
        return auth.mchid

    def sign(self, body: bytes) -> dict[str, str]:
        """``Wechatpay-*`` headers for a response or notification body."""
        return wire.sign_notification(
            body,
            private_key=self.keys.platform_private_key,
            serial=self.keys.identity.platform_public_key_id,
            timestamp=int(self.real_now()),
            nonce=secrets.token_hex(16),
        )

    def check_outage(self) -> None:
        if self.store.controls().outage:
            raise ApiError(500, "SYSTEM_ERROR", "系统错误")

    # ----------------------------------------------------------------- native orders

    def _order(
        self, out_trade_no: str, kind: OrderKind | frozenset[OrderKind] | None = None
    ) -> Order:
        order = self.store.order(out_trade_no)
        kinds = frozenset({kind}) if isinstance(kind, OrderKind) else kind
        if order is None or (kinds is not None and order.kind not in kinds):
            raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
        current = logic.effective(order, self.business_now())
        if current is not order:
            self.store.save_order(current)
        return current

    def create_native(self, request: NativeOrderRequest, *, auth_mchid: str) -> str:
        logic.check_merchant(request.mchid, request.appid, ours=self._ours)
        logic.check_merchant(auth_mchid, None, ours=self._ours)
        existing = self.store.order(request.out_trade_no)
        if existing is not None:
            existing = logic.effective(existing, self.business_now())
        order = logic.create_native(
            request,
            existing,
            now=self.business_now(),
            code_url=f"weixin://wxpay/bizpayurl?pr={secrets.token_urlsafe(6)}",
        )
        if order is not existing:
            self.store.save_order(order)
        assert order.code_url is not None
        return order.code_url

    def create_h5(self, request: H5OrderRequest, *, auth_mchid: str, cashier: str) -> str:
        """WeChat's ``h5_url``: the cashier page (``cashier`` is its address here) with
        the order's ``prepay_id``; the merchant appends ``&redirect_url=...``."""
        logic.check_merchant(request.mchid, request.appid, ours=self._ours)
        logic.check_merchant(auth_mchid, None, ours=self._ours)
        existing = self.store.order(request.out_trade_no)
        if existing is not None:
            existing = logic.effective(existing, self.business_now())
        prepay_id = "wx" + self.business_now().strftime("%d%H%M%S") + secrets.token_hex(12)
        order = logic.create_native(
            request,
            existing,
            now=self.business_now(),
            code_url=f"{cashier}?{urlencode({'prepay_id': prepay_id, 'package': _digits(10)})}",
            kind=OrderKind.H5,
        )
        if order is not existing:
            with self.store.transaction():
                self.store.save_order(order)
                self.store.save_prepay(prepay_id, order.out_trade_no)
        assert order.code_url is not None
        return order.code_url

    def h5_order(self, prepay_id: str) -> Order:
        """The H5 order behind a cashier page's ``prepay_id``."""
        out_trade_no = self.store.prepay(prepay_id)
        if out_trade_no is None:
            raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在或已过期")
        return self._order(out_trade_no, OrderKind.H5)

    def query_native(self, out_trade_no: str, *, mchid: str | None) -> dict[str, Any]:
        logic.check_merchant(mchid, None, ours=self._ours)
        return logic.order_payload(self._order(out_trade_no, logic.BASIC))

    def close_native(self, out_trade_no: str, request: CloseRequest) -> None:
        logic.check_merchant(request.mchid, None, ours=self._ours)
        order = logic.close(self._order(out_trade_no, logic.BASIC))
        self.store.save_order(order)

    # ----------------------------------------------------------------- refunds

    def create_refund(self, request: RefundRequest) -> dict[str, Any]:
        order = None
        if request.out_trade_no is not None:
            order = self.store.order(request.out_trade_no)
        elif request.transaction_id is not None:
            order = self.store.order_by_transaction(request.transaction_id)
        if order is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        existing = self.store.refund(request.out_refund_no)
        if existing is not None and existing.out_trade_no != order.out_trade_no:
            raise ApiError(400, "INVALID_REQUEST", "商户退款单号重复")
        refunded = sum(
            refund.refund_fen
            for refund in self.store.refunds_of(order.out_trade_no)
            if refund.status is not wire.RefundStatus.CLOSED
        )
        order, refund = logic.create_refund(
            request,
            order,
            existing,
            refunded,
            now=self.business_now(),
            refund_id="50" + _digits(27),
        )
        if existing is None:
            with self.store.transaction():
                self.store.save_order(order)
                self.store.save_refund(refund)
                self.store.schedule(
                    refund.out_refund_no, "refund", self.real_now() + self.settings.settle_delay
                )
        return logic.refund_payload(refund)

    def query_refund(self, out_refund_no: str) -> dict[str, Any]:
        refund = self.store.refund(out_refund_no)
        if refund is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return logic.refund_payload(refund)

    def _settle_refund(self, out_refund_no: str) -> None:
        refund = self.store.refund(out_refund_no)
        if refund is None:
            return
        settled = logic.settle_refund(
            refund, now=self.business_now(), outcome=self.store.controls().refund_outcome
        )
        event_type, summary = {
            wire.RefundStatus.SUCCESS: (wire.EventType.REFUND_SUCCESS, "退款成功"),
            wire.RefundStatus.ABNORMAL: (wire.EventType.REFUND_ABNORMAL, "退款异常"),
            wire.RefundStatus.CLOSED: (wire.EventType.REFUND_CLOSED, "退款关闭"),
        }[settled.status]
        order = self.store.order(refund.out_trade_no)
        assert order is not None
        with self.store.transaction():
            self.store.save_refund(settled)
            if settled.notify_url:
                self._notify(
                    out_trade_no=order.out_trade_no,
                    event_type=event_type,
                    plaintext=wire.encode_message(logic.refund_notice(settled, order)),
                    original_type="refund",
                    summary=summary,
                    notify_url=settled.notify_url,
                )

    # ----------------------------------------------------------------- bills

    def trade_bill(self, bill_date: date, bill_type: wire.TradeBillType) -> tuple[str, str]:
        """``(sha1, token)`` of a day's bill, or WeChat's errors for not ready / no trades."""
        now = self.business_now()
        if not logic.bill_ready(bill_date, now):
            raise ApiError(400, "STATEMENT_CREATING", "账单生成中")
        if bill_date < (now - timedelta(days=92)).date():
            raise ApiError(400, "INVALID_REQUEST", "仅支持三个月内的账单下载申请")
        paid = self.store.paid_on(bill_date)
        refunds = self.store.refunds_created_on(bill_date)
        orders = {}
        for refund in refunds:
            order = self.store.order(refund.out_trade_no)
            assert order is not None
            orders[order.out_trade_no] = order
        rows = logic.bill_rows(
            bill_date,
            bill_type,
            paid=paid,
            refunds=refunds,
            orders=orders,
            controls=self.store.controls(),
            mchid=self.keys.identity.mchid,
            appid=self.keys.identity.appid,
        )
        if not rows:
            raise ApiError(400, "NO_STATEMENT_EXIST", "请求的账单文件不存在")
        content = logic.render_bill(rows, bill_type)
        token = secrets.token_urlsafe(24)
        now_real = self.real_now()
        self._bill_links = {
            key: value for key, value in self._bill_links.items() if value[1] > now_real
        }
        self._bill_links[token] = (content, now_real + BILL_LINK_TTL_S)
        return hashlib.sha1(content, usedforsecurity=False).hexdigest(), token

    def bill_file(self, token: str) -> bytes:
        link = self._bill_links.get(token)
        if link is None or link[1] < self.real_now():
            raise ApiError(400, "INVALID_REQUEST", "下载链接已失效")
        return link[0]

    # ----------------------------------------------------------------- parking service

    def find_service(
        self, *, appid: str, plate_number: str, plate_color: str, openid: str
    ) -> dict[str, Any]:
        logic.check_merchant(None, appid, ours=self._ours)
        mandate = self.store.mandate(plate_number, plate_color)
        state = logic.plate_service(mandate, openid)
        payload: dict[str, Any] = {
            "plate_number": plate_number,
            "plate_color": plate_color,
            "openid": openid,
            "service_state": state,
        }
        if mandate is not None and state != "OUT_SERVICE":
            payload["service_open_time"] = mandate.opened_at.isoformat()
        return payload

    def create_parking(self, request: ParkingEntryRequest) -> dict[str, Any]:
        existing = self.store.parking_by_out_no(request.out_parking_no)
        mandate = self.store.mandate(request.plate_number, request.plate_color)
        parking = logic.create_parking(request, existing, mandate, parking_id="PK" + _digits(18))
        if parking is not existing:
            self.store.save_parking(parking)
        payload: dict[str, Any] = {
            "id": parking.id,
            "out_parking_no": parking.out_parking_no,
            "plate_number": parking.plate_number,
            "plate_color": parking.plate_color,
            "start_time": parking.start_time.astimezone(BEIJING).isoformat(),
            "parking_name": parking.parking_name,
            "free_duration": parking.free_duration,
            "state": parking.state,
        }
        if parking.block_reason is not None:
            payload["block_reason"] = parking.block_reason
        return payload

    def deduct(self, request: DeductRequest, *, auth_mchid: str) -> dict[str, Any]:
        logic.check_merchant(auth_mchid, request.appid, ours=self._ours)
        info = request.parking_info
        existing = self.store.order(request.out_trade_no)
        order = logic.accept_deduction(
            request,
            existing,
            self.store.parking(info.parking_id),
            self.store.mandate(info.plate_number, info.plate_color),
            mchid=self.keys.identity.mchid,
            now=self.business_now(),
            transaction_id="4200" + _digits(24),
        )
        if order is not existing:
            with self.store.transaction():
                self.store.save_order(order)
                mandate = self.store.mandate(info.plate_number, info.plate_color)
                if mandate is None or mandate.outcome is not DeductionOutcome.MANUAL:
                    self.store.schedule(
                        order.out_trade_no,
                        "deduction",
                        self.real_now() + self.settings.settle_delay,
                    )
        return logic.order_payload(order)

    def query_parking_order(self, out_trade_no: str) -> dict[str, Any]:
        return logic.order_payload(self._order(out_trade_no, OrderKind.PARKING))

    def _settle_deduction(self, out_trade_no: str) -> None:
        order = self.store.order(out_trade_no)
        if order is None or order.state is not wire.TradeState.ACCEPTED:
            return
        assert order.parking is not None
        mandate = self.store.mandate(order.parking.plate_number, order.parking.plate_color)
        if mandate is not None and mandate.outcome is DeductionOutcome.SUCCESS:
            self.pay(out_trade_no, PayCommand())
        else:
            self.fail(out_trade_no, FailCommand())

    # ----------------------------------------------------------------- the driver's side

    def pay(self, out_trade_no: str, command: PayCommand) -> dict[str, Any]:
        """The driver pays a native order, or an accepted deduction succeeds."""
        order = self._order(out_trade_no)
        paid = logic.pay(
            order,
            now=self.business_now(),
            transaction_id="4200" + _digits(24),
            openid=command.openid or "oSandbox" + secrets.token_hex(10),
        )
        resource = logic.transaction(paid, notify_amount_fen=command.notify_amount_fen)
        with self.store.transaction():
            self.store.save_order(paid)
            self._notify(
                out_trade_no=out_trade_no,
                event_type=wire.EventType.TRANSACTION_SUCCESS,
                plaintext=wire.encode_message(resource),
                original_type="transaction",
                summary="支付成功",
                notify_url=paid.notify_url,
            )
        return logic.order_payload(paid)

    def fail(self, out_trade_no: str, command: FailCommand) -> dict[str, Any]:
        order = self._order(out_trade_no)
        failed = logic.fail(order, reason=command.reason)
        with self.store.transaction():
            self.store.save_order(failed)
            # Basic payments have no failure notification; the parking service does.
            if failed.kind is OrderKind.PARKING:
                self._notify(
                    out_trade_no=out_trade_no,
                    event_type=wire.EventType.TRANSACTION_FAIL,
                    plaintext=wire.encode_message(logic.transaction(failed)),
                    original_type="transaction",
                    summary="支付失败",
                    notify_url=failed.notify_url,
                )
        return logic.order_payload(failed)

    def repay(self, out_trade_no: str) -> dict[str, Any]:
        repaid = logic.repay(self._order(out_trade_no), now=self.business_now())
        with self.store.transaction():
            self.store.save_order(repaid)
            self._notify(
                out_trade_no=out_trade_no,
                event_type=wire.EventType.TRANSACTION_PAY_BACK,
                plaintext=wire.encode_message(logic.transaction(repaid)),
                original_type="transaction",
                summary="用户已还款",
                notify_url=repaid.notify_url,
            )
        return logic.order_payload(repaid)

    # ----------------------------------------------------------------- 网页授权 (OAuth 2.0)

    def oauth_code(self, appid: str, openid: str) -> str:
        """A one-time ``code`` for the WeChat user ``openid`` (snsapi_base is silent)."""
        if appid != self.keys.identity.appid:
            raise ApiError(400, "40013", "invalid appid")
        code = secrets.token_urlsafe(24)
        self.store.save_oauth_code(code, openid, expires_at=self.real_now() + 300)
        return code

    def oauth_token(self, *, appid: str, secret: str, code: str) -> dict[str, Any]:
        """The ``sns/oauth2/access_token`` answer: the openid behind a ``code``, once."""
        if appid != self.keys.identity.appid or not secrets.compare_digest(
            secret, self.keys.app_secret
        ):
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        openid = self.store.take_oauth_code(code, now=self.real_now())
        if openid is None:
            return {"errcode": 40029, "errmsg": "invalid code"}
        return {
            "access_token": secrets.token_urlsafe(32),
            "expires_in": 7200,
            "refresh_token": secrets.token_urlsafe(32),
            "openid": openid,
            "scope": "snsapi_base",
        }

    def set_mandate(self, command: MandateCommand) -> Mandate:
        previous = self.store.mandate(command.plate_number, command.plate_color)
        mandate = Mandate(
            openid=command.openid,
            plate_number=command.plate_number,
            plate_color=command.plate_color,
            state=command.state,
            opened_at=previous.opened_at if previous else self.business_now(),
            outcome=command.outcome,
        )
        self.store.save_mandate(mandate)
        return mandate

    def order_view(self, out_trade_no: str) -> dict[str, Any]:
        order = self._order(out_trade_no)
        view: dict[str, Any] = msgspec.to_builtins(order)
        view["refunds"] = [msgspec.to_builtins(r) for r in self.store.refunds_of(out_trade_no)]
        return view

    # ----------------------------------------------------------------- controls

    def control(self, command: ControlCommand) -> Controls:
        controls = self.store.controls()
        match command:
            case NotificationsCommand():
                controls = msgspec.structs.replace(
                    controls,
                    mode=command.mode,
                    delay_seconds=command.delay_seconds,
                    duplicates=command.duplicates,
                    duplicate_rate=command.duplicate_rate,
                )
            case ReleaseCommand():
                self._release(reverse=command.order == "reverse")
                if controls.mode == "hold":
                    controls = msgspec.structs.replace(controls, mode="deliver")
            case OutageCommand():
                controls = msgspec.structs.replace(controls, outage=command.enabled)
            case BillWrongAmountCommand():
                amounts = {**controls.bill_amounts, command.out_trade_no: command.amount_fen}
                controls = msgspec.structs.replace(controls, bill_amounts=amounts)
            case BillOmitCommand():
                omit = [*controls.bill_omit, command.out_trade_no]
                controls = msgspec.structs.replace(controls, bill_omit=omit)
            case RefundsCommand():
                controls = msgspec.structs.replace(controls, refund_outcome=command.outcome)
            case BillAddUnknownCommand():
                extra = ExtraBillRow(
                    out_trade_no=command.out_trade_no,
                    amount_fen=command.amount_fen,
                    bill_date=command.bill_date,
                    transaction_id="4200" + _digits(24),
                )
                controls = msgspec.structs.replace(
                    controls, bill_extra=[*controls.bill_extra, extra]
                )
            case ResetCommand():
                controls = Controls()
        self.store.save_controls(controls)
        return controls

    def _release(self, *, reverse: bool) -> None:
        held = self.store.held()
        if reverse:
            held.reverse()
        start = self.real_now()
        with self.store.transaction():
            for index, delivery in enumerate(held):
                self.store.update_delivery(
                    delivery.seq,
                    state=DeliveryState.PENDING,
                    failures=delivery.failures,
                    copies_left=delivery.copies_left,
                    next_attempt_at=start + index * RELEASE_GAP_S,
                )

    # ----------------------------------------------------------------- notifications

    def _notify(
        self,
        *,
        out_trade_no: str,
        event_type: str,
        plaintext: bytes,
        original_type: str,
        summary: str,
        notify_url: str,
    ) -> None:
        """Queue a signed-at-send, encrypted notification as the controls say (in a transaction)."""
        resource = wire.encrypt_resource(
            plaintext,
            api_v3_key=self.keys.api_v3_key,
            nonce="".join(secrets.choice(_ALNUM) for _ in range(12)),
            associated_data=original_type,
            original_type=original_type,
        )
        now = self.business_now()
        notification = wire.Notification(
            id=str(uuid.uuid4()),
            create_time=now,
            event_type=event_type,
            resource_type="encrypt-resource",
            summary=summary,
            resource=resource,
        )
        controls = self.store.controls()
        rate = (
            self.settings.duplicate_rate
            if controls.duplicate_rate is None
            else controls.duplicate_rate
        )
        copies = controls.duplicates + (1 if self._rng.random() < rate else 0)
        state = {
            "deliver": DeliveryState.PENDING,
            "drop": DeliveryState.DROPPED,
            "hold": DeliveryState.HELD,
        }[controls.mode]
        self.store.add_delivery(
            id=notification.id,
            out_trade_no=out_trade_no,
            event_type=event_type,
            notify_url=notify_url,
            body=wire.encode_message(notification),
            state=state,
            copies=copies,
            first_attempt_at=self.real_now() + controls.delay_seconds,
            created_at=now.astimezone(UTC),
        )

    def claim_due(self, limit: int = 64) -> list[Delivery]:
        return self.store.claim_due(self.real_now(), limit)

    def delivered(self, delivery: Delivery, *, status: int, error: str = "") -> None:
        """Record one attempt's outcome and schedule what follows (retry, duplicate, done)."""
        now = self.real_now()
        ok = 200 <= status < 300
        copy = self._is_copy(delivery)
        with self.store.transaction():
            self.store.add_attempt(
                Attempt(
                    notification_id=delivery.id,
                    at=now,
                    status=status,
                    error=error,
                    duplicate=copy,
                )
            )
            if ok and delivery.copies_left > 0:
                self.store.update_delivery(
                    delivery.seq,
                    state=DeliveryState.PENDING,
                    failures=delivery.failures,
                    copies_left=delivery.copies_left - 1,
                    next_attempt_at=now + DUPLICATE_GAP_S,
                )
            elif ok:
                self.store.update_delivery(
                    delivery.seq,
                    state=DeliveryState.DELIVERED,
                    failures=delivery.failures,
                    copies_left=0,
                    next_attempt_at=now,
                )
            else:
                failures = delivery.failures + 1
                wait = logic.retry_delay(failures, self.settings.retry_scale)
                self.store.update_delivery(
                    delivery.seq,
                    state=DeliveryState.FAILED if wait is None else DeliveryState.PENDING,
                    failures=failures,
                    copies_left=delivery.copies_left,
                    next_attempt_at=now + (wait or 0.0),
                )

    def _is_copy(self, delivery: Delivery) -> bool:
        # A copy is any send after the notification was already acknowledged once.
        return any(200 <= a.status < 300 for a in self.store.attempts(delivery.id))

    def settle_due(self) -> int:
        due = self.store.take_due_settlements(self.real_now())
        for key, kind in due:
            if kind == "refund":
                self._settle_refund(key)
            elif kind == "deduction":
                self._settle_deduction(key)
        return len(due)

    def notifications(self, out_trade_no: str | None) -> list[dict[str, Any]]:
        return [
            {
                "id": delivery.id,
                "out_trade_no": delivery.out_trade_no,
                "event_type": delivery.event_type,
                "state": delivery.state.value,
                "failures": delivery.failures,
                "attempts": [
                    {"at": a.at, "status": a.status, "error": a.error, "duplicate": a.duplicate}
                    for a in self.store.attempts(delivery.id)
                ],
            }
            for delivery in self.store.deliveries(out_trade_no)
        ]
