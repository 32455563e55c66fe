"""The payment flow's records, views and errors (the provider port's are in ``port``).

An *attempt* is one provider order: a QR-code order the driver pays
(``native``) or a contactless deduction (``contactless``). It covers one or
more bills, each with its share. Refund requests, disputes, anomalies and
contactless mandates are the other records of this package.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

from parking.errors import Conflict, InvalidInput, NotFound, ParkingError
from parking.money import Fen


class AttemptKind(StrEnum):
    #: paid by scanning the provider's QR code
    NATIVE = "native"
    #: paid in the phone's browser at the provider's cashier page (WeChat H5)
    H5 = "h5"
    CONTACTLESS = "contactless"

    @property
    def by_payer(self) -> bool:
        """The payer pays it (a QR code or the cashier) before it expires; else the
        provider deducts it (contactless)."""
        return self is not AttemptKind.CONTACTLESS


class AttemptStatus(StrEnum):
    #: the provider's outcome is not known yet
    PENDING = "pending"
    PAID = "paid"
    #: refused by the provider, a failed deduction, or a wrong notified amount
    FAILED = "failed"
    #: never paid before ``expires_at``; closed at the provider by the sweeper
    EXPIRED = "expired"
    #: closed by the provider
    CLOSED = "closed"


#: Statuses that hold no money but may still turn into PAID if the provider
#: says it took the money after all (late notification, repaid deduction).
UNPAID_FINAL: Final = frozenset({AttemptStatus.FAILED, AttemptStatus.EXPIRED, AttemptStatus.CLOSED})


class Payer(msgspec.Struct, frozen=True, kw_only=True):
    """Who pays: a driver's account (the app) or a plate (the lane's pay-now QR, contactless)."""

    account_id: str | None = None
    plate: str | None = None

    def __post_init__(self) -> None:
        if self.account_id is None and self.plate is None:
            raise InvalidInput("a payer is an account id or a plate")

    @property
    def scope(self) -> str:
        """The idempotency scope of this payer's requests."""
        return f"account:{self.account_id}" if self.account_id else f"plate:{self.plate}"


class BillShare(msgspec.Struct, frozen=True, kw_only=True):
    bill_id: str
    amount_fen: Fen


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    kind: AttemptKind
    out_trade_no: str
    amount_fen: Fen
    status: AttemptStatus
    payer_account_id: str | None
    payer_plate: str | None
    idempotency_scope: str | None
    idempotency_key: str | None
    code_url: str | None
    ordered_at: datetime | None
    transaction_id: str | None
    provider_state: str
    failure: str
    recheck: bool
    created_at: datetime
    expires_at: datetime
    settled_at: datetime | None
    updated_at: datetime
    bills: tuple[BillShare, ...] = ()

    @property
    def bill_ids(self) -> list[str]:
        return [share.bill_id for share in self.bills]


class PaymentView(msgspec.Struct, frozen=True, kw_only=True):
    """What the driver's app gets back from ``pay``: the order to show as a QR code."""

    id: str
    provider: str
    kind: AttemptKind
    out_trade_no: str
    amount_fen: Fen
    status: AttemptStatus
    #: what the payer opens: the QR code's content (native), the provider's cashier
    #: page (h5); None until the provider has answered
    code_url: str | None
    bill_ids: list[str]
    created_at: datetime
    expires_at: datetime
    settled_at: datetime | None


def view_of(attempt: Attempt) -> PaymentView:
    return PaymentView(
        id=attempt.id,
        provider=attempt.provider,
        kind=attempt.kind,
        out_trade_no=attempt.out_trade_no,
        amount_fen=attempt.amount_fen,
        status=attempt.status,
        code_url=attempt.code_url,
        bill_ids=attempt.bill_ids,
        created_at=attempt.created_at,
        expires_at=attempt.expires_at,
        settled_at=attempt.settled_at,
    )


# --------------------------------------------------------------------------- idempotency keys


class IdempotencyState(StrEnum):
    IN_FLIGHT = "in_flight"
    DONE = "done"


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    scope: str
    key: str
    endpoint: str
    request_hash: str
    state: IdempotencyState
    response_status: int | None
    response_body: bytes | None
    created_at: datetime
    locked_at: datetime


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes


class Proceed(msgspec.Struct, frozen=True, kw_only=True):
    """The key is ours now (new, or taken over from a crashed request): run the request."""


class Replay(msgspec.Struct, frozen=True, kw_only=True):
    """The key's request completed: answer exactly what it answered."""

    response: StoredResponse


# --------------------------------------------------------------------------- anomalies


class AnomalyKind(StrEnum):
    AMOUNT_MISMATCH = "amount_mismatch"
    UNKNOWN_ORDER = "unknown_order"
    REFUND_BEFORE_PAYMENT = "refund_before_payment"
    UNKNOWN_REFUND = "unknown_refund"
    PAID_AFTER_CLOSE = "paid_after_close"
    DUPLICATE_PAYMENT = "duplicate_payment"
    REFUND_FAILED = "refund_failed"
    MALFORMED_NOTIFICATION = "malformed_notification"
    #: the provider confirmed a refund of ours that its bill can no longer take
    REFUND_UNAPPLIED = "refund_unapplied"


class AnomalyStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class AnomalyAction(StrEnum):
    NONE = "none"
    #: the money was applied to the bills it was for
    APPLIED = "applied"
    #: the money is being returned automatically (a refund request exists)
    AUTO_REFUND = "auto_refund"


class NewAnomaly(msgspec.Struct, frozen=True, kw_only=True):
    kind: AnomalyKind
    #: with ``kind``, what makes two reports the same anomaly (the order, the refund)
    dedup_key: str
    provider: str
    out_trade_no: str | None = None
    out_refund_no: str | None = None
    notification_id: str | None = None
    attempt_id: str | None = None
    bill_id: str | None = None
    amount_fen: Fen | None = None
    expected_fen: Fen | None = None
    action: AnomalyAction = AnomalyAction.NONE
    detail: str = ""
    #: recorded already resolved (informational: the flow handled it)
    resolved: bool = False


class Anomaly(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: AnomalyKind
    status: AnomalyStatus
    provider: str
    out_trade_no: str | None
    out_refund_no: str | None
    notification_id: str | None
    attempt_id: str | None
    bill_id: str | None
    amount_fen: Fen | None
    expected_fen: Fen | None
    action: AnomalyAction
    detail: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    remark: str


# --------------------------------------------------------------------------- refunds, disputes


class RefundStatus(StrEnum):
    REQUESTED = "requested"
    #: decided; sent (or to be sent) to the provider
    APPROVED = "approved"
    REJECTED = "rejected"
    REFUNDED = "refunded"
    FAILED = "failed"


class RefundRequest(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    bill_id: str | None
    #: None for a refund of money held in suspense for an order we never made
    attempt_id: str | None
    provider: str
    out_trade_no: str
    out_refund_no: str
    amount_fen: Fen
    status: RefundStatus
    reason: str
    requested_by: str
    decided_by: str | None
    remark: str
    dispute_id: str | None
    anomaly_id: str | None
    provider_refund_id: str | None
    submitted_at: datetime | None
    last_error: str
    created_at: datetime
    decided_at: datetime | None
    refunded_at: datetime | None
    updated_at: datetime


class AnomalyRefund(msgspec.Struct, frozen=True, kw_only=True):
    """Finance's refund of money an anomaly holds in suspense, and where it stands."""

    anomaly_id: str
    refund_request_id: str
    out_trade_no: str
    out_refund_no: str
    amount_fen: Fen
    status: RefundStatus
    anomaly_status: AnomalyStatus


class DisputeStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"


class Dispute(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    bill_id: str
    reason: str
    opened_by: str
    opened_at: datetime
    status: DisputeStatus
    decided_by: str | None
    decided_at: datetime | None
    remark: str
    refund_fen: Fen | None


class DisputeView(msgspec.Struct, frozen=True, kw_only=True):
    """A dispute with the bill's amount and, once approved, its refund's progress."""

    id: str
    bill_id: str
    bill_amount_fen: Fen
    bill_status: str
    reason: str
    opened_by: str
    opened_at: datetime
    status: DisputeStatus
    decided_by: str | None
    decided_at: datetime | None
    remark: str
    refund_fen: Fen | None
    refund_status: RefundStatus | None
    #: True when the upheld dispute wrote off an unpaid bill instead of refunding
    written_off: bool = False


# --------------------------------------------------------------------------- contactless


class MandateState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REVOKED = "revoked"


class Mandate(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    plate: str
    plate_color: str
    account_id: str | None
    payer_id: str
    state: MandateState
    created_at: datetime
    updated_at: datetime


class DeductionStatus(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Deduction(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    bill_id: str
    mandate_id: str
    attempt_id: str
    out_parking_no: str
    parking_id: str | None
    status: DeductionStatus
    refusal_code: str | None
    refusal_message: str | None
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------- sweeper


class SweepReport(msgspec.Struct, kw_only=True):
    """What one sweep did; logged and printed by ``parking payments sweep``."""

    queried: int = 0
    settled: int = 0
    expired: int = 0
    failed: int = 0
    still_pending: int = 0
    refunds_completed: int = 0
    refunds_pending: int = 0
    keys_pruned: int = 0
    errors: int = 0


# --------------------------------------------------------------------------- errors


class PaymentError(ParkingError):
    """Base of the payment flow's errors."""


class UnknownProvider(PaymentError, InvalidInput):
    def __init__(self, provider: str) -> None:
        self.provider = provider
        super().__init__(f"no payment provider {provider!r} is configured")


class NotContactless(PaymentError, InvalidInput):
    """The provider has no contactless rail."""


class PaymentInProgress(PaymentError, Conflict):
    """A bill is already being paid by an attempt that has not expired."""

    def __init__(self, bill_id: str, attempt_id: str) -> None:
        self.bill_id = bill_id
        self.attempt_id = attempt_id
        super().__init__(
            f"bill {bill_id} is being paid by {attempt_id}; pay that order or wait until it expires"
        )


class IdempotencyKeyInFlight(PaymentError, Conflict):
    """A request with this key is still being processed (Stripe answers 409)."""


class IdempotencyKeyReused(PaymentError, InvalidInput):
    """The key was used before with another request body (Stripe answers 422 here too)."""


class UnknownAttempt(PaymentError, NotFound):
    def __init__(self, attempt_id: str) -> None:
        self.attempt_id = attempt_id
        super().__init__(f"no payment {attempt_id!r}")


class UnknownDispute(PaymentError, NotFound):
    def __init__(self, dispute_id: str) -> None:
        self.dispute_id = dispute_id
        super().__init__(f"no dispute {dispute_id!r}")


class DisputeClosed(PaymentError, Conflict):
    """The dispute was already decided."""


class UnknownAnomaly(PaymentError, NotFound):
    def __init__(self, anomaly_id: str) -> None:
        self.anomaly_id = anomaly_id
        super().__init__(f"no payment anomaly {anomaly_id!r}")


class NothingToRefund(PaymentError, Conflict):
    """The anomaly holds no money in suspense that is not already being refunded."""


class MandateNotAuthorised(PaymentError, Conflict):
    """The provider does not show an active authorisation for the plate and payer."""
