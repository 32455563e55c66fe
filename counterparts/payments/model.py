"""The sandbox provider's Structs: its records, the v3 request bodies, its controls.

Request bodies forbid unknown fields on purpose, stricter than WeChat: the
sandbox exists to catch our adapter sending something the docs do not name.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

import msgspec

from parking.payments.wire.wechat import RefundStatus, TradeState

_Aware = Annotated[datetime, msgspec.Meta(tz=True)]
_PositiveFen = Annotated[int, msgspec.Meta(ge=1)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_TradeNo = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z_\-*]{6,32}$")]


class ApiError(Exception):
    """An answer in WeChat's error shape: ``{"code": ..., "message": ...}`` with a status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- records


class OrderKind(StrEnum):
    NATIVE = "native"
    #: Paid in the phone's browser (WeChat H5, trade type MWEB): the cashier page.
    H5 = "h5"
    #: A parking-service (contactless) deduction.
    PARKING = "parking"


class DeductionOutcome(StrEnum):
    """What happens to a plate's accepted deductions when they settle."""

    SUCCESS = "success"
    FAIL = "fail"
    #: Stays ACCEPTED until ``/sandbox/orders/{no}/pay`` or ``/fail``.
    MANUAL = "manual"


class ParkingInfo(msgspec.Struct, frozen=True, kw_only=True):
    parking_id: str
    plate_number: str
    plate_color: str
    start_time: _Aware
    end_time: _Aware
    parking_name: str
    charging_duration: int
    device_id: str | None = None


class Order(msgspec.Struct, frozen=True, kw_only=True):
    out_trade_no: str
    kind: OrderKind
    appid: str
    mchid: str
    description: str
    amount_fen: int
    notify_url: str
    created_at: datetime
    state: TradeState
    #: Hash of the creating request: a repeat with other parameters is refused.
    fingerprint: str
    attach: str | None = None
    expires_at: datetime | None = None
    code_url: str | None = None
    transaction_id: str | None = None
    success_time: datetime | None = None
    payer_openid: str | None = None
    state_desc: str | None = None
    user_repaid: str | None = None
    parking: ParkingInfo | None = None


class Refund(msgspec.Struct, frozen=True, kw_only=True):
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    transaction_id: str
    refund_fen: int
    total_fen: int
    status: RefundStatus
    created_at: datetime
    fingerprint: str
    reason: str | None = None
    notify_url: str | None = None
    success_time: datetime | None = None


class Mandate(msgspec.Struct, frozen=True, kw_only=True):
    """A driver's standing authorisation (车牌服务开通) for one plate."""

    openid: str
    plate_number: str
    plate_color: str
    #: WeChat's ``service_state``: NORMAL, PAUSE or OUT_SERVICE.
    state: str
    opened_at: datetime
    outcome: DeductionOutcome = DeductionOutcome.SUCCESS


class Parking(msgspec.Struct, frozen=True, kw_only=True):
    """A parking-service entry (停车入场); deductions name its ``id``."""

    id: str
    out_parking_no: str
    plate_number: str
    plate_color: str
    start_time: datetime
    parking_name: str
    free_duration: int
    notify_url: str
    state: str
    fingerprint: str
    block_reason: str | None = None


class DeliveryState(StrEnum):
    PENDING = "pending"
    #: Sent and being waited on; never picked up twice.
    IN_FLIGHT = "in_flight"
    #: Kept back by the ``hold`` control until a ``release``.
    HELD = "held"
    #: Never sent (the ``drop`` control): the merchant must query (P7).
    DROPPED = "dropped"
    DELIVERED = "delivered"
    #: The retry schedule ran out.
    FAILED = "failed"


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One notification and where its delivery stands."""

    id: str
    seq: int
    out_trade_no: str
    event_type: str
    notify_url: str
    body: bytes
    state: DeliveryState
    #: Failed attempts so far: indexes the retry schedule.
    failures: int
    #: Extra copies still to send after a success (duplicates).
    copies_left: int
    #: Unix seconds (real time) of the next attempt.
    next_attempt_at: float
    created_at: datetime


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    notification_id: str
    at: float
    #: HTTP status, or 0 when no response came (refused, timed out).
    status: int
    error: str = ""
    duplicate: bool = False


# --------------------------------------------------------------------------- controls


class ExtraBillRow(msgspec.Struct, frozen=True, kw_only=True):
    out_trade_no: str
    amount_fen: int
    bill_date: date
    transaction_id: str


class Controls(msgspec.Struct, frozen=True, kw_only=True):
    """How the sandbox misbehaves right now (persisted; ``reset`` restores this default)."""

    mode: Literal["deliver", "drop", "hold"] = "deliver"
    #: Seconds before the first delivery attempt of a new notification.
    delay_seconds: float = 0.0
    #: Extra copies of every new notification, sent after it is acknowledged.
    duplicates: int = 0
    #: Chance of one extra copy; ``None``: the process default (``--duplicate-rate``).
    duplicate_rate: float | None = None
    #: Every v3 call answers 500 SYSTEM_ERROR.
    outage: bool = False
    bill_amounts: dict[str, int] = msgspec.field(default_factory=dict)
    bill_omit: list[str] = msgspec.field(default_factory=list)
    bill_extra: list[ExtraBillRow] = msgspec.field(default_factory=list)
    #: How refunds settle: SUCCESS, or ABNORMAL / CLOSED (REFUND.ABNORMAL / .CLOSED notified).
    refund_outcome: Literal["success", "abnormal", "closed"] = "success"


class _Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class NotificationsCommand(
    _Command, frozen=True, kw_only=True, tag_field="action", tag="notifications"
):
    """``deliver`` normally, ``drop`` (record, never send) or ``hold`` (until ``release``)."""

    mode: Literal["deliver", "drop", "hold"] = "deliver"
    delay_seconds: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    duplicates: Annotated[int, msgspec.Meta(ge=0, le=20)] = 0
    duplicate_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class ReleaseCommand(_Command, frozen=True, kw_only=True, tag_field="action", tag="release"):
    """Send held notifications, oldest first (``fifo``) or newest first (``reverse``)."""

    order: Literal["fifo", "reverse"] = "reverse"


class OutageCommand(_Command, frozen=True, kw_only=True, tag_field="action", tag="outage"):
    enabled: bool


class BillWrongAmountCommand(
    _Command, frozen=True, kw_only=True, tag_field="action", tag="bill_wrong_amount"
):
    out_trade_no: str
    amount_fen: Annotated[int, msgspec.Meta(ge=0)]


class BillOmitCommand(_Command, frozen=True, kw_only=True, tag_field="action", tag="bill_omit"):
    out_trade_no: str


class BillAddUnknownCommand(
    _Command, frozen=True, kw_only=True, tag_field="action", tag="bill_add_unknown"
):
    out_trade_no: str
    amount_fen: _PositiveFen
    bill_date: date


class RefundsCommand(_Command, frozen=True, kw_only=True, tag_field="action", tag="refunds"):
    """How refunds settling from now on end (a refund the bank could not pay back: ABNORMAL)."""

    outcome: Literal["success", "abnormal", "closed"] = "success"


class ResetCommand(_Command, frozen=True, kw_only=True, tag_field="action", tag="reset"):
    """Back to the default controls; orders and notifications are kept."""


ControlCommand = (
    NotificationsCommand
    | ReleaseCommand
    | OutageCommand
    | BillWrongAmountCommand
    | BillOmitCommand
    | BillAddUnknownCommand
    | RefundsCommand
    | ResetCommand
)


class PayCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /sandbox/orders/{no}/pay`` (the driver pays / the deduction succeeds)."""

    openid: str | None = None
    #: Put this total in the notification instead of the order's (P4 drills).
    notify_amount_fen: int | None = None


class FailCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str = "用户余额不足"


class MandateCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /sandbox/mandates``: the driver (de)authorises contactless payment."""

    openid: _Id
    plate_number: _Id
    plate_color: str = "BLUE"
    state: Literal["NORMAL", "PAUSE", "OUT_SERVICE"] = "NORMAL"
    outcome: DeductionOutcome = DeductionOutcome.SUCCESS


class ClockCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Move the sandbox's business clock: by ``advance_seconds`` or ``to`` an instant.

    Only business time moves (order, payment and refund times, bill days and
    bill readiness). Signature timestamps stay real, or the merchant would
    rightly refuse every response as stale.
    """

    advance_seconds: Annotated[float, msgspec.Meta(ge=0)] | None = None
    to: _Aware | None = None


# --------------------------------------------------------------------------- v3 requests


class AmountIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    total: _PositiveFen
    currency: Literal["CNY"] = "CNY"


class NativeOrderRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    appid: _Id
    mchid: _Id
    description: Annotated[str, msgspec.Meta(min_length=1, max_length=127)]
    out_trade_no: _TradeNo
    notify_url: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    amount: AmountIn
    attach: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    time_expire: _Aware | None = None
    goods_tag: str | None = None


class H5Info(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Literal["Wap", "iOS", "Android"]
    app_name: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    app_url: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    bundle_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    package_name: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class SceneInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the payer is: the H5 API requires the payer's IP and the H5 scene."""

    payer_client_ip: Annotated[str, msgspec.Meta(min_length=1, max_length=45)]
    h5_info: H5Info
    device_id: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class H5OrderRequest(NativeOrderRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v3/pay/transactions/h5``: a native order's fields and the payer's scene."""

    scene_info: SceneInfo


class CloseRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mchid: _Id


class RefundAmountIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    refund: _PositiveFen
    total: _PositiveFen
    currency: Literal["CNY"] = "CNY"


class RefundRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    out_refund_no: _TradeNo
    amount: RefundAmountIn
    out_trade_no: _TradeNo | None = None
    transaction_id: str | None = None
    reason: Annotated[str, msgspec.Meta(max_length=80)] | None = None
    notify_url: str | None = None
    funds_account: str | None = None


class ParkingEntryRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    out_parking_no: _TradeNo
    plate_number: _Id
    plate_color: str
    notify_url: str
    start_time: _Aware
    parking_name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    free_duration: Annotated[int, msgspec.Meta(ge=0)]
    sub_mchid: str | None = None


class ParkingInfoIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    parking_id: _Id
    plate_number: _Id
    plate_color: str
    start_time: _Aware
    end_time: _Aware
    parking_name: str
    charging_duration: Annotated[int, msgspec.Meta(ge=0)]
    device_id: str | None = None


class DeductRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    appid: _Id
    description: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    out_trade_no: _TradeNo
    trade_scene: Literal["PARKING"]
    notify_url: str
    amount: AmountIn
    parking_info: ParkingInfoIn
    attach: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    goods_tag: str | None = None
    profit_sharing: Literal["Y", "N"] | None = None
