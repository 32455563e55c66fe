"""Provider notifications and order status: verify, apply once, settle the bill or
hold the money in suspense; the sweeper's settle-from-status and expiry use the
same steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg
import msgspec

from parking.bills import service as bills
from parking.bills.model import (
    BillAlreadyPaid,
    IllegalBillTransition,
)
from parking.ids import new_id
from parking.payments import logic, store
from parking.payments.model import (
    AnomalyAction,
    AnomalyKind,
    Attempt,
    AttemptStatus,
    BillShare,
    DeductionStatus,
    NewAnomaly,
    RefundStatus,
)
from parking.payments.port import (
    NotificationReply,
    OrderStatus,
    PaymentClosed,
    PaymentFailed,
    PaymentProvider,
    PaymentRepaid,
    PaymentSucceeded,
    ProviderEvent,
    RefundFailed,
    RefundSucceeded,
    StaleNotification,
)
from parking.payments.refunds import (
    hold_in_suspense,
    refund_failed,
    refund_succeeded,
    submit_refund,
)
from parking.payments.txn import (
    DB_ERRORS,
    SYSTEM_ACTOR,
    Outcome,
    connection,
    log,
    record_anomaly,
    transaction,
)
from parking.payments.wire import NotificationRejected, WireError


async def handle_notification(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    *,
    refund_notify_url: str | None = None,
    received_at: datetime | None = None,
) -> NotificationReply:
    """Verify, record once and apply one provider notification; the exact reply to send back.

    ``received_at`` is the wall time the signature's freshness is checked against
    (``now``, the business time it is applied at, unless given).

    - Not authentic (bad signature, tampered body, foreign merchant): failure
      as a 401 (`PaymentProvider.rejection_reply`), nothing recorded (the
      provider re-sends; an attacker gets nothing).
    - Authentic but outside the replay window (StaleNotification): success
      only if that notification id was processed before (P5), else failure.
    - Authentic: inserted into the inbox and applied in one transaction; a
      copy (re-send, duplicate, one of ten concurrent deliveries) finds the
      inbox row and is answered success without being applied again (P3).
      Anomalies (unknown order, wrong amount, refund before payment, a refund
      the bill cannot take...) are recorded and answered success: sending them
      again would change nothing. Money in them that no bill can take is
      posted to suspense:{provider} in the same transaction.
    - The database failing mid-way rolls everything back and answers
      failure: the provider re-sends and the retry applies it (P2).
    """
    try:
        event = provider.parse_notification(headers, body, received_at or now)
    except StaleNotification as exc:
        try:
            async with connection(pool) as conn:
                seen = await store.notification_processed(conn, provider.name, exc.notification_id)
        except DB_ERRORS:
            seen = False
        log.warning(
            "stale notification",
            provider=provider.name,
            notification_id=exc.notification_id,
            already_processed=seen,
        )
        # Not processed before: a replay of an old capture, refused like a forgery.
        return provider.notification_reply(True) if seen else provider.rejection_reply()
    except NotificationRejected as exc:
        log.warning("notification rejected", provider=provider.name, reason=str(exc))
        return provider.rejection_reply()
    except WireError as exc:
        # Authentic-looking but undecodable: keep it for a person; answer
        # failure so the provider re-sends (the same bytes: one anomaly).
        await _record_malformed(pool, provider.name, body, str(exc), now)
        return provider.notification_reply(False)
    try:
        outcome = await _apply_notification(pool, provider.name, event, now)
    except DB_ERRORS as exc:
        log.warning(
            "notification not applied; the provider will re-send it",
            provider=provider.name,
            notification_id=event.notification_id,
            error=repr(exc),
        )
        return provider.notification_reply(False)
    except Exception:
        log.exception(
            "notification failed", provider=provider.name, notification_id=event.notification_id
        )
        return provider.notification_reply(False)
    log.info(
        "notification",
        provider=provider.name,
        notification_id=event.notification_id,
        out_trade_no=event.out_trade_no,
        outcome=outcome.text,
    )
    for request_id in outcome.refunds:
        await submit_refund(pool, provider, request_id, notify_url=refund_notify_url, now=now)
    return provider.notification_reply(True)


async def _record_malformed(
    pool: asyncpg.Pool, provider: str, body: bytes, reason: str, now: datetime
) -> None:
    digest = hashlib.sha256(body).hexdigest()
    log.warning("malformed notification", provider=provider, sha256=digest, reason=reason)
    try:
        async with transaction(pool) as conn:
            await record_anomaly(
                conn,
                NewAnomaly(
                    kind=AnomalyKind.MALFORMED_NOTIFICATION,
                    dedup_key=f"{provider}:{digest}",
                    provider=provider,
                    detail=f"{reason} (body sha256 {digest})",
                ),
                now,
            )
    except DB_ERRORS:
        log.warning("malformed notification not recorded", provider=provider, sha256=digest)


def _tag(event: ProviderEvent) -> str:
    return str(type(event).__struct_config__.tag)


async def _apply_notification(
    pool: asyncpg.Pool, provider: str, event: ProviderEvent, now: datetime
) -> Outcome:
    async with transaction(pool) as conn:
        inbox_id = await store.insert_notification(
            conn,
            provider=provider,
            notification_id=event.notification_id,
            kind=_tag(event),
            out_trade_no=event.out_trade_no,
            event=msgspec.json.encode(event),
            now=now,
        )
        if inbox_id is None:
            return Outcome(text="duplicate")
        outcome = await _apply_event(conn, provider, event, now)
        await store.mark_notification(conn, inbox_id, outcome=outcome.text, now=now)
        return outcome


async def _apply_event(
    conn: asyncpg.Connection, provider: str, event: ProviderEvent, now: datetime
) -> Outcome:
    match event:
        case PaymentSucceeded() | PaymentRepaid():
            return await _settle(
                conn,
                provider,
                out_trade_no=event.out_trade_no,
                amount_fen=event.amount_fen,
                transaction_id=event.transaction_id,
                provider_state=_tag(event),
                notification_id=event.notification_id,
                now=now,
            )
        case PaymentFailed():
            return await _payment_ended(
                conn, event.out_trade_no, AttemptStatus.FAILED, f"failed: {event.reason}", now
            )
        case PaymentClosed():
            return await _payment_ended(
                conn, event.out_trade_no, AttemptStatus.CLOSED, "closed by the provider", now
            )
        case RefundSucceeded():
            return await refund_succeeded(conn, provider, event, now)
        case RefundFailed():
            return await refund_failed(conn, provider, event, now)
        case _:
            return Outcome(text=f"ignored:{event.event_type}"[:200])


async def _settle(
    conn: asyncpg.Connection,
    provider: str,
    *,
    out_trade_no: str,
    amount_fen: int,
    transaction_id: str,
    provider_state: str,
    notification_id: str | None,
    now: datetime,
) -> Outcome:
    """The provider took ``amount_fen`` for ``out_trade_no``: pay its bills, exactly once.

    The one path for a success notification, a repaid deduction and the
    sweeper's query answer. Locks the attempt, then its bills in id order.
    """
    attempt = await store.attempt_by_out_trade_no(conn, out_trade_no, lock=True)
    if attempt is None:
        anomaly = await record_anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.UNKNOWN_ORDER,
                dedup_key=f"{provider}:{out_trade_no}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                amount_fen=amount_fen,
                detail=f"{provider} reports {amount_fen} fen paid (transaction "
                f"{transaction_id}) for an order we never made; held in suspense",
            ),
            now,
        )
        await hold_in_suspense(conn, anomaly, amount_fen, now)
        return Outcome(text="anomaly:unknown_order")
    if attempt.status is AttemptStatus.PAID:
        if attempt.transaction_id == transaction_id:
            return Outcome(text="already_paid")
        anomaly = await record_anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.DUPLICATE_PAYMENT,
                dedup_key=f"{provider}:{out_trade_no}:{transaction_id}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                attempt_id=attempt.id,
                amount_fen=amount_fen,
                detail=f"a second transaction {transaction_id} for an order paid by "
                f"{attempt.transaction_id}; held in suspense",
            ),
            now,
        )
        await hold_in_suspense(conn, anomaly, amount_fen, now)
        return Outcome(text="anomaly:second_transaction")
    plan = logic.settlement(attempt, amount_fen=amount_fen)
    if plan.mismatch:
        anomaly = await record_anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.AMOUNT_MISMATCH,
                dedup_key=f"{provider}:{out_trade_no}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                attempt_id=attempt.id,
                amount_fen=amount_fen,
                expected_fen=attempt.amount_fen,
                detail=f"{provider} reports {amount_fen} fen paid (transaction "
                f"{transaction_id}); the order is {attempt.amount_fen} fen. Not applied; "
                "held in suspense.",
            ),
            now,
        )
        await hold_in_suspense(conn, anomaly, amount_fen, now)
        if attempt.status is AttemptStatus.PENDING:
            await give_up(
                conn,
                attempt,
                AttemptStatus.FAILED,
                failure=f"notified {amount_fen} fen for a {attempt.amount_fen} fen order",
                now=now,
            )
        return Outcome(text="anomaly:amount_mismatch")
    applied: list[BillShare] = []
    duplicates: list[BillShare] = []
    for share in sorted(attempt.bills, key=lambda s: s.bill_id):
        try:
            await bills.mark_paid(
                conn,
                share.bill_id,
                provider=provider,
                payment_ref=attempt.out_trade_no,
                amount_fen=share.amount_fen,
                now=now,
                actor=f"{SYSTEM_ACTOR}:{provider}",
                remark=f"transaction {transaction_id}",
            )
            applied.append(share)
        except (BillAlreadyPaid, IllegalBillTransition):
            # Raised before anything was written: another payment paid it.
            duplicates.append(share)
    await store.set_attempt_status(
        conn,
        attempt.id,
        AttemptStatus.PAID,
        now=now,
        transaction_id=transaction_id,
        provider_state=provider_state,
    )
    deduction = await store.deduction_of_attempt(conn, attempt.id)
    if deduction is not None:
        await store.update_deduction(conn, deduction.id, status=DeductionStatus.SUCCEEDED, now=now)
    refunds: list[str] = []
    if plan.late and applied:
        await record_anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.PAID_AFTER_CLOSE,
                dedup_key=f"{provider}:{out_trade_no}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                attempt_id=attempt.id,
                amount_fen=sum(s.amount_fen for s in applied),
                action=AnomalyAction.APPLIED,
                detail=f"paid while {attempt.status.value}; applied to the bills still owed",
                resolved=True,
            ),
            now,
        )
    if duplicates:
        refunds.append(
            await _refund_duplicate(
                conn, provider, attempt, duplicates, notification_id=notification_id, now=now
            )
        )
    text = "paid" if not duplicates else f"paid:{len(duplicates)}_duplicate"
    return Outcome(text=text, refunds=tuple(refunds))


async def _refund_duplicate(
    conn: asyncpg.Connection,
    provider: str,
    attempt: Attempt,
    duplicates: Sequence[BillShare],
    *,
    notification_id: str | None,
    now: datetime,
) -> str:
    """Record the duplicate payment and the refund that returns it (sent after the commit)."""
    amount = sum(share.amount_fen for share in duplicates)
    anomaly = await record_anomaly(
        conn,
        NewAnomaly(
            kind=AnomalyKind.DUPLICATE_PAYMENT,
            dedup_key=f"{provider}:{attempt.out_trade_no}",
            provider=provider,
            out_trade_no=attempt.out_trade_no,
            notification_id=notification_id,
            attempt_id=attempt.id,
            bill_id=duplicates[0].bill_id,
            amount_fen=amount,
            action=AnomalyAction.AUTO_REFUND,
            detail="already paid by another payment: "
            + ", ".join(share.bill_id for share in duplicates),
        ),
        now,
    )
    await hold_in_suspense(conn, anomaly, amount, now)
    request_id = new_id("rr", now)
    request = await store.insert_refund_request(
        conn,
        request_id=request_id,
        bill_id=None,
        attempt_id=attempt.id,
        provider=provider,
        out_trade_no=attempt.out_trade_no,
        out_refund_no=logic.out_refund_no(request_id),
        amount_fen=amount,
        status=RefundStatus.APPROVED,
        reason="重复支付退款",
        requested_by=SYSTEM_ACTOR,
        decided_by=SYSTEM_ACTOR,
        remark=f"automatic refund of a duplicate payment ({anomaly.id})",
        dispute_id=None,
        anomaly_id=anomaly.id,
        now=now,
    )
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="refund.duplicate_payment",
        target=f"payment:{attempt.id}",
        details={"anomaly_id": anomaly.id, "refund_request_id": request.id, "amount_fen": amount},
    )
    return request.id


async def give_up(
    conn: asyncpg.Connection,
    attempt: Attempt,
    status: AttemptStatus,
    *,
    failure: str,
    now: datetime,
    recheck: bool = False,
) -> None:
    """The attempt will not be paid (as far as we know): end it, give its bills back.

    A bill goes back to open only if it is still paying and no other pending
    attempt holds it (that one's own ending gives it back).
    """
    await store.set_attempt_status(
        conn, attempt.id, status, now=now, failure=failure, recheck=recheck
    )
    deduction = await store.deduction_of_attempt(conn, attempt.id)
    if deduction is not None and deduction.status in (
        DeductionStatus.REQUESTED,
        DeductionStatus.ACCEPTED,
    ):
        await store.update_deduction(conn, deduction.id, status=DeductionStatus.FAILED, now=now)
    others = [
        other
        for other in await store.pending_attempts_of_bills(conn, attempt.bill_ids)
        if other.id != attempt.id
    ]
    for share in sorted(attempt.bills, key=lambda s: s.bill_id):
        if any(share.bill_id in other.bill_ids for other in others):
            continue
        bill = await bills.get(conn, share.bill_id)
        if not logic.returns_to_open(bill):
            continue
        try:
            await bills.payment_failed(
                conn,
                bill.id,
                actor=f"{SYSTEM_ACTOR}:{attempt.provider}",
                remark=f"{attempt.out_trade_no} {status.value}: {failure}"[:2000],
                now=now,
            )
        except IllegalBillTransition:
            continue  # paid or disputed since we looked; raised before any write


async def _payment_ended(
    conn: asyncpg.Connection,
    out_trade_no: str,
    status: AttemptStatus,
    reason: str,
    now: datetime,
) -> Outcome:
    attempt = await store.attempt_by_out_trade_no(conn, out_trade_no, lock=True)
    if attempt is None:
        return Outcome(text="ignored:unknown_order")
    if attempt.status is not AttemptStatus.PENDING:
        return Outcome(text=f"ignored:{attempt.status.value}")
    await give_up(conn, attempt, status, failure=reason, now=now)
    return Outcome(text=status.value)


async def settle_from_status(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    status: OrderStatus,
    *,
    now: datetime,
    refund_notify_url: str | None = None,
) -> str:
    """Apply a paid order the provider reported on a query, exactly as its notification would."""
    async with transaction(pool) as conn:
        outcome = await _settle(
            conn,
            provider.name,
            out_trade_no=status.out_trade_no,
            amount_fen=status.amount_fen,
            transaction_id=status.transaction_id or status.out_trade_no,
            provider_state=status.provider_state,
            notification_id=None,
            now=now,
        )
    for request_id in outcome.refunds:
        await submit_refund(pool, provider, request_id, notify_url=refund_notify_url, now=now)
    return outcome.text


async def end_attempt(
    pool: asyncpg.Pool,
    attempt_id: str,
    status: AttemptStatus,
    *,
    reason: str,
    now: datetime,
    recheck: bool = False,
) -> bool:
    """End a pending attempt (expired, failed, closed) and give its bills back; False if it
    was no longer pending (a notification settled it meanwhile)."""
    async with transaction(pool) as conn:
        attempt = await store.attempt(conn, attempt_id, lock=True)
        if attempt is None or attempt.status is not AttemptStatus.PENDING:
            return False
        await give_up(conn, attempt, status, failure=reason, now=now, recheck=recheck)
        return True


async def stop_recheck(pool: asyncpg.Pool, attempt_id: str, *, now: datetime) -> None:
    async with transaction(pool) as conn:
        await store.set_recheck(conn, attempt_id, False, now)
