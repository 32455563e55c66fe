"""The bill state machine, pure: which status each action leads to, or why it cannot.

Each action returns the status to move to, or None when the bill is already
where the action would put it (a retried notification, a double click): the
caller then changes nothing. Anything else raises a named error.

Decisions behind the table:
- open -> paid directly: a contactless deduction (无感支付) pays without a
  payment attempt, and a provider's success notification may arrive after the
  attempt already expired (paying -> open). Money the provider took is never
  refused while the bill is owed.
- paying -> disputed and paying -> written_off are refused: the outcome of the
  payment in flight must be known first, or the bill could be paid and
  forgiven at once.
- A dispute is upheld by refunding (paid bill) or writing off (unpaid bill)
  straight from disputed; it is rejected by ``resolve_dispute``, which returns
  the bill to the status its money says (open, paid or refunded).
- A payment arriving for a disputed unpaid bill is recorded and the dispute
  stays open (disputed -> disputed, now paid): the money is real, the
  argument about it is not over.
- A payment arriving for a written-off bill is recorded (written_off -> paid);
  the service first reverses the write-off in the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from parking.bills.model import (
    AmountMismatch,
    Bill,
    BillAlreadyPaid,
    BillStatus,
    IllegalBillTransition,
    InvalidAmount,
    PlateNotMovable,
    RefundExceedsAmount,
    RefundProviderMismatch,
)
from parking.money import Fen

S = BillStatus

TRANSITIONS: Mapping[BillStatus, frozenset[BillStatus]] = {
    S.OPEN: frozenset({S.PAYING, S.PAID, S.DISPUTED, S.WRITTEN_OFF}),
    S.PAYING: frozenset({S.OPEN, S.PAID}),
    S.PAID: frozenset({S.REFUNDED, S.DISPUTED}),
    # refunded -> refunded: a further partial refund, up to the amount
    S.REFUNDED: frozenset({S.REFUNDED, S.DISPUTED}),
    # disputed -> disputed: paid while the dispute goes on
    S.DISPUTED: frozenset({S.OPEN, S.PAID, S.REFUNDED, S.WRITTEN_OFF, S.DISPUTED}),
    S.WRITTEN_OFF: frozenset({S.PAID}),
}


def check_transition(bill: Bill, to: BillStatus, action: str) -> BillStatus:
    if to not in TRANSITIONS[bill.status]:
        raise IllegalBillTransition(bill.id, bill.status, action)
    return to


def begin_payment(bill: Bill) -> BillStatus | None:
    """A payment attempt started (the driver opened the cashier, a deduction was requested)."""
    if bill.status is S.PAYING:
        return None
    return check_transition(bill, S.PAYING, "start a payment")


def payment_failed(bill: Bill) -> BillStatus | None:
    """The attempt failed, was closed or expired; the bill is owed again."""
    if bill.status is S.OPEN:
        return None
    if bill.status is not S.PAYING:
        # disputed -> open is in the table for a rejected dispute, not for this
        raise IllegalBillTransition(bill.id, bill.status, "fail a payment", "none is in flight")
    return check_transition(bill, S.OPEN, "fail a payment")


def pay(bill: Bill, *, amount_fen: Fen, provider: str, payment_ref: str) -> BillStatus | None:
    """A provider confirmed a payment of the bill.

    The amount must be the bill's (a mismatch is an anomaly for the payments
    layer, never a partial payment). The same payment again is a no-op; a
    different payment of a paid bill raises BillAlreadyPaid.
    """
    if amount_fen != bill.amount_fen:
        raise AmountMismatch(bill.id, expected_fen=bill.amount_fen, got_fen=amount_fen)
    if bill.paid_at is not None:
        if (bill.provider, bill.payment_ref) == (provider, payment_ref):
            return None
        raise BillAlreadyPaid(bill.id, provider=provider, payment_ref=payment_ref)
    to = S.DISPUTED if bill.status is S.DISPUTED else S.PAID
    return check_transition(bill, to, "record a payment")


def refund(bill: Bill, *, amount_fen: Fen, provider: str) -> BillStatus:
    """Give back part or all of a paid bill, through the provider that took the money."""
    if amount_fen <= 0:
        raise InvalidAmount(f"a refund must be > 0 fen, got {amount_fen}")
    if bill.paid_at is None:
        raise IllegalBillTransition(bill.id, bill.status, "refund", "it was never paid")
    check_transition(bill, S.REFUNDED, "refund")
    if provider != bill.provider:
        raise RefundProviderMismatch(
            f"bill {bill.id} was paid through {bill.provider}; cannot refund through {provider}"
        )
    if amount_fen > bill.refundable_fen:
        raise RefundExceedsAmount(
            bill.id, refundable_fen=bill.refundable_fen, requested_fen=amount_fen
        )
    return S.REFUNDED


def write_off(bill: Bill) -> BillStatus | None:
    """Give up an unpaid bill."""
    if bill.status is S.WRITTEN_OFF:
        return None
    if bill.paid_at is not None:
        raise IllegalBillTransition(bill.id, bill.status, "write off", "it is paid")
    return check_transition(bill, S.WRITTEN_OFF, "write off")


def move_plate(bill: Bill) -> None:
    """An operator fixed the session's misread plate: may this bill follow it?

    An unpaid bill may (open, disputed or written off: the right plate owes what
    the wrong one was billed). One with a payment in flight may not until the
    payment's outcome is known. A paid bill is not moved: someone paid this stay
    for the wrong plate, and only a refund can give that money back (a
    contactless deduction is refunded and re-billed by the caller instead).
    """
    if bill.status is S.PAYING:
        raise PlateNotMovable(
            f"bill {bill.id} has a payment in flight; fix the plate once it has ended"
        )
    if bill.paid_at is not None:
        raise PlateNotMovable(
            f"bill {bill.id} was paid ({bill.provider} {bill.payment_ref}) for the plate as "
            "read; refund it through a dispute first: a paid bill never moves to another plate"
        )


def dispute(bill: Bill) -> BillStatus | None:
    """The driver contests the bill."""
    if bill.status is S.DISPUTED:
        return None
    if bill.paid_at is not None and bill.refundable_fen == 0:
        raise IllegalBillTransition(bill.id, bill.status, "dispute", "it was refunded in full")
    return check_transition(bill, S.DISPUTED, "dispute")


def resolve_dispute(bill: Bill) -> BillStatus:
    """The dispute is rejected: back to the status the bill's money says."""
    if bill.status is not S.DISPUTED:
        raise IllegalBillTransition(bill.id, bill.status, "resolve a dispute", "none is open")
    if bill.paid_at is None:
        to = S.OPEN
    elif bill.refunded_fen == 0:
        to = S.PAID
    else:
        to = S.REFUNDED
    return check_transition(bill, to, "resolve a dispute")


# ------------------------------------------------------------------ paying in the lot


@dataclass(frozen=True, slots=True)
class Prepayment:
    """A prepay bill as the exit sees it: the fee it billed, when it was quoted and paid.

    A prepay bill is an offer until the exit: ``offer`` marks one that is unpaid
    and that nobody is paying (status open). An offer counts for nothing at the
    exit (the exit bills the stay less what was paid or is being paid, and the
    offer lapses), and never opens the window. An unpaid bill that is not an
    offer (a payment in flight, a dispute) counts as billed, as a paid one does.
    """

    amount_fen: Fen
    quoted_at: datetime
    paid_at: datetime | None
    offer: bool = False

    @classmethod
    def of(cls, bill: Bill) -> Prepayment:
        offer = bill.paid_at is None and bill.status is S.OPEN
        return cls(bill.amount_fen, bill.closed_at, bill.paid_at, offer)


def live(bills: Sequence[Bill]) -> list[Prepayment]:
    """A session's prepay bills that still stand: a written-off one (a lapsed offer, an
    upheld dispute) billed nothing."""
    return [Prepayment.of(b) for b in bills if b.status is not S.WRITTEN_OFF]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a stay stands at ``at`` after paying in the lot (场内缴费)."""

    #: what the standing prepay bills billed together, offers included (a new
    #: offer bills only the rest of the stay so far)
    billed_fen: Fen
    #: the driver leaves free until then; None when no payment opens a window
    leave_by: datetime | None
    #: of which paid or being paid: what the exit subtracts from the stay
    settled_fen: Fen

    def due(self, total_fen: Fen, exit_at: datetime) -> Fen:
        """What a stay costing ``total_fen`` in all still owes when it leaves at ``exit_at``."""
        if total_fen < 0:
            raise InvalidAmount(f"a fee cannot be negative, got {total_fen} fen")
        if self.leave_by is not None and exit_at <= self.leave_by:
            return 0
        return max(0, total_fen - self.settled_fen)


def standing(prepayments: Sequence[Prepayment], *, at: datetime, window: timedelta) -> Standing:
    """What the prepayments made up to ``at`` are worth.

    The newest prepayment opens the exit window when every prepayment was paid
    by ``at`` and the newest was paid within the window of its quote: the
    window then runs from its payment. A quote paid later than that covers the
    stay up to the quote only (no window), so an old quote cannot buy a free
    exit hours later. Payments made after ``at`` count as unpaid, which keeps
    the answer for a past exit the same however late a payment arrives. An
    offer (see `Prepayment`) blocks the window and subtracts nothing.
    """
    billed = sum(p.amount_fen for p in prepayments)
    settled = sum(p.amount_fen for p in prepayments if not p.offer)
    if not prepayments:
        return Standing(billed, None, settled)
    newest = max(prepayments, key=lambda p: p.quoted_at)
    all_paid = all(p.paid_at is not None and p.paid_at <= at for p in prepayments)
    if not all_paid or newest.paid_at is None or newest.paid_at - newest.quoted_at > window:
        return Standing(billed, None, settled)
    return Standing(billed, newest.paid_at + window, settled)


def due_at_exit(
    total_fen: Fen, prepayments: Sequence[Prepayment], *, exit_at: datetime, window: timedelta
) -> Fen:
    """The stay bill of a session leaving at ``exit_at`` whose whole stay costs ``total_fen``.

    Nothing within the window of a paid prepayment (the lot keeps any rise of
    the fee inside the window); after it billing resumes: the whole stay's fee
    less what the prepayments billed, never below zero.
    """
    return standing(prepayments, at=exit_at, window=window).due(total_fen, exit_at)
