"""Money that follows an operator's decision about a stay: refunds of a voided or
re-plated stay's payment, asked after the decision commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg

from parking.bills import service as bills
from parking.bills.model import (
    Bill,
)
from parking.errors import Conflict
from parking.ids import new_id
from parking.payments import logic, port, store
from parking.payments.model import (
    Attempt,
    Deduction,
    RefundStatus,
)
from parking.payments.port import (
    PaymentProvider,
)
from parking.payments.refunds import submit_refund
from parking.payments.txn import connection, log


async def paid_by_deduction(conn: asyncpg.Connection, bill: Bill) -> Deduction | None:
    """The contactless deduction whose payment settled the bill, if one did."""
    if bill.payment_ref is None:
        return None
    deduction = await store.deduction_of_bill(conn, bill.id)
    if deduction is None:
        return None
    attempt = await store.attempt(conn, deduction.attempt_id)
    if attempt is None or attempt.out_trade_no != bill.payment_ref:
        return None
    return deduction


async def refundable_fen(conn: asyncpg.Connection, bill: Bill) -> int:
    """What may still be refunded of the bill: its refundable amount less the refunds
    already approved or in flight."""
    in_flight = sum(
        r.amount_fen for r in await store.refund_requests_in_flight_of_bill(conn, bill.id)
    )
    return bill.refundable_fen - in_flight


async def paying_attempt(conn: asyncpg.Connection, bill: Bill) -> Attempt:
    """The attempt whose payment settled the bill (a refund goes back the way it came)."""
    attempt = (
        None
        if bill.payment_ref is None
        else await store.attempt_by_out_trade_no(conn, bill.payment_ref)
    )
    if attempt is None or bill.provider is None:
        raise Conflict(f"bill {bill.id} was not paid through a payment of this platform")
    return attempt


async def approved_refund(
    conn: asyncpg.Connection,
    bill: Bill,
    attempt: Attempt,
    *,
    amount_fen: int,
    reason: str,
    requested_by: str,
    decided_by: str,
    remark: str,
    dispute_id: str | None,
    now: datetime,
) -> str:
    """Record an approved refund request of the bill (its out_refund_no fixed now, so a
    retried submission is the same refund at the provider); returns its id."""
    request_id = new_id("rr", now)
    await store.insert_refund_request(
        conn,
        request_id=request_id,
        bill_id=bill.id,
        attempt_id=attempt.id,
        provider=attempt.provider,
        out_trade_no=attempt.out_trade_no,
        out_refund_no=logic.out_refund_no(request_id),
        amount_fen=amount_fen,
        status=RefundStatus.APPROVED,
        reason=reason,
        requested_by=requested_by,
        decided_by=decided_by,
        remark=remark,
        dispute_id=dispute_id,
        anomaly_id=None,
        now=now,
    )
    return request_id


async def request_refund(
    conn: asyncpg.Connection,
    bill_id: str,
    *,
    reason: str,
    by: str,
    role: str,
    remark: str,
    now: datetime,
) -> str | None:
    """Ask for the refund of all that is left of a paid bill, through the provider that took
    it (an operator's decision: a voided stay, a deduction from a misread plate's mandate).

    In the caller's transaction: commits an approved refund request with its fixed
    out_refund_no, the same kind a dispute upheld makes; the caller hands its id to
    ``submit_refunds`` after the commit (or the sweeper sends it). The bill moves and
    the ledger's refund posts when the provider confirms. Audited. Returns the
    request's id, or None when nothing is left to refund (refunded already, or
    refunds in flight cover it).
    """
    bill = await bills.get(conn, bill_id)
    amount = await refundable_fen(conn, bill)
    if amount <= 0:
        return None
    request_id = await approved_refund(
        conn,
        bill,
        await paying_attempt(conn, bill),
        amount_fen=amount,
        reason=reason[:500],
        requested_by=by,
        decided_by=by,
        remark=remark[:2000],
        dispute_id=None,
        now=now,
    )
    await store.audit(
        conn,
        at=now,
        actor=by,
        role=role,
        action="refund.requested",
        target=f"bill:{bill.id}",
        details={"refund_request_id": request_id, "amount_fen": amount, "reason": reason},
    )
    return request_id


async def submit_refunds(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    request_ids: Sequence[str],
    *,
    notify_base_url: str | None,
    now: datetime,
) -> dict[str, RefundStatus]:
    """Send refund requests committed by ``request_refund`` (after the caller's commit).

    Never raises for one request: a provider that is not configured here, does
    not answer or refuses leaves the request approved (for the sweeper) or
    failed (an anomaly), as ``submit_refund`` decides. Returns each request's
    status afterwards.
    """
    statuses: dict[str, RefundStatus] = {}
    for request_id in request_ids:
        async with connection(pool) as conn:
            request = await store.refund_request(conn, request_id)
        if request is None:
            continue
        provider = providers.get(request.provider)
        if provider is None:
            statuses[request_id] = request.status
            continue
        notify = None if not notify_base_url else logic.notify_url(notify_base_url, provider.name)
        try:
            statuses[request_id] = await submit_refund(
                pool, provider, request_id, notify_url=notify, now=now
            )
        except port.ProviderError as exc:
            log.warning("refund left to the sweeper", refund_request_id=request_id, error=str(exc))
            statuses[request_id] = RefundStatus.APPROVED
    return statuses
