"""Refunds: sending a refund request, recording the provider's answer, and what
follows it (a failed refund of an approved dispute reopens it; money a bill cannot
take lands on suspense), plus finance's refund of an anomaly's money.

A refund request is committed with its fixed out_refund_no before the provider
is called, so a crash between leaves a request the sweeper sends again and the
provider de-duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

import asyncpg

from parking.bills import service as bills
from parking.bills.model import (
    BillError,
)
from parking.errors import InvalidInput
from parking.ids import new_id
from parking.ledger import logic as ledger_logic
from parking.ledger import service as ledger
from parking.ledger.model import TransactionKind
from parking.payments import logic, port, store
from parking.payments.model import (
    Anomaly,
    AnomalyKind,
    AnomalyRefund,
    AttemptStatus,
    DisputeStatus,
    NewAnomaly,
    NothingToRefund,
    RefundRequest,
    RefundStatus,
    UnknownAnomaly,
    UnknownProvider,
)
from parking.payments.port import (
    PaymentProvider,
    ProviderRejected,
    ProviderUnavailable,
    RefundFailed,
    RefundSucceeded,
)
from parking.payments.txn import (
    SYSTEM_ACTOR,
    Outcome,
    audit_decision,
    connection,
    record_anomaly,
    remark_text,
    transaction,
)

#: WeChat's refund ``reason`` is at most 80 characters.
_REFUND_REASON_MAX: Final = 80


async def hold_in_suspense(
    conn: asyncpg.Connection, anomaly: Anomaly, amount_fen: int, now: datetime
) -> None:
    """Post money the provider collected that no bill can take to suspense:{provider}.

    Keyed by the anomaly, so a report repeated (another notification id, the
    sweeper's query) holds it once. Nothing to hold for a non-positive amount.
    """
    if amount_fen <= 0:
        return
    await ledger.post(
        conn,
        ledger_logic.suspense_received(
            anomaly_id=anomaly.id,
            provider=anomaly.provider,
            amount_fen=amount_fen,
            occurred_at=now,
            memo=f"{anomaly.kind.value} {anomaly.out_trade_no or ''}".strip(),
        ),
    )


async def refund_succeeded(
    conn: asyncpg.Connection, provider: str, event: RefundSucceeded, now: datetime
) -> Outcome:
    request = await store.refund_request_by_no(conn, event.out_refund_no, lock=True)
    if request is None:
        attempt = await store.attempt_by_out_trade_no(conn, event.out_trade_no)
        kind = (
            AnomalyKind.REFUND_BEFORE_PAYMENT
            if attempt is not None and attempt.status is not AttemptStatus.PAID
            else AnomalyKind.UNKNOWN_REFUND
        )
        anomaly = await record_anomaly(
            conn,
            NewAnomaly(
                kind=kind,
                dedup_key=f"{provider}:{event.out_refund_no or event.out_trade_no}",
                provider=provider,
                out_trade_no=event.out_trade_no,
                out_refund_no=event.out_refund_no,
                notification_id=event.notification_id,
                attempt_id=None if attempt is None else attempt.id,
                amount_fen=event.refund_fen,
                detail=(
                    f"refund {event.out_refund_no} of {event.refund_fen} fen for "
                    f"{event.out_trade_no}, which is "
                    + ("unknown" if attempt is None else attempt.status.value)
                    + "; no bill changed, the money paid out is posted to suspense"
                ),
            ),
            now,
        )
        if event.out_refund_no and event.refund_fen:
            # Money left the provider's clearing balance all the same (a refund
            # made in the merchant console): on the ledger, against suspense.
            await _paid_out_of_suspense(
                conn, anomaly, refund_ref=event.out_refund_no, amount_fen=event.refund_fen, now=now
            )
        return Outcome(text=f"anomaly:{kind.value}")
    return await _complete_refund(conn, request, provider_refund_id=event.refund_id, now=now)


async def refund_failed(
    conn: asyncpg.Connection, provider: str, event: RefundFailed, now: datetime
) -> Outcome:
    request = await store.refund_request_by_no(conn, event.out_refund_no, lock=True)
    detail = f"refund {event.out_refund_no} ended {event.state.value} at {provider}"
    if request is not None and request.status is RefundStatus.APPROVED:
        await _refund_request_failed(
            conn, request, detail=detail, last_error=event.state.value, now=now
        )
        return Outcome(text="refund_failed")
    await record_anomaly(
        conn,
        NewAnomaly(
            kind=AnomalyKind.REFUND_FAILED if request is not None else AnomalyKind.UNKNOWN_REFUND,
            dedup_key=f"{provider}:{event.out_refund_no}",
            provider=provider,
            out_trade_no=event.out_trade_no,
            out_refund_no=event.out_refund_no,
            notification_id=event.notification_id,
            bill_id=None if request is None else request.bill_id,
            amount_fen=event.refund_fen,
            detail=detail,
        ),
        now,
    )
    return Outcome(text="anomaly:refund_failed")


async def _refund_request_failed(
    conn: asyncpg.Connection, request: RefundRequest, *, detail: str, last_error: str, now: datetime
) -> None:
    """The provider will not pay an approved refund out: fail it, record an anomaly, and
    reopen the dispute it carried out, so finance decides again (approve anew, or reject
    and the bill is paid again) instead of the bill staying disputed for ever.
    In the caller's transaction, under the request's row lock."""
    await store.update_refund_request(
        conn, request.id, status=RefundStatus.FAILED, now=now, last_error=last_error
    )
    await _refund_failure_anomaly(conn, request, detail, now)
    if request.dispute_id is None:
        return
    reopened = await store.reopen_dispute(conn, request.dispute_id)
    if reopened is None:
        return  # decided otherwise meanwhile, or the driver opened another dispute
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="dispute.reopened",
        target=f"bill:{reopened.bill_id}",
        details={
            "dispute_id": reopened.id,
            "remark": f"refund {request.out_refund_no} failed: {detail}"[:2000],
            "refund_request_id": request.id,
        },
    )


async def _paid_out_of_suspense(
    conn: asyncpg.Connection, anomaly: Anomaly, *, refund_ref: str, amount_fen: int, now: datetime
) -> None:
    """Post a refund the provider paid that no bill takes: suspense:{provider} / clearing.

    Idempotent on the refund reference, like every refund: if that reference is
    on the ledger already (it moved a bill), nothing more is posted.
    """
    if await ledger.find(conn, TransactionKind.REFUND, f"{anomaly.provider}:{refund_ref}"):
        return
    await ledger.post(
        conn,
        ledger_logic.suspense_refunded(
            anomaly_id=anomaly.id,
            provider=anomaly.provider,
            refund_ref=refund_ref,
            amount_fen=amount_fen,
            occurred_at=now,
            memo=f"{anomaly.kind.value} {anomaly.out_trade_no or ''}".strip(),
        ),
    )


async def _complete_refund(
    conn: asyncpg.Connection,
    request: RefundRequest,
    *,
    provider_refund_id: str | None,
    now: datetime,
) -> Outcome:
    """The provider paid the refund out: move the bill (and post the ledger's refund), once.

    A refund of money held in suspense (an anomaly's, no bill) posts back out of
    suspense. A bill that can no longer take the refund (an unexpected state)
    does not stop it: see ``_refund_unapplied``.
    """
    if request.status is RefundStatus.REFUNDED:
        return Outcome(text="already_refunded")
    if request.bill_id is not None:
        try:
            await bills.refund(
                conn,
                request.bill_id,
                amount_fen=request.amount_fen,
                provider=request.provider,
                refund_ref=request.out_refund_no,
                actor=f"finance:{request.decided_by}" if request.decided_by else SYSTEM_ACTOR,
                remark=request.remark or request.reason,
                now=now,
            )
        except BillError as exc:
            # Raised before anything was written (bills.refund checks first).
            return await _refund_unapplied(
                conn, request, exc, provider_refund_id=provider_refund_id, now=now
            )
        if request.dispute_id is not None:
            await _reapprove_dispute(conn, request, now)
    else:
        assert request.anomaly_id is not None  # refund_requests_subject_check
        held = await store.anomaly(conn, request.anomaly_id)
        assert held is not None
        await _paid_out_of_suspense(
            conn, held, refund_ref=request.out_refund_no, amount_fen=request.amount_fen, now=now
        )
    if request.anomaly_id is not None:
        await store.resolve_anomaly(
            conn,
            request.anomaly_id,
            by=SYSTEM_ACTOR,
            remark=f"refunded {request.amount_fen} fen as {request.out_refund_no}",
            now=now,
        )
    await store.update_refund_request(
        conn,
        request.id,
        status=RefundStatus.REFUNDED,
        now=now,
        provider_refund_id=provider_refund_id,
        submitted=True,
    )
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="refund.completed",
        target=_refund_target(request),
        details={
            "refund_request_id": request.id,
            "out_refund_no": request.out_refund_no,
            "amount_fen": request.amount_fen,
            "dispute_id": request.dispute_id,
            "anomaly_id": request.anomaly_id,
        },
    )
    return Outcome(text="refunded")


def _refund_target(request: RefundRequest) -> str:
    if request.bill_id is not None:
        return f"bill:{request.bill_id}"
    if request.attempt_id is not None:
        return f"payment:{request.attempt_id}"
    return f"payment_anomaly:{request.anomaly_id}"


async def _refund_unapplied(
    conn: asyncpg.Connection,
    request: RefundRequest,
    error: BillError,
    *,
    provider_refund_id: str | None,
    now: datetime,
) -> Outcome:
    """The provider confirmed a refund its bill can no longer take (refunded meanwhile by
    another refund, never paid, in another state).

    The money did leave: it is posted against suspense, the request is closed
    as refunded (so neither the provider's re-sends nor the sweeper ask again)
    and an open anomaly tells finance. Answered as taken.
    """
    assert request.bill_id is not None
    bill = await bills.get(conn, request.bill_id)
    kind = (
        AnomalyKind.REFUND_BEFORE_PAYMENT if bill.paid_at is None else AnomalyKind.REFUND_UNAPPLIED
    )
    anomaly = await record_anomaly(
        conn,
        NewAnomaly(
            kind=kind,
            dedup_key=f"{request.provider}:{request.out_refund_no}",
            provider=request.provider,
            out_trade_no=request.out_trade_no,
            out_refund_no=request.out_refund_no,
            attempt_id=request.attempt_id,
            bill_id=request.bill_id,
            amount_fen=request.amount_fen,
            detail=f"the provider refunded {request.amount_fen} fen as {request.out_refund_no}, "
            f"but bill {bill.id} ({bill.status.value}, {bill.refunded_fen} of "
            f"{bill.amount_fen} fen refunded) cannot take it: {error}; posted to suspense",
        ),
        now,
    )
    await _paid_out_of_suspense(
        conn, anomaly, refund_ref=request.out_refund_no, amount_fen=request.amount_fen, now=now
    )
    await store.update_refund_request(
        conn,
        request.id,
        status=RefundStatus.REFUNDED,
        now=now,
        provider_refund_id=provider_refund_id,
        submitted=True,
        last_error=f"not applied to the bill: {error}",
    )
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="refund.unapplied",
        target=f"bill:{bill.id}",
        details={
            "refund_request_id": request.id,
            "out_refund_no": request.out_refund_no,
            "amount_fen": request.amount_fen,
            "anomaly_id": anomaly.id,
            "bill_status": bill.status.value,
        },
    )
    return Outcome(text=f"anomaly:{kind.value}")


async def _reapprove_dispute(
    conn: asyncpg.Connection, request: RefundRequest, now: datetime
) -> None:
    """A refund reported failed (its dispute reopened) was paid out after all: the money
    decided the dispute, so it is approved again, by the system, with this refund."""
    assert request.dispute_id is not None
    dispute = await store.dispute(conn, request.dispute_id, lock=True)
    if dispute is None or dispute.status is not DisputeStatus.OPEN:
        return
    remark = f"refund {request.out_refund_no} was paid out after all"
    decided = await store.decide_dispute(
        conn,
        dispute.id,
        status=DisputeStatus.APPROVED,
        by=SYSTEM_ACTOR,
        remark=remark,
        refund_fen=request.amount_fen,
        now=now,
    )
    await audit_decision(
        conn, decided, by=SYSTEM_ACTOR, remark=remark, now=now, refund_request_id=request.id
    )


async def _order_total(conn: asyncpg.Connection, request: RefundRequest) -> int:
    """The order's total the provider wants with a refund: our attempt's amount, or for an
    order we never made, what the provider reported it collected."""
    if request.attempt_id is not None:
        attempt = await store.attempt(conn, request.attempt_id)
        if attempt is not None:
            return attempt.amount_fen
    if request.anomaly_id is not None:
        anomaly = await store.anomaly(conn, request.anomaly_id)
        if anomaly is not None and anomaly.amount_fen:
            return anomaly.amount_fen
    raise InvalidInput(f"refund request {request.id} names no order total")


async def submit_refund(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    request_id: str,
    *,
    notify_url: str | None,
    now: datetime,
) -> RefundStatus:
    """Send a committed refund request to the provider (again) and record its answer.

    Idempotent on out_refund_no at the provider: a request that timed out is
    sent again with the same number and refunds once. ProviderUnavailable
    leaves it approved for the sweeper; a refusal fails it (anomaly, and its
    dispute reopened). Returns the request's status afterwards.
    """
    async with connection(pool) as conn:
        request = await store.refund_request(conn, request_id)
        if request is None:
            raise InvalidInput(f"no refund request {request_id!r}")
        total_fen = await _order_total(conn, request)
    if request.status is not RefundStatus.APPROVED:
        return request.status
    try:
        if request.submitted_at is None:
            answer = await provider.refund(
                request.out_trade_no,
                request.out_refund_no,
                request.amount_fen,
                total_fen,
                (request.reason or "退款")[:_REFUND_REASON_MAX],
                notify_url=notify_url,
            )
        else:
            answer = await provider.query_refund(request.out_trade_no, request.out_refund_no)
    except ProviderUnavailable as exc:
        async with transaction(pool) as conn:
            await store.update_refund_request(
                conn, request.id, status=RefundStatus.APPROVED, now=now, last_error=str(exc)
            )
        return RefundStatus.APPROVED
    except ProviderRejected as exc:
        async with transaction(pool) as conn:
            locked = await store.refund_request(conn, request.id, lock=True)
            if locked is not None and locked.status is RefundStatus.APPROVED:
                await _refund_request_failed(
                    conn, locked, detail=str(exc), last_error=str(exc), now=now
                )
                return RefundStatus.FAILED
            return RefundStatus.APPROVED if locked is None else locked.status
    async with transaction(pool) as conn:
        return await _record_refund_answer(conn, request.id, answer, now)


async def _refund_failure_anomaly(
    conn: asyncpg.Connection, request: RefundRequest, detail: str, now: datetime
) -> None:
    await record_anomaly(
        conn,
        NewAnomaly(
            kind=AnomalyKind.REFUND_FAILED,
            dedup_key=f"{request.provider}:{request.out_refund_no}",
            provider=request.provider,
            out_trade_no=request.out_trade_no,
            out_refund_no=request.out_refund_no,
            bill_id=request.bill_id,
            amount_fen=request.amount_fen,
            detail=detail,
        ),
        now,
    )


async def _record_refund_answer(
    conn: asyncpg.Connection, request_id: str, answer: port.RefundStatus, now: datetime
) -> RefundStatus:
    request = await store.refund_request(conn, request_id, lock=True)
    assert request is not None
    if request.status is not RefundStatus.APPROVED:
        return request.status
    if answer.state is port.RefundState.SUCCEEDED:
        await _complete_refund(conn, request, provider_refund_id=answer.refund_id, now=now)
        return RefundStatus.REFUNDED
    if answer.state is port.RefundState.PROCESSING:
        await store.update_refund_request(
            conn,
            request.id,
            status=RefundStatus.APPROVED,
            now=now,
            provider_refund_id=answer.refund_id,
            submitted=True,
            last_error="",
        )
        return RefundStatus.APPROVED
    await _refund_request_failed(
        conn,
        request,
        detail=f"the provider answered {answer.provider_state}",
        last_error=answer.provider_state,
        now=now,
    )
    return RefundStatus.FAILED


async def refund_requests_to_sweep(
    pool: asyncpg.Pool, *, updated_before: datetime, limit: int
) -> list[RefundRequest]:
    async with connection(pool) as conn:
        return await store.refund_requests_to_sweep(
            conn, updated_before=updated_before, limit=limit
        )


async def touch_refund_request(pool: asyncpg.Pool, request_id: str, *, now: datetime) -> None:
    async with transaction(pool) as conn:
        await store.touch_refund_request(conn, request_id, now)


async def note_refund_error(
    pool: asyncpg.Pool, request_id: str, error: str, *, now: datetime
) -> None:
    """Keep on the request why the sweeper could not send or query it this time."""
    async with transaction(pool) as conn:
        await store.note_refund_error(conn, request_id, error, now)


async def refund_anomaly(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    anomaly_id: str,
    *,
    by: str,
    remark: str,
    notify_base_url: str | None = None,
    now: datetime,
) -> AnomalyRefund:
    """Give back, through the provider that collected it, the money an anomaly holds in
    suspense (a wrong amount, an order we never made, a second payment of a paid bill).

    Finance's decision, audited with ``by`` and ``remark``. Refunds all the
    anomaly holds that no refund request is returning already (NothingToRefund
    when that is nothing), with a stable out_refund_no. Suspense is debited
    when the provider confirms (now or by notification), which also resolves
    the anomaly; a refund the provider refuses leaves it open to try again.
    """
    remark = remark_text(remark)
    async with transaction(pool) as conn:
        anomaly = await store.anomaly(conn, anomaly_id, lock=True)
        if anomaly is None:
            raise UnknownAnomaly(anomaly_id)
        provider = providers.get(anomaly.provider)
        if provider is None:
            raise UnknownProvider(anomaly.provider)
        held = ledger_logic.held_in_suspense(
            await ledger.transactions_of(conn, anomaly.id), anomaly.provider
        )
        in_flight = sum(
            r.amount_fen for r in await store.refund_requests_in_flight_of_anomaly(conn, anomaly.id)
        )
        amount = held - in_flight
        if amount <= 0 or anomaly.out_trade_no is None:
            raise NothingToRefund(
                f"payment anomaly {anomaly_id} holds no money in suspense that is not being "
                f"refunded (held {held} fen, being refunded {in_flight} fen)"
            )
        request_id = new_id("rr", now)
        request = await store.insert_refund_request(
            conn,
            request_id=request_id,
            bill_id=None,
            attempt_id=anomaly.attempt_id,
            provider=anomaly.provider,
            out_trade_no=anomaly.out_trade_no,
            out_refund_no=logic.out_refund_no(request_id),
            amount_fen=amount,
            status=RefundStatus.APPROVED,
            reason="款项无法入账，原路退回",
            requested_by=by,
            decided_by=by,
            remark=remark,
            dispute_id=None,
            anomaly_id=anomaly.id,
            now=now,
        )
        total = await _order_total(conn, request)
        if amount > total:
            raise NothingToRefund(
                f"payment anomaly {anomaly_id} holds {amount} fen, more than the order's "
                f"{total} fen: refund it in the provider's console and resolve the anomaly"
            )
        await store.audit(
            conn,
            at=now,
            actor=by,
            role="finance",
            action="payment_anomaly.refund",
            target=f"payment_anomaly:{anomaly.id}",
            details={
                "remark": remark,
                "kind": anomaly.kind.value,
                "refund_request_id": request.id,
                "out_trade_no": anomaly.out_trade_no,
                "amount_fen": amount,
            },
        )
    notify = None if notify_base_url is None else logic.notify_url(notify_base_url, provider.name)
    status = await submit_refund(pool, provider, request.id, notify_url=notify, now=now)
    async with connection(pool) as conn:
        current = await store.anomaly(conn, anomaly_id)
    assert current is not None
    return AnomalyRefund(
        anomaly_id=anomaly_id,
        refund_request_id=request.id,
        out_trade_no=request.out_trade_no,
        out_refund_no=request.out_refund_no,
        amount_fen=amount,
        status=status,
        anomaly_status=current.status,
    )
