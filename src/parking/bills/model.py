"""Bills: what a parking session cost, and how that money was settled."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec

from parking.errors import ParkingError
from parking.money import Fen


class BillStatus(StrEnum):
    OPEN = "open"
    #: a payment was started and its outcome is not known yet
    PAYING = "paying"
    PAID = "paid"
    #: partly or fully refunded; ``refunded_fen`` tells which
    REFUNDED = "refunded"
    #: the receivable was given up (uncollectable, or a dispute upheld on an unpaid bill)
    WRITTEN_OFF = "written_off"
    DISPUTED = "disputed"


#: Statuses in which a bill is owed while it has no payment (``paid_at`` is None).
class BillKind(StrEnum):
    """What a bill is for: the stay, billed at the close (all of it, or what is
    left after prepayments), or a payment in the lot before the exit."""

    STAY = "stay"
    PREPAY = "prepay"
    #: the stay billed again to the right plate after its stay bill went to a
    #: misread plate and was paid by that plate's contactless mandate (refunded)
    REBILL = "rebill"


OWING = frozenset({BillStatus.OPEN, BillStatus.PAYING, BillStatus.DISPUTED})
#: Statuses in which the driver owes nothing and no payment is in flight. None
#: is strictly terminal, because money can still move: a paid bill can be
#: refunded, a written-off one paid late. A bill refunded in full is final.
SETTLED = frozenset({BillStatus.PAID, BillStatus.REFUNDED, BillStatus.WRITTEN_OFF})


class Bill(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    session_id: str
    lot_id: str
    plate: str | None
    account_id: str | None
    amount_fen: Fen
    refunded_fen: Fen
    tariff_id: str
    tariff_version: int
    #: the tariff engine's fee breakdown, JSON as PostgreSQL normalised it
    quote: msgspec.Raw
    status: BillStatus
    #: the payment that settled the bill (all three set together, once)
    provider: str | None
    payment_ref: str | None
    paid_at: datetime | None
    closed_at: datetime
    created_at: datetime
    updated_at: datetime
    kind: BillKind = BillKind.STAY

    @property
    def is_paid(self) -> bool:
        return self.paid_at is not None

    @property
    def outstanding_fen(self) -> Fen:
        """What the driver still owes (the bill's part of the ledger's receivables)."""
        return self.amount_fen if self.status in OWING and self.paid_at is None else 0

    @property
    def refundable_fen(self) -> Fen:
        return self.amount_fen - self.refunded_fen if self.paid_at is not None else 0


class BillEvent(msgspec.Struct, frozen=True, kw_only=True):
    bill_id: str
    at: datetime
    from_status: BillStatus | None
    to_status: BillStatus
    actor: str
    remark: str
    amount_fen: Fen | None
    ledger_transaction_id: str | None


class ReceivablesCheck(msgspec.Struct, frozen=True, kw_only=True):
    #: the debit balance of the ledger's receivables account
    ledger_fen: Fen
    #: what the owed bills (OWING and unpaid) add up to
    bills_fen: Fen

    @property
    def equal(self) -> bool:
        return self.ledger_fen == self.bills_fen


class BillError(ParkingError):
    """Base of the bill errors."""


class UnknownBill(BillError):
    def __init__(self, bill_id: str) -> None:
        self.bill_id = bill_id
        super().__init__(f"no bill {bill_id!r}")


class IllegalBillTransition(BillError):
    def __init__(
        self, bill_id: str, from_status: BillStatus, action: str, reason: str = ""
    ) -> None:
        self.bill_id = bill_id
        self.from_status = from_status
        self.action = action
        detail = f": {reason}" if reason else ""
        super().__init__(f"bill {bill_id} is {from_status.value}; cannot {action}{detail}")


class InvalidAmount(BillError):
    """An amount that makes no sense for the operation (negative, zero refund)."""


class AmountMismatch(BillError):
    def __init__(self, bill_id: str, *, expected_fen: Fen, got_fen: Fen) -> None:
        self.bill_id = bill_id
        self.expected_fen = expected_fen
        self.got_fen = got_fen
        super().__init__(f"bill {bill_id} is {expected_fen} fen; a payment of {got_fen} fen")


class BillAlreadyPaid(BillError):
    """A second, different payment for a paid bill: the money must be returned, not applied."""

    def __init__(self, bill_id: str, *, provider: str, payment_ref: str) -> None:
        self.bill_id = bill_id
        self.provider = provider
        self.payment_ref = payment_ref
        super().__init__(
            f"bill {bill_id} is already paid by another payment; "
            f"{provider} {payment_ref} is not applied"
        )


class RefundExceedsAmount(BillError):
    def __init__(self, bill_id: str, *, refundable_fen: Fen, requested_fen: Fen) -> None:
        self.bill_id = bill_id
        self.refundable_fen = refundable_fen
        self.requested_fen = requested_fen
        super().__init__(
            f"bill {bill_id}: refund of {requested_fen} fen exceeds the {refundable_fen} fen "
            "left to refund"
        )


class RefundProviderMismatch(BillError):
    """Money goes back through the provider that took it."""


class RefundConflict(BillError):
    """A refund reference already used for another bill or amount."""


class PlateNotMovable(BillError):
    """A bill of a session whose plate an operator fixes cannot follow the plate as it is
    (a payment in flight, or a person paid it): the reason says what to do first."""


class BillConflict(BillError):
    """The session already has a bill with a different lot, amount or tariff."""
