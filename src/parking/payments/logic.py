"""Pure decisions of the payment flow: ``(state, input, now) -> decision``. No I/O.

Decisions written down here:

- An attempt's ``out_trade_no`` is derived from its id (``CB`` + the ULID, 28
  characters), so it is fixed the moment the row exists and a retry after a
  crash or a timeout asks the provider for the same order.
- Money is compared by the order total (WeChat ``amount.total``), not what the
  payer paid (``payer_total`` is lower when a coupon paid part of it, and the
  merchant still receives the total).
- A notified amount that differs from the attempt's is never applied, not
  even in part: the attempt fails, its bills are owed again, and the anomaly
  waits for finance (a real mismatch means a bug or fraud somewhere, and a
  person must look before money moves).
- Money taken for bills that another payment already paid is returned
  automatically (a refund of the duplicate part, through the provider that took
  it): the driver should never have to ask for their own money back. It does
  not touch the ledger: the platform never held it as revenue, and the
  provider's payment and refund of it cancel out in the provider's bill, where
  reconciliation finds them under the same out_trade_no beside the anomaly.
- Money taken for an attempt we had expired, closed or failed is applied to
  its bills while they are owed (a bill's money is never refused), and the
  anomaly is recorded already resolved, for the audit trail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Final

import msgspec

from parking.bills.model import Bill, BillStatus
from parking.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotencyRecord,
    IdempotencyState,
    Payer,
    Proceed,
    Replay,
    StoredResponse,
)
from parking.payments.port import OrderState, OrderStatus

#: How long a driver has to pay a QR-code order (WeChat's time_expire). Long
#: enough to find the phone and scan; short enough that an abandoned order
#: stops blocking the bill soon.
ORDER_TTL: Final = timedelta(minutes=15)
#: A contactless deduction's result normally arrives within seconds; past this
#: the sweeper asks for it. It never expires on our side: only the provider's
#: answer (paid or failed) ends it.
DEDUCTION_QUERY_AFTER: Final = timedelta(minutes=10)
#: A request holding an idempotency key longer than this is taken to have
#: crashed; a retry takes the key over. Above the provider timeout (10 s) plus
#: the two short database transactions of ``pay``, with a wide margin.
IDEMPOTENCY_LEASE: Final = timedelta(seconds=60)
#: Bills one payment may cover: a driver clearing their arrears in one scan.
MAX_BILLS_PER_PAYMENT: Final = 20
#: Completed idempotency keys are kept this long (Stripe prunes after 24 h). A
#: retry after that still finds its payment: ``pay`` is idempotent on the key
#: through the attempt row, which is never pruned.
IDEMPOTENCY_KEY_TTL: Final = timedelta(hours=24)


def out_trade_no(attempt_id: str) -> str:
    """``pa-01J...`` -> ``CB01J...``: 28 characters of ``[0-9A-Z]``, within every provider."""
    return "CB" + attempt_id.removeprefix("pa-")


def out_refund_no(refund_request_id: str) -> str:
    return "RF" + refund_request_id.removeprefix("rr-")


def out_parking_no(deduction_id: str) -> str:
    return "PK" + deduction_id.removeprefix("cd-")


def notify_url(base_url: str, provider: str) -> str:
    """Where ``provider`` posts its notifications: the public notification route."""
    return f"{base_url.rstrip('/')}/v1/payments/notify/{provider}"


def description(bills: Sequence[Bill]) -> str:
    """The order's 商品描述 (WeChat: at most 127 characters)."""
    if len(bills) == 1:
        return f"停车费 {bills[0].plate or ''}".strip()
    return f"停车费 {len(bills)} 笔"


# --------------------------------------------------------------------------- paying


def owns(bill: Bill, payer: Payer) -> bool:
    """A driver pays their own bills; anyone who names a plate pays that plate's bills
    (先离后缴 for a friend's car: knowing the plate is the whole requirement)."""
    if payer.account_id is not None and bill.account_id == payer.account_id:
        return True
    return payer.plate is not None and bill.plate == payer.plate


def blocking_attempt(
    bill_id: str, pending: Iterable[Attempt], now: datetime, *, mine: str | None = None
) -> Attempt | None:
    """A pending attempt that still holds the bill: it could still be paid.

    A native order past ``expires_at`` cannot be paid any more (the provider
    got it as time_expire), so it no longer holds the bill even before the
    sweeper closes it. A contactless deduction holds it until its result.
    """
    for attempt in pending:
        if attempt.id == mine or attempt.status is not AttemptStatus.PENDING:
            continue
        if bill_id not in attempt.bill_ids:
            continue
        if attempt.kind is AttemptKind.CONTACTLESS or now < attempt.expires_at:
            return attempt
    return None


def same_request(
    attempt: Attempt,
    *,
    provider: str,
    bill_ids: Sequence[str],
    kind: AttemptKind = AttemptKind.NATIVE,
) -> bool:
    return (
        attempt.provider == provider
        and attempt.kind is kind
        and sorted(attempt.bill_ids) == sorted(bill_ids)
    )


# --------------------------------------------------------------------------- idempotency keys


def request_hash(endpoint: str, body: msgspec.Struct) -> str:
    """Identifies a request: the endpoint and the decoded body re-encoded canonically.

    Re-encoding the decoded Struct makes whitespace and key order irrelevant,
    as Stripe compares parameters rather than bytes.
    """
    digest = hashlib.sha256(endpoint.encode())
    digest.update(b"\n")
    digest.update(msgspec.json.encode(body, order="sorted"))
    return digest.hexdigest()


def claim_decision(
    existing: IdempotencyRecord, *, request_hash: str, now: datetime
) -> Proceed | Replay:
    """What a request finds when its key exists already (Stripe semantics).

    Raises IdempotencyKeyReused for another body, IdempotencyKeyInFlight while
    the first request runs; an in-flight key past its lease belonged to a
    request that crashed, and this one takes it over.
    """
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused(
            f"idempotency key {existing.key!r} was used for a different request"
        )
    if existing.state is IdempotencyState.DONE:
        assert existing.response_status is not None
        assert existing.response_body is not None
        return Replay(
            response=StoredResponse(status=existing.response_status, body=existing.response_body)
        )
    if now - existing.locked_at < IDEMPOTENCY_LEASE:
        raise IdempotencyKeyInFlight(
            f"a request with idempotency key {existing.key!r} is still in progress; retry later"
        )
    return Proceed()


# --------------------------------------------------------------------------- settling


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """How to apply money the provider took for an attempt.

    ``mismatch``: the amount is not the attempt's; apply nothing.
    Otherwise every bill is paid with its share, except those another payment
    already paid (the service learns that under the bill's lock).
    """

    mismatch: bool
    #: the attempt had been given up on (expired, closed, failed) before
    late: bool


def settlement(attempt: Attempt, *, amount_fen: int) -> Settlement:
    # A failed contactless deduction that is repaid later (TRANSACTION.PAY_BACK)
    # is the parking service working as designed, not a late payment.
    gave_up = attempt.status in (AttemptStatus.EXPIRED, AttemptStatus.CLOSED) or (
        attempt.status is AttemptStatus.FAILED and attempt.kind.by_payer
    )
    return Settlement(mismatch=amount_fen != attempt.amount_fen, late=gave_up)


def returns_to_open(bill: Bill) -> bool:
    """A failed/expired attempt gives a bill back to the driver only if it is still paying."""
    return bill.status is BillStatus.PAYING


# --------------------------------------------------------------------------- sweeping


class Settle(msgspec.Struct, frozen=True, kw_only=True):
    status: OrderStatus


class Expire(msgspec.Struct, frozen=True, kw_only=True):
    """Give the bills back; ``close_first``: the provider still shows the order payable."""

    close_first: bool
    reason: str


class Fail(msgspec.Struct, frozen=True, kw_only=True):
    reason: str


class Leave(msgspec.Struct, frozen=True, kw_only=True):
    reason: str


SweepDecision = Settle | Expire | Fail | Leave


def sweep_decision(attempt: Attempt, status: OrderStatus | None, now: datetime) -> SweepDecision:
    """What to do with a stuck attempt given the provider's view (``None``: no such order)."""
    native = attempt.kind.by_payer
    if status is None:
        # Never created (a crash before create_order, or a refused request).
        if native and now >= attempt.expires_at:
            return Expire(close_first=False, reason="the provider has no such order")
        if not native and attempt.status is AttemptStatus.PENDING:
            return Fail(reason="the provider has no such deduction")
        return Leave(reason="not created at the provider yet")
    if status.state in (OrderState.PAID, OrderState.REFUNDED):
        return Settle(status=status)
    if status.state is OrderState.CLOSED:
        return Expire(close_first=False, reason=f"closed at the provider ({status.provider_state})")
    if status.state is OrderState.FAILED:
        if native:
            return Expire(close_first=True, reason=f"payment failed ({status.provider_state})")
        return Fail(reason=f"deduction failed ({status.provider_state})")
    # PENDING / ACCEPTED
    if native and now >= attempt.expires_at:
        return Expire(close_first=True, reason="not paid before it expired")
    return Leave(reason=f"still {status.provider_state} at the provider")
