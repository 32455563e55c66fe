"""The payment provider port: what the payment flow may ask of any provider.

One abstract base (``PaymentProvider``) with an adapter per provider
(``providers/wechat.py``, ``providers/alipay.py``); the sandbox provider
process speaks WeChat Pay v3, so the WeChat adapter pointed at its base URL is
the sandbox adapter. The contactless rail (无感支付) is an optional capability,
``ContactlessProvider``, because only WeChat's parking service offers it here.

Every value crossing the port is a frozen Struct in platform terms: money as
``int`` fen, times as aware datetimes, states as the enums below. The provider's
own words are kept beside them (``provider_state``, ``code``) for operators.

Errors: ``ProviderUnavailable`` means "try again later with the SAME ids";
``ProviderRejected`` means the provider answered and retrying will not change
the answer. Both carry the provider's code and message. Notification parsing
raises the wire layer's ``NotificationRejected`` (reply failure, the provider
re-sends) or ``MalformedMessage`` (authentic but unusable: record it).

Idempotency is the provider's: ``out_trade_no`` and ``out_refund_no`` are the
keys, so a timed-out ``create_order``/``refund``/``deduct`` is retried with the
same values and yields one provider order or refund.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Final, NamedTuple

import msgspec

from parking.errors import ParkingError
from parking.payments.wire import NotificationRejected

__all__ = [
    "PAID_STATES",
    "SETTLED_STATES",
    "BillNotReady",
    "ContactlessProvider",
    "Deduction",
    "ForeignNotification",
    "H5Scene",
    "MandateInvitation",
    "MandateState",
    "MandateStatus",
    "NotificationReply",
    "OrderNotFound",
    "OrderState",
    "OrderStatus",
    "OtherEvent",
    "ParkingEntry",
    "PaymentClosed",
    "PaymentFailed",
    "PaymentProvider",
    "PaymentRepaid",
    "PaymentSucceeded",
    "ProviderError",
    "ProviderEvent",
    "ProviderOrder",
    "ProviderRejected",
    "ProviderUnavailable",
    "RefundFailed",
    "RefundState",
    "RefundStatus",
    "RefundSucceeded",
    "StaleNotification",
    "TradeBillFile",
]


# --------------------------------------------------------------------------- errors


class ProviderError(ParkingError):
    """A provider call did not do what was asked. ``code``/``message`` are the provider's."""

    def __init__(
        self, provider: str, code: str, message: str, *, http_status: int | None = None
    ) -> None:
        super().__init__(f"{provider}: {code}: {message}")
        self.provider = provider
        self.code = code
        self.message = message
        self.http_status = http_status


class ProviderUnavailable(ProviderError):
    """Network failure, timeout, 5xx, rate limit, or a response we could not authenticate.

    The request may or may not have taken effect: retry later with the same
    ``out_trade_no``/``out_refund_no`` (the provider de-duplicates on them).
    """


class ProviderRejected(ProviderError):
    """The provider refused the request; the same request will be refused again."""


class OrderNotFound(ProviderRejected):
    """The provider has no such order (or refund).

    For Alipay this is also the answer for a precreated order nobody scanned
    yet: Alipay only creates the trade when the QR code is scanned.
    """


class BillNotReady(ProviderRejected):
    """The day's bill is not generated yet (WeChat: after 10:00 the next day).

    Final for now, not forever: the reconciliation job asks again later.
    """


class StaleNotification(NotificationRejected):
    """Authentic (the signature verified) but outside the replay window.

    Carries the notification id so the receiver can answer success if it
    already processed that id (reliability matrix P5), and failure otherwise.
    """

    def __init__(self, message: str, *, notification_id: str) -> None:
        super().__init__(message)
        self.notification_id = notification_id


class ForeignNotification(NotificationRejected):
    """Authentic, but addressed to another merchant or app: never act on it."""


# --------------------------------------------------------------------------- states


class OrderState(StrEnum):
    """A provider order's state in platform terms (the provider's word is kept too)."""

    #: Created, not paid yet (WeChat NOTPAY/USERPAYING, Alipay WAIT_BUYER_PAY).
    PENDING = "pending"
    #: Contactless deduction accepted, result not known yet (WeChat ACCEPTED).
    ACCEPTED = "accepted"
    #: The money was taken.
    PAID = "paid"
    #: The money was taken, then at least partly refunded.
    REFUNDED = "refunded"
    #: No money was or will be taken (closed, expired, revoked).
    CLOSED = "closed"
    #: The payment failed. For a contactless deduction (PAY_FAIL) the driver may
    #: still repay later (``PaymentRepaid``), so it is not terminal there.
    FAILED = "failed"


#: Money was taken for the order.
PAID_STATES: Final = frozenset({OrderState.PAID, OrderState.REFUNDED})
#: The provider will not change its mind without a new request from us.
SETTLED_STATES: Final = frozenset({OrderState.PAID, OrderState.REFUNDED, OrderState.CLOSED})


class RefundState(StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    #: Closed by the provider; no money moved.
    CLOSED = "closed"
    #: The refund could not reach the payer (e.g. their card was cancelled);
    #: needs a person (WeChat ABNORMAL).
    ABNORMAL = "abnormal"


class MandateState(StrEnum):
    """The driver's standing authorisation for contactless deductions on a plate."""

    ACTIVE = "active"
    PAUSED = "paused"
    NONE = "none"


# --------------------------------------------------------------------------- results


class H5Scene(msgspec.Struct, frozen=True, kw_only=True):
    """An order paid in the payer's phone browser (WeChat H5 / MWEB) rather than by a QR code.

    ``client_ip``: the payer's address, which the provider requires and checks;
    ``return_url``: where the provider sends the browser back after paying or
    cancelling (WeChat's ``redirect_url``).
    """

    client_ip: str
    return_url: str


class ProviderOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A payable order: ``code_url`` is what the payer opens: the QR code's content,
    or for an order with an ``H5Scene`` the provider's cashier page (which returns to
    the scene's ``return_url``)."""

    provider: str
    out_trade_no: str
    amount_fen: int
    code_url: str
    expires_at: datetime | None = None


class OrderStatus(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    out_trade_no: str
    state: OrderState
    #: The provider's own state word (``NOTPAY``, ``TRADE_SUCCESS``, ...).
    provider_state: str
    #: The order amount.
    amount_fen: int
    #: What the payer actually paid; ``None`` until paid.
    paid_fen: int | None = None
    #: The provider's id of the payment (WeChat ``transaction_id``, Alipay ``trade_no``).
    transaction_id: str | None = None
    succeeded_at: datetime | None = None
    attach: str | None = None
    payer_id: str | None = None
    description: str | None = None


class RefundStatus(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    out_trade_no: str
    out_refund_no: str
    state: RefundState
    provider_state: str
    refund_fen: int
    total_fen: int
    refund_id: str | None = None
    created_at: datetime | None = None
    succeeded_at: datetime | None = None


class TradeBillFile(msgspec.Struct, frozen=True, kw_only=True):
    """A day's trade bill exactly as downloaded, already integrity-checked.

    ``kind`` says which wire parser reads ``content``:
    ``wechat-tradebill`` (UTF-8 CSV, ``wire.wechat.parse_trade_bill``) or
    ``alipay-bill-zip`` (``wire.alipay.parse_bill_zip``). ``content`` is empty
    when the provider says there were no trades that day (WeChat
    ``NO_STATEMENT_EXIST``): a positive answer, not a missing bill.
    """

    provider: str
    bill_date: date
    kind: str
    content: bytes


class MandateInvitation(msgspec.Struct, frozen=True, kw_only=True):
    """Where to send the driver to authorise contactless payment for a plate.

    WeChat has no API for this: the driver opens the 微信支付分停车服务 mini
    program. ``url`` is set when the adapter knows a page (the sandbox's);
    ``params`` are what the driver's app passes to the mini program otherwise.
    """

    provider: str
    plate: str
    plate_color: str
    payer_id: str
    url: str | None
    params: dict[str, str]


class MandateStatus(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    plate: str
    plate_color: str
    payer_id: str
    state: MandateState
    provider_state: str
    opened_at: datetime | None = None


class ParkingEntry(msgspec.Struct, frozen=True, kw_only=True):
    """The provider's record of a stay (WeChat 停车入场), needed to deduct at exit."""

    provider: str
    parking_id: str
    out_parking_no: str
    plate: str
    plate_color: str
    #: Whether a deduction for this stay can be accepted at all.
    usable: bool
    #: Why not, in the provider's words (``PAUSE``, ``OVERDUE``, ``OUT_SERVICE``...).
    block_reason: str | None = None


class Deduction(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a contactless deduction request.

    ``accepted``: the car may leave; the result arrives later as
    ``PaymentSucceeded``/``PaymentFailed`` (or by ``query_deduction``). Not
    accepted: the provider refused (no active mandate, blocked plate); the bill
    stays open for an ordinary payment.
    """

    provider: str
    out_trade_no: str
    accepted: bool
    state: OrderState | None = None
    provider_state: str | None = None
    refusal_code: str | None = None
    refusal_message: str | None = None


# --------------------------------------------------------------------------- events


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    provider: str
    #: The provider's notification id: the inbox key. Stable across re-sends.
    notification_id: str
    out_trade_no: str
    #: When the provider says it created the notification.
    notified_at: datetime
    #: The verified, decrypted payload as received, for the inbox's audit trail.
    payload: str = ""


class PaymentSucceeded(_Event, frozen=True, kw_only=True, tag="payment_succeeded"):
    transaction_id: str
    amount_fen: int
    paid_fen: int
    succeeded_at: datetime
    attach: str | None = None
    contactless: bool = False


class PaymentFailed(_Event, frozen=True, kw_only=True, tag="payment_failed"):
    """A contactless deduction failed; the driver may still repay (``PaymentRepaid``)."""

    amount_fen: int
    reason: str
    transaction_id: str | None = None
    contactless: bool = True


class PaymentRepaid(_Event, frozen=True, kw_only=True, tag="payment_repaid"):
    """A failed (or provider-advanced) contactless deduction was repaid by the driver."""

    transaction_id: str
    amount_fen: int
    paid_fen: int
    succeeded_at: datetime | None = None


class PaymentClosed(_Event, frozen=True, kw_only=True, tag="payment_closed"):
    """The provider closed an unpaid order (Alipay ``TRADE_CLOSED`` without a refund)."""

    transaction_id: str | None = None


class RefundSucceeded(_Event, frozen=True, kw_only=True, tag="refund_succeeded"):
    out_refund_no: str
    refund_id: str | None
    #: This refund's amount. ``None`` when the provider does not say (Alipay
    #: reports only the running total, ``refunded_total_fen``).
    refund_fen: int | None
    total_fen: int
    succeeded_at: datetime | None
    refunded_total_fen: int | None = None


class RefundFailed(_Event, frozen=True, kw_only=True, tag="refund_failed"):
    out_refund_no: str
    refund_id: str | None
    state: RefundState
    refund_fen: int | None = None


class OtherEvent(_Event, frozen=True, kw_only=True, tag="other"):
    """An authentic notification of a kind the flow does not handle (yet).

    Returned rather than raised so the inbox records it (and replies success)
    instead of making the provider re-send it for a day.
    """

    event_type: str


ProviderEvent = (
    PaymentSucceeded
    | PaymentFailed
    | PaymentRepaid
    | PaymentClosed
    | RefundSucceeded
    | RefundFailed
    | OtherEvent
)


class NotificationReply(NamedTuple):
    """What the notification endpoint answers: ``status, headers, body = reply``."""

    status: int
    headers: Mapping[str, str]
    body: bytes


# --------------------------------------------------------------------------- the port


class PaymentProvider(abc.ABC):
    """One payment provider. Adapters own their HTTP client and keys; no DB access.

    Every call is safe to retry with the same arguments after
    ``ProviderUnavailable``. Amounts are fen; ``out_trade_no`` and
    ``out_refund_no`` are at most 32 characters of ``[0-9A-Za-z_-*]`` (the
    strictest provider's rule).
    """

    #: The provider's name in the ledger and logs (``wechat``, ``alipay``...).
    name: str
    #: Whether ``create_order`` takes an ``H5Scene`` (a payment in the phone's browser).
    pays_in_browser: bool = False

    @abc.abstractmethod
    async def create_order(
        self,
        out_trade_no: str,
        amount_fen: int,
        description: str,
        notify_url: str,
        *,
        attach: str | None = None,
        expires_at: datetime | None = None,
        h5: H5Scene | None = None,
    ) -> ProviderOrder:
        """Create (or, for the same arguments, return again) a QR-code order, or with
        ``h5`` an order paid in the phone's browser (only if ``pays_in_browser``)."""

    @abc.abstractmethod
    async def query_order(self, out_trade_no: str) -> OrderStatus:
        """The order as the provider sees it now. Raises ``OrderNotFound``."""

    @abc.abstractmethod
    async def close_order(self, out_trade_no: str) -> None:
        """Make an unpaid order unpayable. Raises ``ProviderRejected`` if it is paid."""

    @abc.abstractmethod
    async def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        refund_fen: int,
        total_fen: int,
        reason: str,
        *,
        notify_url: str | None = None,
    ) -> RefundStatus:
        """Request a (partial or full) refund; idempotent on ``out_refund_no``.

        The answer may be PROCESSING; the result arrives as ``RefundSucceeded``
        / ``RefundFailed`` or by ``query_refund``.
        """

    @abc.abstractmethod
    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> RefundStatus:
        """A refund as the provider sees it now. Raises ``OrderNotFound``."""

    @abc.abstractmethod
    async def download_trade_bill(self, bill_date: date) -> TradeBillFile:
        """The trade bill of one Asia/Shanghai day. Raises ``BillNotReady``."""

    @abc.abstractmethod
    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent:
        """Verify, decrypt and decode one notification request. Pure: no I/O.

        ``body`` is the raw request body (it is what the provider signed).
        Raises ``NotificationRejected`` (incl. ``StaleNotification``,
        ``ForeignNotification``): reply failure; or ``MalformedMessage`` /
        ``DecryptionFailed`` (``WireError``): authentic-looking but unusable.
        Amounts and order ownership are the caller's to check.
        """

    @abc.abstractmethod
    def notification_reply(self, ok: bool) -> NotificationReply:
        """The exact reply that tells the provider the notification was (not) taken."""

    def rejection_reply(self) -> NotificationReply:
        """The reply to a notification that is not authentic (bad signature, tampered
        body, another merchant's): 401 with the provider's failure body.

        WeChat Pay takes any 4xx or 5xx as "not taken"; Alipay reads only the
        body ("fail"). Not a 5xx: a forgery is the sender's fault, not ours, and
        a 5xx would page whoever watches the error rate.
        """
        _, headers, body = self.notification_reply(False)
        return NotificationReply(401, headers, body)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters share a client
        """Release resources the adapter owns (not an injected HTTP client)."""


class ContactlessProvider(PaymentProvider):
    """A provider with a contactless rail (无感支付): deduct at exit, result later."""

    @abc.abstractmethod
    def payer_login_url(self, redirect_uri: str, state: str) -> str | None:
        """Where a page sends the browser to learn who the payer is at the provider
        (WeChat 网页授权, ``snsapi_base``): the provider comes back to ``redirect_uri``
        with ``code`` and ``state``. ``None`` when this deployment cannot do it."""

    @abc.abstractmethod
    async def payer_id_of(self, code: str) -> str:
        """The payer's id (openid) for the ``code`` the provider came back with."""

    @abc.abstractmethod
    async def create_mandate(
        self, plate: str, plate_color: str, payer_id: str, *, return_url: str | None = None
    ) -> MandateInvitation:
        """Where the driver authorises contactless payment for the plate (and, from a
        page, the address the authorising page sends the browser back to)."""

    @abc.abstractmethod
    async def mandate_status(self, plate: str, plate_color: str, payer_id: str) -> MandateStatus:
        """Whether the driver's authorisation for the plate is active."""

    @abc.abstractmethod
    async def register_entry(
        self,
        out_parking_no: str,
        plate: str,
        plate_color: str,
        entered_at: datetime,
        lot_name: str,
        notify_url: str,
        *,
        free_seconds: int = 0,
    ) -> ParkingEntry:
        """Tell the provider a car entered; its ``parking_id`` is needed to deduct.

        Idempotent on ``out_parking_no``. May be called at entry (preferred:
        the provider then reports blocking before the exit) or just before the
        deduction.
        """

    @abc.abstractmethod
    async def deduct(
        self,
        out_trade_no: str,
        amount_fen: int,
        plate: str,
        *,
        plate_color: str,
        parking_id: str,
        entered_at: datetime,
        exited_at: datetime,
        lot_name: str,
        description: str,
        notify_url: str,
        attach: str | None = None,
    ) -> Deduction:
        """Ask for a deduction; accepted means the car may leave, the money comes later."""

    @abc.abstractmethod
    async def query_deduction(self, out_trade_no: str) -> OrderStatus:
        """A contactless order as the provider sees it now. Raises ``OrderNotFound``."""
