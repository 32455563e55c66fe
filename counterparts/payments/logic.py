"""The sandbox provider's decisions, pure: ``(record, input, now) -> record`` or ``ApiError``.

Kept whole (about 600 lines): the provider's state machine, one decision per API call.

Mirrors what WeChat Pay does as documented (notes/provider-formats.md and the
v3 API pages); where the docs are silent the choice is written down here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, Final

import msgspec

from counterparts.payments.model import (
    ApiError,
    Controls,
    DeductRequest,
    Mandate,
    NativeOrderRequest,
    Order,
    OrderKind,
    Parking,
    ParkingEntryRequest,
    ParkingInfo,
    Refund,
    RefundRequest,
)
from parking.payments.wire import BEIJING
from parking.payments.wire import wechat as wire

#: WeChat's documented notification retry intervals after each failed attempt
#: (about 24 h 4 min in all); multiplied by the process's ``retry_scale``.
RETRY_SCHEDULE: Final = (
    15,
    15,
    30,
    180,
    600,
    1200,
    1800,
    1800,
    1800,
    3600,
    10800,
    10800,
    10800,
    21600,
    21600,
)
#: Bills are generated after 10:00 Beijing time the next day.
BILL_READY_AT: Final = time(10, 0)
#: The sandbox merchant's rate; a display value in the bill's 费率 column.
FEE_RATE: Final = "0.60%"
_FEE_PER_MILLE: Final = 6
_SUCCESS_DESC: Final = "支付成功"


def retry_delay(failures: int, scale: float) -> float | None:
    """Seconds to wait after the ``failures``-th failed attempt; ``None``: give up."""
    if failures < 1:
        raise ValueError("failures counts failed attempts, from 1")
    if failures > len(RETRY_SCHEDULE):
        return None
    return RETRY_SCHEDULE[failures - 1] * scale


def fingerprint(request: msgspec.Struct) -> str:
    """Identifies a request's parameters: a repeat must match to be idempotent."""
    return hashlib.sha256(msgspec.json.encode(request)).hexdigest()


def check_merchant(mchid: str | None, appid: str | None, *, ours: tuple[str, str]) -> None:
    our_mchid, our_appid = ours
    if (mchid is not None and mchid != our_mchid) or (appid is not None and appid != our_appid):
        raise ApiError(400, "INVALID_REQUEST", "appid和mch_id不匹配")


# --------------------------------------------------------------------------- orders

#: Orders the payer pays themselves (a QR code, the H5 cashier): same states, same queries.
BASIC: Final = frozenset({OrderKind.NATIVE, OrderKind.H5})


def effective(order: Order, now: datetime) -> Order:
    """An unpaid native order past its ``time_expire`` can no longer be paid: CLOSED.

    WeChat's docs only say payment is refused after the deadline; showing it as
    CLOSED is the sandbox's choice, so a sweeper sees a final state.
    """
    if (
        order.kind in BASIC
        and order.state is wire.TradeState.NOTPAY
        and order.expires_at is not None
        and now >= order.expires_at
    ):
        return msgspec.structs.replace(order, state=wire.TradeState.CLOSED, state_desc="订单已关闭")
    return order


def create_native(
    request: NativeOrderRequest,
    existing: Order | None,
    *,
    now: datetime,
    code_url: str,
    kind: OrderKind = OrderKind.NATIVE,
) -> Order:
    """A new NOTPAY order, or the existing one for a repeat of the same request.

    ``kind`` H5: ``request`` is an ``H5OrderRequest`` and ``code_url`` the cashier
    page's URL (WeChat's ``h5_url``)."""
    assert kind in BASIC
    request_print = fingerprint(request)
    if existing is not None:
        if existing.fingerprint != request_print or existing.kind is not kind:
            raise ApiError(400, "INVALID_REQUEST", "商户订单号重复")
        if existing.state in wire.PAID_TRADE_STATES:
            raise ApiError(400, "ORDERPAID", "该订单已支付")
        if existing.state is wire.TradeState.CLOSED:
            raise ApiError(400, "ORDER_CLOSED", "订单已关闭")
        return existing
    return Order(
        out_trade_no=request.out_trade_no,
        kind=kind,
        appid=request.appid,
        mchid=request.mchid,
        description=request.description,
        amount_fen=request.amount.total,
        notify_url=request.notify_url,
        created_at=now,
        state=wire.TradeState.NOTPAY,
        state_desc="订单未支付",
        fingerprint=request_print,
        attach=request.attach,
        expires_at=request.time_expire,
        code_url=code_url,
    )


def close(order: Order) -> Order:
    if order.state in wire.PAID_TRADE_STATES:
        raise ApiError(400, "ORDERPAID", "订单已支付，不能关闭")
    if order.kind not in BASIC:
        raise ApiError(400, "INVALID_REQUEST", "停车服务订单不能关闭")
    # Closing twice is accepted: a merchant retrying after a timeout must not
    # see an error for what it asked for.
    return msgspec.structs.replace(order, state=wire.TradeState.CLOSED, state_desc="订单已关闭")


def pay(order: Order, *, now: datetime, transaction_id: str, openid: str) -> Order:
    """The driver paid (native) or the accepted deduction went through (parking)."""
    payable = {
        OrderKind.NATIVE: wire.TradeState.NOTPAY,
        OrderKind.H5: wire.TradeState.NOTPAY,
        OrderKind.PARKING: wire.TradeState.ACCEPTED,
    }[order.kind]
    if order.state is not payable:
        raise ApiError(409, "INVALID_STATE", f"order {order.out_trade_no} is {order.state}")
    return msgspec.structs.replace(
        order,
        state=wire.TradeState.SUCCESS,
        state_desc=_SUCCESS_DESC,
        transaction_id=order.transaction_id or transaction_id,
        success_time=now,
        payer_openid=order.payer_openid or openid,
    )


def fail(order: Order, *, reason: str) -> Order:
    """The payment failed: PAYERROR (native), PAY_FAIL (parking; may be repaid later)."""
    failed = {
        OrderKind.NATIVE: (wire.TradeState.NOTPAY, wire.TradeState.PAYERROR),
        OrderKind.H5: (wire.TradeState.NOTPAY, wire.TradeState.PAYERROR),
        OrderKind.PARKING: (wire.TradeState.ACCEPTED, wire.TradeState.PAY_FAIL),
    }
    before, after = failed[order.kind]
    if order.state is not before:
        raise ApiError(409, "INVALID_STATE", f"order {order.out_trade_no} is {order.state}")
    return msgspec.structs.replace(order, state=after, state_desc=reason)


def repay(order: Order, *, now: datetime) -> Order:
    """The driver repaid a failed deduction (TRANSACTION.PAY_BACK)."""
    if order.kind is not OrderKind.PARKING or order.state is not wire.TradeState.PAY_FAIL:
        raise ApiError(409, "INVALID_STATE", f"order {order.out_trade_no} is {order.state}")
    return msgspec.structs.replace(
        order,
        state=wire.TradeState.SUCCESS,
        state_desc=_SUCCESS_DESC,
        success_time=now,
        user_repaid="Y",
    )


# --------------------------------------------------------------------------- parking service


def plate_service(mandate: Mandate | None, openid: str) -> str:
    """``service_state`` of a plate for this user: only its own mandate counts."""
    if mandate is None or mandate.openid != openid:
        return "OUT_SERVICE"
    return mandate.state


def create_parking(
    request: ParkingEntryRequest,
    existing: Parking | None,
    mandate: Mandate | None,
    *,
    parking_id: str,
) -> Parking:
    request_print = fingerprint(request)
    if existing is not None:
        if existing.fingerprint != request_print:
            raise ApiError(400, "INVALID_REQUEST", "商户入场id重复")
        return existing
    state, reason = "NORMAL", None
    if mandate is None or mandate.state == "OUT_SERVICE":
        state, reason = "BLOCKED", "OUT_SERVICE"
    elif mandate.state == "PAUSE":
        state, reason = "BLOCKED", "PAUSE"
    return Parking(
        id=parking_id,
        out_parking_no=request.out_parking_no,
        plate_number=request.plate_number,
        plate_color=request.plate_color,
        start_time=request.start_time,
        parking_name=request.parking_name,
        free_duration=request.free_duration,
        notify_url=request.notify_url,
        state=state,
        block_reason=reason,
        fingerprint=request_print,
    )


def accept_deduction(
    request: DeductRequest,
    existing: Order | None,
    parking: Parking | None,
    mandate: Mandate | None,
    *,
    mchid: str,
    now: datetime,
    transaction_id: str,
) -> Order:
    """Accept (ACCEPTED) or refuse a deduction; a same-parameter repeat returns the order.

    Refusals are 403 ``NO_AUTH`` (the sandbox's choice: WeChat documents the
    class, 403 "no permission for this user/plate", not one code per reason).
    """
    request_print = fingerprint(request)
    if existing is not None:
        if existing.fingerprint != request_print or existing.kind is not OrderKind.PARKING:
            raise ApiError(400, "INVALID_REQUEST", "商户订单号重复")
        return existing
    info = request.parking_info
    if parking is None:
        raise ApiError(400, "INVALID_REQUEST", "入场id不存在")
    if (parking.plate_number, parking.plate_color) != (info.plate_number, info.plate_color):
        raise ApiError(400, "INVALID_REQUEST", "车牌与入场信息不一致")
    if mandate is None or mandate.state != "NORMAL":
        state = "OUT_SERVICE" if mandate is None else mandate.state
        raise ApiError(403, "NO_AUTH", f"车牌未开通或已暂停微信支付分停车服务({state})")
    return Order(
        out_trade_no=request.out_trade_no,
        kind=OrderKind.PARKING,
        appid=request.appid,
        mchid=mchid,
        description=request.description,
        amount_fen=request.amount.total,
        notify_url=request.notify_url,
        created_at=now,
        state=wire.TradeState.ACCEPTED,
        state_desc="已受理，等待扣款",
        fingerprint=request_print,
        attach=request.attach,
        transaction_id=transaction_id,
        payer_openid=mandate.openid,
        parking=ParkingInfo(
            parking_id=info.parking_id,
            plate_number=info.plate_number,
            plate_color=info.plate_color,
            start_time=info.start_time,
            end_time=info.end_time,
            parking_name=info.parking_name,
            charging_duration=info.charging_duration,
            device_id=info.device_id,
        ),
    )


# --------------------------------------------------------------------------- refunds


def create_refund(
    request: RefundRequest,
    order: Order,
    existing: Refund | None,
    refunded_so_far: int,
    *,
    now: datetime,
    refund_id: str,
) -> tuple[Order, Refund]:
    """A PROCESSING refund and the order moved to REFUND; a repeat returns the refund."""
    request_print = fingerprint(request)
    if existing is not None:
        if existing.fingerprint != request_print:
            raise ApiError(400, "INVALID_REQUEST", "商户退款单号重复")
        return order, existing
    if order.state not in wire.PAID_TRADE_STATES or order.transaction_id is None:
        raise ApiError(400, "INVALID_REQUEST", "订单未支付，不能退款")
    if request.amount.total != order.amount_fen:
        raise ApiError(400, "INVALID_REQUEST", "订单金额与退款请求不一致")
    if request.amount.refund > order.amount_fen - refunded_so_far:
        raise ApiError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
    refund = Refund(
        out_refund_no=request.out_refund_no,
        out_trade_no=order.out_trade_no,
        refund_id=refund_id,
        transaction_id=order.transaction_id,
        refund_fen=request.amount.refund,
        total_fen=order.amount_fen,
        status=wire.RefundStatus.PROCESSING,
        created_at=now,
        fingerprint=request_print,
        reason=request.reason,
        notify_url=request.notify_url,
    )
    # WeChat shows a paid order with any refund as REFUND (转入退款).
    return msgspec.structs.replace(order, state=wire.TradeState.REFUND), refund


_REFUND_OUTCOMES: Final = {
    "success": wire.RefundStatus.SUCCESS,
    "abnormal": wire.RefundStatus.ABNORMAL,
    "closed": wire.RefundStatus.CLOSED,
}


def settle_refund(refund: Refund, *, now: datetime, outcome: str = "success") -> Refund:
    """A PROCESSING refund ends as the ``refunds`` control says (SUCCESS by default)."""
    if refund.status is not wire.RefundStatus.PROCESSING:
        return refund
    status = _REFUND_OUTCOMES[outcome]
    if status is not wire.RefundStatus.SUCCESS:
        return msgspec.structs.replace(refund, status=status)
    return msgspec.structs.replace(refund, status=status, success_time=now)


# --------------------------------------------------------------------------- wire payloads


def transaction(order: Order, *, notify_amount_fen: int | None = None) -> wire.Transaction:
    """The order as WeChat's ``Transaction`` resource (notifications and queries)."""
    total = order.amount_fen if notify_amount_fen is None else notify_amount_fen
    paid = order.state in wire.PAID_TRADE_STATES
    parking = order.kind is OrderKind.PARKING
    return wire.Transaction(
        out_trade_no=order.out_trade_no,
        trade_state=order.state,
        amount=wire.TransactionAmount(
            total=total,
            payer_total=total if paid else None,
            currency="CNY",
            payer_currency="CNY" if paid else None,
            discount_total=0 if parking and paid else None,
        ),
        transaction_id=order.transaction_id,
        # The parking service identifies the merchant as sp_mchid.
        mchid=None if parking else order.mchid,
        sp_mchid=order.mchid if parking else None,
        appid=order.appid,
        trade_type=None if parking else _trade_type(order),
        trade_state_desc=order.state_desc,
        bank_type="OTHERS" if paid else None,
        attach=order.attach,
        success_time=order.success_time,
        payer=wire.Payer(openid=order.payer_openid) if order.payer_openid else None,
        user_repaid=order.user_repaid,
        trade_scene="PARKING" if parking else None,
    )


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(BEIJING).replace(microsecond=0).isoformat()


def order_payload(order: Order) -> dict[str, Any]:
    """A query answer: the Transaction plus the fields the query API adds."""
    payload: dict[str, Any] = msgspec.to_builtins(transaction(order))
    if order.kind is OrderKind.PARKING and order.parking is not None:
        info = order.parking
        payload["description"] = order.description
        payload["create_time"] = _rfc3339(order.created_at)
        payload["parking_info"] = {
            "parking_id": info.parking_id,
            "plate_number": info.plate_number,
            "plate_color": info.plate_color,
            "start_time": _rfc3339(info.start_time),
            "end_time": _rfc3339(info.end_time),
            "parking_name": info.parking_name,
            "charging_duration": info.charging_duration,
        }
    return payload


def refund_notice(refund: Refund, order: Order) -> wire.RefundNotice:
    return wire.RefundNotice(
        out_trade_no=refund.out_trade_no,
        out_refund_no=refund.out_refund_no,
        refund_id=refund.refund_id,
        refund_status=refund.status,
        amount=wire.RefundAmount(
            total=refund.total_fen,
            refund=refund.refund_fen,
            payer_total=refund.total_fen,
            payer_refund=refund.refund_fen,
        ),
        transaction_id=refund.transaction_id,
        mchid=order.mchid,
        success_time=refund.success_time,
        user_received_account="支付用户零钱",
    )


def refund_payload(refund: Refund) -> dict[str, Any]:
    """The refund API's answer (create and query share it)."""
    payload: dict[str, Any] = {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": refund.transaction_id,
        "out_trade_no": refund.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": _rfc3339(refund.created_at),
        "status": refund.status.value,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": refund.total_fen,
            "refund": refund.refund_fen,
            "payer_total": refund.total_fen,
            "payer_refund": refund.refund_fen,
            "settlement_refund": refund.refund_fen,
            "settlement_total": refund.total_fen,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }
    if refund.success_time is not None:
        payload["success_time"] = _rfc3339(refund.success_time)
    return payload


# --------------------------------------------------------------------------- trade bills


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=BEIJING)


def bill_ready(day: date, now: datetime) -> bool:
    """A day's bill can be downloaded from 10:00 Beijing time the next day."""
    ready = datetime.combine(day + timedelta(days=1), BILL_READY_AT, tzinfo=BEIJING)
    return now >= ready


def fee_milli_fen(amount_fen: int) -> int:
    """0.6 % rounded half up to the fen, in the bill's milli-fen (5 decimals of yuan)."""
    sign = -1 if amount_fen < 0 else 1
    fen = (abs(amount_fen) * _FEE_PER_MILLE + 500) // 1000
    return sign * fen * 1000


def _trade_type(order: Order) -> str:
    # 委托代扣 deductions appear as PAP in WeChat bills; QR payments as NATIVE,
    # payments in a phone's browser as MWEB.
    return {OrderKind.PARKING: "PAP", OrderKind.H5: "MWEB"}.get(order.kind, "NATIVE")


def _payment_row(order: Order, amount_fen: int, mchid: str) -> wire.TradeBillRow:
    assert order.success_time is not None
    assert order.transaction_id is not None
    return wire.TradeBillRow(
        trade_time=order.success_time,
        appid=order.appid,
        mchid=mchid,
        sub_mchid=None,
        device_info="",
        transaction_id=order.transaction_id,
        out_trade_no=order.out_trade_no,
        openid=order.payer_openid or "",
        trade_type=_trade_type(order),
        trade_state=wire.TradeState.SUCCESS,
        bank_type="OTHERS",
        currency="CNY",
        settlement_total_fen=amount_fen,
        coupon_fen=0,
        description=order.description,
        attach=order.attach or "",
        fee_milli_fen=fee_milli_fen(amount_fen),
        fee_rate=FEE_RATE,
        refund_fen=0,
        recharge_coupon_refund_fen=0,
        order_amount_fen=amount_fen,
        requested_refund_fen=0,
    )


def _refund_row(refund: Refund, order: Order, day: date, mchid: str) -> wire.TradeBillRow:
    # A refund row keeps the status it had at the end of its day.
    done = refund.success_time is not None and refund.success_time < day_start(
        day + timedelta(days=1)
    )
    return wire.TradeBillRow(
        trade_time=refund.created_at,
        appid=order.appid,
        mchid=mchid,
        sub_mchid=None,
        device_info="",
        transaction_id=refund.transaction_id,
        out_trade_no=refund.out_trade_no,
        openid=order.payer_openid or "",
        trade_type=_trade_type(order),
        trade_state=wire.TradeState.REFUND,
        bank_type="OTHERS",
        currency="CNY",
        settlement_total_fen=0,
        coupon_fen=0,
        description=order.description,
        attach=order.attach or "",
        fee_milli_fen=fee_milli_fen(-refund.refund_fen),
        fee_rate=FEE_RATE,
        refund_requested_at=refund.created_at,
        refund_succeeded_at=refund.success_time if done else None,
        refund_id=refund.refund_id,
        out_refund_no=refund.out_refund_no,
        refund_fen=refund.refund_fen,
        recharge_coupon_refund_fen=0,
        refund_type="ORIGINAL",
        refund_status="SUCCESS" if done else "PROCESSING",
        order_amount_fen=0,
        requested_refund_fen=refund.refund_fen,
    )


def _unknown_row(
    out_trade_no: str, amount_fen: int, transaction_id: str, day: date, *, mchid: str, appid: str
) -> wire.TradeBillRow:
    return wire.TradeBillRow(
        trade_time=day_start(day) + timedelta(hours=12),
        appid=appid,
        mchid=mchid,
        sub_mchid=None,
        device_info="",
        transaction_id=transaction_id,
        out_trade_no=out_trade_no,
        openid="oSandboxUnknownPayer",
        trade_type="NATIVE",
        trade_state=wire.TradeState.SUCCESS,
        bank_type="OTHERS",
        currency="CNY",
        settlement_total_fen=amount_fen,
        coupon_fen=0,
        description="未知订单",
        attach="",
        fee_milli_fen=fee_milli_fen(amount_fen),
        fee_rate=FEE_RATE,
        refund_fen=0,
        recharge_coupon_refund_fen=0,
        order_amount_fen=amount_fen,
        requested_refund_fen=0,
    )


def bill_rows(
    day: date,
    bill_type: wire.TradeBillType,
    *,
    paid: Iterable[Order],
    refunds: Iterable[Refund],
    orders: Mapping[str, Order],
    controls: Controls,
    mchid: str,
    appid: str,
) -> list[wire.TradeBillRow]:
    """The rows of one day's bill, with the misbehaviour controls applied.

    ``paid``: orders whose (Beijing) success day is ``day``; ``refunds``: refunds
    initiated that day; ``orders``: every order a refund points at.
    """
    rows: list[tuple[datetime, wire.TradeBillRow]] = []
    if bill_type is not wire.TradeBillType.REFUND:
        for order in paid:
            amount = controls.bill_amounts.get(order.out_trade_no, order.amount_fen)
            row = _payment_row(order, amount, mchid)
            rows.append((row.trade_time, row))
        for extra in controls.bill_extra:
            if extra.bill_date == day:
                row = _unknown_row(
                    extra.out_trade_no,
                    extra.amount_fen,
                    extra.transaction_id,
                    day,
                    mchid=mchid,
                    appid=appid,
                )
                rows.append((row.trade_time, row))
    if bill_type is not wire.TradeBillType.SUCCESS:
        for refund in refunds:
            row = _refund_row(refund, orders[refund.out_trade_no], day, mchid)
            rows.append((row.trade_time, row))
    omitted = set(controls.bill_omit)
    rows.sort(key=lambda item: item[0])
    return [row for _, row in rows if row.out_trade_no not in omitted]


def render_bill(rows: Sequence[wire.TradeBillRow], bill_type: wire.TradeBillType) -> bytes:
    return wire.render_trade_bill(rows, bill_type).encode("utf-8")
