"""Payment flow SQL (and nothing else). Every function runs in the caller's transaction.

Kept whole (over 600 lines): the payment tables are locked together by the flows
(an attempt, its bills, its refunds, the deduction), so their SQL reads in one place.

Rows of ``payment_attempts`` & co. are decoded with ``msgspec.convert`` into
the Structs of ``model``: the column names are the field names.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

import asyncpg
import msgspec

from parking.audit import record
from parking.money import Fen
from parking.payments.model import (
    Anomaly,
    AnomalyStatus,
    Attempt,
    AttemptKind,
    AttemptStatus,
    BillShare,
    Deduction,
    DeductionStatus,
    Dispute,
    DisputeStatus,
    IdempotencyRecord,
    Mandate,
    MandateState,
    NewAnomaly,
    RefundRequest,
    RefundStatus,
)

_T = TypeVar("_T")


def _decode(row: asyncpg.Record, type_: type[_T]) -> _T:
    return msgspec.convert(dict(row), type_)


def _lockable(select: str) -> tuple[str, str]:
    """``(select, select FOR UPDATE)``, indexed by ``lock``: constant text only."""
    return select, select + " FOR UPDATE"


_ATTEMPT = _lockable("SELECT * FROM payment_attempts WHERE id = $1")
_ATTEMPT_BY_NO = _lockable("SELECT * FROM payment_attempts WHERE out_trade_no = $1")
_KEY = _lockable("SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2")
_ANOMALY = _lockable("SELECT * FROM payment_anomalies WHERE id = $1")
_REFUND = _lockable("SELECT * FROM refund_requests WHERE id = $1")
_REFUND_BY_NO = _lockable("SELECT * FROM refund_requests WHERE out_refund_no = $1")
_DISPUTE = _lockable("SELECT * FROM disputes WHERE id = $1")
_LIVE_MANDATE = _lockable(
    "SELECT * FROM contactless_mandates WHERE provider = $1 AND plate = $2 AND state <> 'revoked'"
)
_DEDUCTION_OF_BILL = _lockable("SELECT * FROM contactless_deductions WHERE bill_id = $1")
_ACTIVE_MANDATE_FOR_PLATE = _lockable(
    "SELECT * FROM contactless_mandates WHERE plate = $1 AND state = 'active' "
    "ORDER BY updated_at DESC LIMIT 1"
)


# --------------------------------------------------------------------------- attempts


async def _with_bills(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[Attempt]:
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    share_rows = await conn.fetch(
        "SELECT attempt_id, bill_id, amount_fen FROM payment_bills "
        "WHERE attempt_id = ANY($1::text[]) ORDER BY attempt_id, bill_id",
        ids,
    )
    shares: dict[str, list[BillShare]] = {}
    for share in share_rows:
        shares.setdefault(share["attempt_id"], []).append(
            BillShare(bill_id=share["bill_id"], amount_fen=share["amount_fen"])
        )
    return [
        msgspec.structs.replace(_decode(row, Attempt), bills=tuple(shares.get(row["id"], [])))
        for row in rows
    ]


async def _one_attempt(conn: asyncpg.Connection, row: asyncpg.Record | None) -> Attempt | None:
    if row is None:
        return None
    [attempt] = await _with_bills(conn, [row])
    return attempt


async def insert_attempt(
    conn: asyncpg.Connection,
    *,
    attempt_id: str,
    provider: str,
    kind: AttemptKind,
    out_trade_no: str,
    amount_fen: Fen,
    payer_account_id: str | None,
    payer_plate: str | None,
    idempotency_scope: str | None,
    idempotency_key: str | None,
    shares: Sequence[BillShare],
    expires_at: datetime,
    now: datetime,
) -> Attempt:
    row = await conn.fetchrow(
        """INSERT INTO payment_attempts
               (id, provider, kind, out_trade_no, amount_fen, payer_account_id, payer_plate,
                idempotency_scope, idempotency_key, created_at, expires_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10)
           RETURNING *""",
        attempt_id,
        provider,
        kind.value,
        out_trade_no,
        amount_fen,
        payer_account_id,
        payer_plate,
        idempotency_scope,
        idempotency_key,
        now,
        expires_at,
    )
    await conn.executemany(
        "INSERT INTO payment_bills (attempt_id, bill_id, amount_fen) VALUES ($1, $2, $3)",
        [(attempt_id, share.bill_id, share.amount_fen) for share in shares],
    )
    assert row is not None
    return msgspec.structs.replace(_decode(row, Attempt), bills=tuple(shares))


async def attempt(
    conn: asyncpg.Connection, attempt_id: str, *, lock: bool = False
) -> Attempt | None:
    row = await conn.fetchrow(_ATTEMPT[lock], attempt_id)
    return await _one_attempt(conn, row)


async def attempt_by_out_trade_no(
    conn: asyncpg.Connection, out_trade_no: str, *, lock: bool = False
) -> Attempt | None:
    row = await conn.fetchrow(_ATTEMPT_BY_NO[lock], out_trade_no)
    return await _one_attempt(conn, row)


async def attempt_by_idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str
) -> Attempt | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_attempts WHERE idempotency_scope = $1 AND idempotency_key = $2",
        scope,
        key,
    )
    return await _one_attempt(conn, row)


async def pending_attempts_of_bills(
    conn: asyncpg.Connection, bill_ids: Sequence[str]
) -> list[Attempt]:
    rows = await conn.fetch(
        """SELECT * FROM payment_attempts a
            WHERE a.status = 'pending'
              AND EXISTS (SELECT 1 FROM payment_bills b
                           WHERE b.attempt_id = a.id AND b.bill_id = ANY($1::text[]))
            ORDER BY a.created_at, a.id""",
        list(bill_ids),
    )
    return await _with_bills(conn, rows)


async def attempts_of_bill(conn: asyncpg.Connection, bill_id: str) -> list[Attempt]:
    rows = await conn.fetch(
        """SELECT a.* FROM payment_attempts a JOIN payment_bills b ON b.attempt_id = a.id
            WHERE b.bill_id = $1 ORDER BY a.created_at, a.id""",
        bill_id,
    )
    return await _with_bills(conn, rows)


async def record_order(
    conn: asyncpg.Connection,
    attempt_id: str,
    *,
    code_url: str | None,
    provider_state: str,
    now: datetime,
) -> None:
    """The provider answered create_order / accepted the deduction: keep its answer (once)."""
    await conn.execute(
        """UPDATE payment_attempts
              SET code_url = coalesce(code_url, $2), ordered_at = coalesce(ordered_at, $4),
                  -- a notification may have settled it already: keep its state then
                  provider_state = CASE WHEN status = 'pending' THEN $3 ELSE provider_state END,
                  updated_at = $4
            WHERE id = $1""",
        attempt_id,
        code_url,
        provider_state,
        now,
    )


async def set_attempt_status(
    conn: asyncpg.Connection,
    attempt_id: str,
    status: AttemptStatus,
    *,
    now: datetime,
    transaction_id: str | None = None,
    provider_state: str | None = None,
    failure: str | None = None,
    recheck: bool = False,
) -> None:
    await conn.execute(
        """UPDATE payment_attempts
              SET status = $2,
                  settled_at = CASE WHEN $2 = 'pending' THEN NULL ELSE $3::timestamptz END,
                  transaction_id = coalesce($4, transaction_id),
                  provider_state = coalesce($5, provider_state),
                  failure = coalesce($6, failure),
                  recheck = $7,
                  updated_at = $3
            WHERE id = $1""",
        attempt_id,
        status.value,
        now,
        transaction_id,
        provider_state,
        failure,
        recheck,
    )


async def set_recheck(
    conn: asyncpg.Connection, attempt_id: str, recheck: bool, now: datetime
) -> None:
    await conn.execute(
        "UPDATE payment_attempts SET recheck = $2, updated_at = $3 WHERE id = $1",
        attempt_id,
        recheck,
        now,
    )


async def claim_for_sweep(
    conn: asyncpg.Connection,
    *,
    created_before: datetime,
    swept_before: datetime,
    now: datetime,
    limit: int,
) -> list[Attempt]:
    """Pending (or to-recheck) attempts created before ``created_before``, leased to this sweeper.

    ``swept_at`` is the lease: an attempt another sweeper looked at after
    ``swept_before`` is skipped, and SKIP LOCKED keeps two concurrent claims
    apart.
    """
    rows = await conn.fetch(
        """UPDATE payment_attempts SET swept_at = $3
            WHERE id IN (
                SELECT id FROM payment_attempts
                 WHERE (status = 'pending' OR recheck)
                   AND created_at <= $1
                   AND (swept_at IS NULL OR swept_at <= $2)
                 ORDER BY created_at
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
           RETURNING *""",
        created_before,
        swept_before,
        now,
        limit,
    )
    return await _with_bills(conn, rows)


# --------------------------------------------------------------------------- idempotency keys


async def insert_idempotency_key(
    conn: asyncpg.Connection,
    *,
    scope: str,
    key: str,
    endpoint: str,
    request_hash: str,
    now: datetime,
) -> bool:
    """Take a new key (in flight); False when it exists (ON CONFLICT waits for its inserter)."""
    inserted = await conn.fetchval(
        """INSERT INTO idempotency_keys (scope, key, endpoint, request_hash, state, created_at,
                                         locked_at)
           VALUES ($1, $2, $3, $4, 'in_flight', $5, $5)
           ON CONFLICT (scope, key) DO NOTHING
           RETURNING 1""",
        scope,
        key,
        endpoint,
        request_hash,
        now,
    )
    return inserted is not None


async def idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str, *, lock: bool = False
) -> IdempotencyRecord | None:
    row = await conn.fetchrow(_KEY[lock], scope, key)
    return None if row is None else _decode(row, IdempotencyRecord)


async def relock_idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET locked_at = $3 WHERE scope = $1 AND key = $2", scope, key, now
    )


async def complete_idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str, *, status: int, body: bytes, now: datetime
) -> None:
    await conn.execute(
        """UPDATE idempotency_keys
              SET state = 'done', response_status = $3, response_body = $4, completed_at = $5
            WHERE scope = $1 AND key = $2 AND state = 'in_flight'""",
        scope,
        key,
        status,
        body,
        now,
    )


async def prune_idempotency_keys(conn: asyncpg.Connection, *, created_before: datetime) -> int:
    result: str = await conn.execute(
        "DELETE FROM idempotency_keys WHERE state = 'done' AND created_at < $1", created_before
    )
    return int(result.split()[-1])


async def release_idempotency_key(conn: asyncpg.Connection, scope: str, key: str) -> None:
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_flight'",
        scope,
        key,
    )


# --------------------------------------------------------------------------- the inbox


async def insert_notification(
    conn: asyncpg.Connection,
    *,
    provider: str,
    notification_id: str,
    kind: str,
    out_trade_no: str,
    event: bytes,
    now: datetime,
) -> int | None:
    """Insert into the inbox; None when (provider, notification_id) is there already.

    ON CONFLICT waits for a concurrent insert of the same id to commit or roll
    back: ten concurrent copies queue here behind the first, and each then
    finds the first's committed row.
    """
    inbox_id: int | None = await conn.fetchval(
        """INSERT INTO payment_notifications
               (provider, notification_id, kind, out_trade_no, event, received_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6)
           ON CONFLICT (provider, notification_id) DO NOTHING
           RETURNING id""",
        provider,
        notification_id,
        kind,
        out_trade_no,
        event.decode(),
        now,
    )
    return inbox_id


async def mark_notification(
    conn: asyncpg.Connection, inbox_id: int, *, outcome: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE payment_notifications SET processed_at = $2, outcome = $3 WHERE id = $1",
        inbox_id,
        now,
        outcome[:200],
    )


async def notification_processed(
    conn: asyncpg.Connection, provider: str, notification_id: str
) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM payment_notifications WHERE provider = $1 AND notification_id = $2 "
        "AND processed_at IS NOT NULL",
        provider,
        notification_id,
    )
    return found is not None


# --------------------------------------------------------------------------- anomalies


async def insert_anomaly(
    conn: asyncpg.Connection, anomaly: NewAnomaly, *, anomaly_id: str, now: datetime
) -> tuple[Anomaly, bool]:
    """Record the anomaly once per (kind, dedup_key): ``(anomaly, created)``."""
    row = await conn.fetchrow(
        """INSERT INTO payment_anomalies
               (id, kind, dedup_key, status, provider, out_trade_no, out_refund_no,
                notification_id, attempt_id, bill_id, amount_fen, expected_fen, action, detail,
                created_at, resolved_at, resolved_by)
           VALUES ($1, $2, $3, CASE WHEN $15 THEN 'resolved' ELSE 'open' END, $4, $5, $6, $7, $8,
                   $9, $10, $11, $12, $13, $14,
                   CASE WHEN $15 THEN $14::timestamptz END,
                   CASE WHEN $15 THEN 'payments' END)
           ON CONFLICT (kind, dedup_key) DO NOTHING
           RETURNING *""",
        anomaly_id,
        anomaly.kind.value,
        anomaly.dedup_key,
        anomaly.provider,
        anomaly.out_trade_no,
        anomaly.out_refund_no,
        anomaly.notification_id,
        anomaly.attempt_id,
        anomaly.bill_id,
        anomaly.amount_fen,
        anomaly.expected_fen,
        anomaly.action.value,
        anomaly.detail[:2000],
        now,
        anomaly.resolved,
    )
    if row is not None:
        return _decode(row, Anomaly), True
    existing = await conn.fetchrow(
        "SELECT * FROM payment_anomalies WHERE kind = $1 AND dedup_key = $2",
        anomaly.kind.value,
        anomaly.dedup_key,
    )
    assert existing is not None
    return _decode(existing, Anomaly), False


async def anomaly(
    conn: asyncpg.Connection, anomaly_id: str, *, lock: bool = False
) -> Anomaly | None:
    row = await conn.fetchrow(_ANOMALY[lock], anomaly_id)
    return None if row is None else _decode(row, Anomaly)


async def anomalies(
    conn: asyncpg.Connection, *, status: AnomalyStatus | None, limit: int
) -> list[Anomaly]:
    if status is None:
        rows = await conn.fetch(
            "SELECT * FROM payment_anomalies ORDER BY created_at DESC, id DESC LIMIT $1", limit
        )
    else:
        rows = await conn.fetch(
            "SELECT * FROM payment_anomalies WHERE status = $1 "
            "ORDER BY created_at DESC, id DESC LIMIT $2",
            status.value,
            limit,
        )
    return [_decode(row, Anomaly) for row in rows]


async def resolve_anomaly(
    conn: asyncpg.Connection, anomaly_id: str, *, by: str, remark: str, now: datetime
) -> None:
    await conn.execute(
        """UPDATE payment_anomalies
              SET status = 'resolved', resolved_at = $2, resolved_by = $3, remark = $4
            WHERE id = $1 AND status = 'open'""",
        anomaly_id,
        now,
        by,
        remark,
    )


# --------------------------------------------------------------------------- refund requests


async def insert_refund_request(
    conn: asyncpg.Connection,
    *,
    request_id: str,
    bill_id: str | None,
    attempt_id: str | None,
    provider: str,
    out_trade_no: str,
    out_refund_no: str,
    amount_fen: Fen,
    status: RefundStatus,
    reason: str,
    requested_by: str,
    decided_by: str | None,
    remark: str,
    dispute_id: str | None,
    anomaly_id: str | None,
    now: datetime,
) -> RefundRequest:
    row = await conn.fetchrow(
        """INSERT INTO refund_requests
               (id, bill_id, attempt_id, provider, out_trade_no, out_refund_no, amount_fen, status,
                reason, requested_by, decided_by, remark, dispute_id, anomaly_id, created_at,
                decided_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                   CASE WHEN $11::text IS NULL THEN NULL ELSE $15::timestamptz END, $15)
           RETURNING *""",
        request_id,
        bill_id,
        attempt_id,
        provider,
        out_trade_no,
        out_refund_no,
        amount_fen,
        status.value,
        reason,
        requested_by,
        decided_by,
        remark,
        dispute_id,
        anomaly_id,
        now,
    )
    assert row is not None
    return _decode(row, RefundRequest)


async def refund_request(
    conn: asyncpg.Connection, request_id: str, *, lock: bool = False
) -> RefundRequest | None:
    row = await conn.fetchrow(_REFUND[lock], request_id)
    return None if row is None else _decode(row, RefundRequest)


async def refund_request_by_no(
    conn: asyncpg.Connection, out_refund_no: str, *, lock: bool = False
) -> RefundRequest | None:
    row = await conn.fetchrow(_REFUND_BY_NO[lock], out_refund_no)
    return None if row is None else _decode(row, RefundRequest)


async def refund_request_of_dispute(
    conn: asyncpg.Connection, dispute_id: str
) -> RefundRequest | None:
    row = await conn.fetchrow(
        "SELECT * FROM refund_requests WHERE dispute_id = $1 ORDER BY created_at DESC LIMIT 1",
        dispute_id,
    )
    return None if row is None else _decode(row, RefundRequest)


async def refund_requests_in_flight_of_bill(
    conn: asyncpg.Connection, bill_id: str
) -> list[RefundRequest]:
    rows = await conn.fetch(
        "SELECT * FROM refund_requests WHERE bill_id = $1 AND status IN ('requested', 'approved')",
        bill_id,
    )
    return [_decode(row, RefundRequest) for row in rows]


async def refund_requests_in_flight_of_anomaly(
    conn: asyncpg.Connection, anomaly_id: str
) -> list[RefundRequest]:
    rows = await conn.fetch(
        """SELECT * FROM refund_requests
            WHERE anomaly_id = $1 AND status IN ('requested', 'approved')""",
        anomaly_id,
    )
    return [_decode(row, RefundRequest) for row in rows]


async def update_refund_request(
    conn: asyncpg.Connection,
    request_id: str,
    *,
    status: RefundStatus,
    now: datetime,
    provider_refund_id: str | None = None,
    submitted: bool = False,
    last_error: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE refund_requests
              SET status = $2,
                  provider_refund_id = coalesce($4, provider_refund_id),
                  submitted_at = CASE WHEN $5 THEN coalesce(submitted_at, $3) ELSE submitted_at END,
                  refunded_at = CASE WHEN $2 = 'refunded' THEN $3::timestamptz END,
                  last_error = coalesce($6, last_error),
                  updated_at = $3
            WHERE id = $1""",
        request_id,
        status.value,
        now,
        provider_refund_id,
        submitted,
        None if last_error is None else last_error[:500],
    )


async def refund_requests_to_sweep(
    conn: asyncpg.Connection, *, updated_before: datetime, limit: int
) -> list[RefundRequest]:
    rows = await conn.fetch(
        """SELECT * FROM refund_requests
            WHERE status = 'approved' AND updated_at <= $1
            ORDER BY created_at LIMIT $2""",
        updated_before,
        limit,
    )
    return [_decode(row, RefundRequest) for row in rows]


async def touch_refund_request(conn: asyncpg.Connection, request_id: str, now: datetime) -> None:
    await conn.execute("UPDATE refund_requests SET updated_at = $2 WHERE id = $1", request_id, now)


async def note_refund_error(
    conn: asyncpg.Connection, request_id: str, error: str, now: datetime
) -> None:
    """Keep why the last try of a request failed; its status stays as it was."""
    await conn.execute(
        "UPDATE refund_requests SET last_error = $2, updated_at = $3 WHERE id = $1",
        request_id,
        error[:500],
        now,
    )


# --------------------------------------------------------------------------- disputes


async def insert_dispute(
    conn: asyncpg.Connection,
    *,
    dispute_id: str,
    bill_id: str,
    reason: str,
    opened_by: str,
    now: datetime,
) -> Dispute | None:
    """None when the bill already has an open dispute."""
    row = await conn.fetchrow(
        """INSERT INTO disputes (id, bill_id, reason, opened_by, opened_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (bill_id) WHERE status = 'open' DO NOTHING
           RETURNING *""",
        dispute_id,
        bill_id,
        reason,
        opened_by,
        now,
    )
    return None if row is None else _decode(row, Dispute)


async def open_dispute_of_bill(conn: asyncpg.Connection, bill_id: str) -> Dispute | None:
    row = await conn.fetchrow(
        "SELECT * FROM disputes WHERE bill_id = $1 AND status = 'open'", bill_id
    )
    return None if row is None else _decode(row, Dispute)


async def dispute(
    conn: asyncpg.Connection, dispute_id: str, *, lock: bool = False
) -> Dispute | None:
    row = await conn.fetchrow(_DISPUTE[lock], dispute_id)
    return None if row is None else _decode(row, Dispute)


async def disputes(
    conn: asyncpg.Connection, *, status: DisputeStatus | None, limit: int
) -> list[Dispute]:
    if status is None:
        rows = await conn.fetch(
            "SELECT * FROM disputes ORDER BY opened_at DESC, id DESC LIMIT $1", limit
        )
    else:
        rows = await conn.fetch(
            "SELECT * FROM disputes WHERE status = $1 ORDER BY opened_at, id LIMIT $2",
            status.value,
            limit,
        )
    return [_decode(row, Dispute) for row in rows]


async def decide_dispute(
    conn: asyncpg.Connection,
    dispute_id: str,
    *,
    status: DisputeStatus,
    by: str,
    remark: str,
    refund_fen: Fen | None,
    now: datetime,
) -> Dispute:
    row = await conn.fetchrow(
        """UPDATE disputes
              SET status = $2, decided_by = $3, decided_at = $4, remark = $5, refund_fen = $6
            WHERE id = $1 AND status = 'open'
           RETURNING *""",
        dispute_id,
        status.value,
        by,
        now,
        remark,
        refund_fen,
    )
    assert row is not None, "decide_dispute runs under the dispute's row lock"
    return _decode(row, Dispute)


async def reopen_dispute(conn: asyncpg.Connection, dispute_id: str) -> Dispute | None:
    """An approved dispute back to open (its refund failed); None when it was not approved or
    the bill has another open dispute meanwhile (that one is finance's to decide)."""
    row = await conn.fetchrow(
        """UPDATE disputes d
              SET status = 'open', decided_by = NULL, decided_at = NULL, refund_fen = NULL
            WHERE d.id = $1 AND d.status = 'approved'
              AND NOT EXISTS (SELECT 1 FROM disputes o
                               WHERE o.bill_id = d.bill_id AND o.status = 'open')
           RETURNING d.*""",
        dispute_id,
    )
    return None if row is None else _decode(row, Dispute)


# --------------------------------------------------------------------------- contactless


async def live_mandate(
    conn: asyncpg.Connection, provider: str, plate: str, *, lock: bool = False
) -> Mandate | None:
    row = await conn.fetchrow(_LIVE_MANDATE[lock], provider, plate)
    return None if row is None else _decode(row, Mandate)


async def mandate(conn: asyncpg.Connection, mandate_id: str) -> Mandate | None:
    row = await conn.fetchrow("SELECT * FROM contactless_mandates WHERE id = $1", mandate_id)
    return None if row is None else _decode(row, Mandate)


async def active_mandate_for_plate(
    conn: asyncpg.Connection, plate: str, *, lock: bool = False
) -> Mandate | None:
    """The plate's newest active mandate; ``lock`` holds it (FOR UPDATE) until the caller's
    transaction ends, so a revocation waits for, or is seen by, the caller."""
    row = await conn.fetchrow(_ACTIVE_MANDATE_FOR_PLATE[lock], plate)
    return None if row is None else _decode(row, Mandate)


async def live_mandates_of_account(
    conn: asyncpg.Connection, plate: str, account_id: str
) -> list[Mandate]:
    """The account's mandates for the plate that are not revoked, locked."""
    rows = await conn.fetch(
        "SELECT * FROM contactless_mandates WHERE plate = $1 AND account_id = $2 "
        "AND state <> 'revoked' ORDER BY id FOR UPDATE",
        plate,
        account_id,
    )
    return [_decode(r, Mandate) for r in rows]


async def mandates_of_account(conn: asyncpg.Connection, account_id: str) -> list[Mandate]:
    """The account's mandates that are not revoked (active or paused), by plate."""
    rows = await conn.fetch(
        "SELECT * FROM contactless_mandates WHERE account_id = $1 AND state <> 'revoked' "
        "ORDER BY plate, provider",
        account_id,
    )
    return [_decode(r, Mandate) for r in rows]


async def insert_mandate(
    conn: asyncpg.Connection,
    *,
    mandate_id: str,
    provider: str,
    plate: str,
    plate_color: str,
    account_id: str | None,
    payer_id: str,
    state: MandateState,
    now: datetime,
) -> Mandate:
    row = await conn.fetchrow(
        """INSERT INTO contactless_mandates
               (id, provider, plate, plate_color, account_id, payer_id, state, created_at,
                updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
           RETURNING *""",
        mandate_id,
        provider,
        plate,
        plate_color,
        account_id,
        payer_id,
        state.value,
        now,
    )
    assert row is not None
    return _decode(row, Mandate)


async def update_mandate(
    conn: asyncpg.Connection,
    mandate_id: str,
    *,
    state: MandateState,
    now: datetime,
    plate_color: str | None = None,
    account_id: str | None = None,
    payer_id: str | None = None,
) -> Mandate:
    row = await conn.fetchrow(
        """UPDATE contactless_mandates
              SET state = $2, updated_at = $3, plate_color = coalesce($4, plate_color),
                  account_id = coalesce($5, account_id), payer_id = coalesce($6, payer_id)
            WHERE id = $1
           RETURNING *""",
        mandate_id,
        state.value,
        now,
        plate_color,
        account_id,
        payer_id,
    )
    assert row is not None
    return _decode(row, Mandate)


async def deduction_of_bill(
    conn: asyncpg.Connection, bill_id: str, *, lock: bool = False
) -> Deduction | None:
    row = await conn.fetchrow(_DEDUCTION_OF_BILL[lock], bill_id)
    return None if row is None else _decode(row, Deduction)


async def deduction_of_attempt(conn: asyncpg.Connection, attempt_id: str) -> Deduction | None:
    row = await conn.fetchrow(
        "SELECT * FROM contactless_deductions WHERE attempt_id = $1", attempt_id
    )
    return None if row is None else _decode(row, Deduction)


async def insert_deduction(
    conn: asyncpg.Connection,
    *,
    deduction_id: str,
    bill_id: str,
    mandate_id: str,
    attempt_id: str,
    out_parking_no: str,
    now: datetime,
) -> Deduction:
    row = await conn.fetchrow(
        """INSERT INTO contactless_deductions
               (id, bill_id, mandate_id, attempt_id, out_parking_no, status, created_at,
                updated_at)
           VALUES ($1, $2, $3, $4, $5, 'requested', $6, $6)
           RETURNING *""",
        deduction_id,
        bill_id,
        mandate_id,
        attempt_id,
        out_parking_no,
        now,
    )
    assert row is not None
    return _decode(row, Deduction)


async def update_deduction(
    conn: asyncpg.Connection,
    deduction_id: str,
    *,
    status: DeductionStatus,
    now: datetime,
    parking_id: str | None = None,
    refusal_code: str | None = None,
    refusal_message: str | None = None,
) -> Deduction:
    row = await conn.fetchrow(
        """UPDATE contactless_deductions
              SET status = $2, updated_at = $3, parking_id = coalesce($4, parking_id),
                  refusal_code = coalesce($5, refusal_code),
                  refusal_message = coalesce($6, refusal_message)
            WHERE id = $1
           RETURNING *""",
        deduction_id,
        status.value,
        now,
        parking_id,
        refusal_code,
        None if refusal_message is None else refusal_message[:500],
    )
    assert row is not None
    return _decode(row, Deduction)


# --------------------------------------------------------------------------- audit


#: Audit rows are written by parking.audit, the one writer of audit_log.
audit = record


async def paid_by(conn: asyncpg.Connection, bill_id: str, account_id: str) -> bool:
    """Whether the account paid the bill (a payment of it that succeeded)."""
    paid: bool | None = await conn.fetchval(
        "SELECT true FROM payment_bills pb JOIN payment_attempts pa ON pa.id = pb.attempt_id "
        "WHERE pb.bill_id = $1 AND pa.payer_account_id = $2 AND pa.status = 'paid' LIMIT 1",
        bill_id,
        account_id,
    )
    return bool(paid)


async def attempt_exists(conn: asyncpg.Connection, attempt_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM payment_attempts WHERE id = $1", attempt_id))
