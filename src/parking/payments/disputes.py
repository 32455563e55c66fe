"""Disputes: a driver contests a bill; finance approves (refund) or rejects it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg

from parking.bills import service as bills
from parking.bills.model import (
    BillStatus,
    InvalidAmount,
    RefundExceedsAmount,
    UnknownBill,
)
from parking.errors import Conflict, InvalidInput
from parking.ids import new_id
from parking.payments import logic, store
from parking.payments.decisions import approved_refund, paying_attempt, refundable_fen
from parking.payments.model import (
    Dispute,
    DisputeClosed,
    DisputeStatus,
    DisputeView,
    UnknownDispute,
    UnknownProvider,
)
from parking.payments.port import (
    PaymentProvider,
)
from parking.payments.refunds import submit_refund
from parking.payments.txn import audit_decision, connection, disputable, remark_text, transaction


async def open_dispute(
    conn: asyncpg.Connection, bill_id: str, *, account_id: str, reason: str, now: datetime
) -> DisputeView:
    """The driver contests one of their bills (UnknownBill for anyone else's). In the caller's
    transaction. Idempotent: a bill with an open dispute of theirs returns it; a dispute
    another account opened is UnknownBill too (only its opener ever sees it)."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("a dispute needs a reason")
    bill = await bills.get(conn, bill_id)
    if not await disputable(conn, bill, account_id):
        raise UnknownBill(bill_id)
    existing = await store.open_dispute_of_bill(conn, bill_id)
    if existing is not None:
        if existing.opened_by != account_id:
            # Another account's dispute (the plate changed hands): its reason is theirs.
            raise UnknownBill(bill_id)
        return await _dispute_view(conn, existing)
    await bills.dispute(conn, bill_id, actor=f"driver:{account_id}", remark=reason, now=now)
    dispute = await store.insert_dispute(
        conn,
        dispute_id=new_id("dp", now),
        bill_id=bill_id,
        reason=reason,
        opened_by=account_id,
        now=now,
    )
    if dispute is None:
        raise Conflict(f"bill {bill_id} was disputed concurrently")
    await store.audit(
        conn,
        at=now,
        actor=account_id,
        role="driver",
        action="dispute.opened",
        target=f"bill:{bill_id}",
        details={"dispute_id": dispute.id, "reason": reason},
    )
    return await _dispute_view(conn, dispute)


async def _dispute_view(conn: asyncpg.Connection, dispute: Dispute) -> DisputeView:
    bill = await bills.get(conn, dispute.bill_id)
    refund = await store.refund_request_of_dispute(conn, dispute.id)
    return DisputeView(
        id=dispute.id,
        bill_id=dispute.bill_id,
        bill_amount_fen=bill.amount_fen,
        bill_status=bill.status.value,
        reason=dispute.reason,
        opened_by=dispute.opened_by,
        opened_at=dispute.opened_at,
        status=dispute.status,
        decided_by=dispute.decided_by,
        decided_at=dispute.decided_at,
        remark=dispute.remark,
        refund_fen=dispute.refund_fen,
        refund_status=None if refund is None else refund.status,
        written_off=dispute.status is DisputeStatus.APPROVED
        and refund is None
        and bill.status is BillStatus.WRITTEN_OFF,
    )


async def dispute_view(conn: asyncpg.Connection, dispute_id: str) -> DisputeView:
    dispute = await store.dispute(conn, dispute_id)
    if dispute is None:
        raise UnknownDispute(dispute_id)
    return await _dispute_view(conn, dispute)


async def disputes(
    conn: asyncpg.Connection, *, status: DisputeStatus | None = DisputeStatus.OPEN, limit: int = 100
) -> list[DisputeView]:
    return [
        await _dispute_view(conn, d) for d in await store.disputes(conn, status=status, limit=limit)
    ]


async def approve_dispute(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    dispute_id: str,
    *,
    by: str,
    remark: str,
    amount_fen: int | None = None,
    notify_base_url: str | None = None,
    now: datetime,
) -> DisputeView:
    """Uphold a dispute. A paid bill gets a refund of ``amount_fen`` (None: all that is left)
    through the provider that took the money, with a stable out_refund_no; the bill
    moves (and the ledger's refund posts) when the provider confirms, now or by
    notification. An unpaid bill is written off instead (in full only).
    Audited with ``by`` and ``remark``. Approving an approved dispute returns it.
    """
    remark = remark_text(remark)
    async with transaction(pool) as conn:
        dispute = await store.dispute(conn, dispute_id, lock=True)
        if dispute is None:
            raise UnknownDispute(dispute_id)
        if dispute.status is DisputeStatus.APPROVED:
            return await _dispute_view(conn, dispute)
        if dispute.status is not DisputeStatus.OPEN:
            raise DisputeClosed(f"dispute {dispute_id} was {dispute.status.value}")
        bill = await bills.get(conn, dispute.bill_id)
        if bill.paid_at is None:
            if amount_fen is not None and amount_fen != bill.amount_fen:
                raise InvalidInput("an unpaid bill is upheld by writing it off in full")
            await bills.write_off(conn, bill.id, actor=f"finance:{by}", remark=remark, now=now)
            decided = await store.decide_dispute(
                conn,
                dispute_id,
                status=DisputeStatus.APPROVED,
                by=by,
                remark=remark,
                refund_fen=None,
                now=now,
            )
            await audit_decision(conn, decided, by=by, remark=remark, now=now, written_off=True)
            return await _dispute_view(conn, decided)
        refundable = await refundable_fen(conn, bill)
        refund = refundable if amount_fen is None else amount_fen
        if refund <= 0:
            raise InvalidAmount(f"a refund must be > 0 fen, got {refund}")
        if refund > refundable:
            raise RefundExceedsAmount(bill.id, refundable_fen=refundable, requested_fen=refund)
        attempt = await paying_attempt(conn, bill)
        provider = providers.get(attempt.provider)
        if provider is None:
            raise UnknownProvider(attempt.provider)
        request_id = await approved_refund(
            conn,
            bill,
            attempt,
            amount_fen=refund,
            reason=dispute.reason,
            requested_by=dispute.opened_by,
            decided_by=by,
            remark=remark,
            dispute_id=dispute.id,
            now=now,
        )
        decided = await store.decide_dispute(
            conn,
            dispute_id,
            status=DisputeStatus.APPROVED,
            by=by,
            remark=remark,
            refund_fen=refund,
            now=now,
        )
        await audit_decision(
            conn, decided, by=by, remark=remark, now=now, refund_request_id=request_id
        )
    notify = None if notify_base_url is None else logic.notify_url(notify_base_url, provider.name)
    await submit_refund(pool, provider, request_id, notify_url=notify, now=now)
    async with connection(pool) as conn:
        return await dispute_view(conn, dispute_id)


async def reject_dispute(
    conn: asyncpg.Connection, dispute_id: str, *, by: str, remark: str, now: datetime
) -> DisputeView:
    """Reject a dispute: the bill returns to open, paid or refunded as its money says.

    Audited with ``by`` and ``remark``. In the caller's transaction.
    """
    remark = remark_text(remark)
    dispute = await store.dispute(conn, dispute_id, lock=True)
    if dispute is None:
        raise UnknownDispute(dispute_id)
    if dispute.status is not DisputeStatus.OPEN:
        raise DisputeClosed(f"dispute {dispute_id} was {dispute.status.value}")
    await bills.resolve_dispute(
        conn, dispute.bill_id, actor=f"finance:{by}", remark=remark, now=now
    )
    decided = await store.decide_dispute(
        conn,
        dispute_id,
        status=DisputeStatus.REJECTED,
        by=by,
        remark=remark,
        refund_fen=None,
        now=now,
    )
    await audit_decision(conn, decided, by=by, remark=remark, now=now)
    return await _dispute_view(conn, decided)
