"""Bill SQL (and nothing else). Every function runs in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from parking.bills.model import (
    Bill,
    BillEvent,
    BillKind,
    BillStatus,
    RefundExceedsAmount,
    UnknownBill,
)
from parking.money import Fen

# asyncpg hands jsonb over as text, which Bill keeps verbatim (msgspec.Raw),
# so plain "*" serves every query. The owed condition below is spelled out in
# each query, identical to the partial indexes of migration 0003, so they serve it.


def _bill(row: asyncpg.Record) -> Bill:
    return Bill(
        id=row["id"],
        session_id=row["session_id"],
        lot_id=row["lot_id"],
        plate=row["plate"],
        account_id=row["account_id"],
        amount_fen=row["amount_fen"],
        refunded_fen=row["refunded_fen"],
        tariff_id=row["tariff_id"],
        tariff_version=row["tariff_version"],
        quote=msgspec.Raw(row["quote"].encode()),
        status=BillStatus(row["status"]),
        kind=BillKind(row["kind"]),
        provider=row["provider"],
        payment_ref=row["payment_ref"],
        paid_at=row["paid_at"],
        closed_at=row["closed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def insert(
    conn: asyncpg.Connection,
    *,
    bill_id: str,
    session_id: str,
    lot_id: str,
    plate: str | None,
    account_id: str | None,
    amount_fen: Fen,
    tariff_id: str,
    tariff_version: int,
    quote: bytes,
    closed_at: datetime,
    now: datetime,
    kind: BillKind = BillKind.STAY,
) -> Bill | None:
    """Insert a bill of the session; None when it is a stay bill and the session has one.

    ON CONFLICT DO NOTHING waits for a concurrent insert of the same session's
    stay bill and then skips, so two persisters billing one session create one
    bill. Prepayments (kind prepay) never conflict: a session may have several.
    """
    row = await conn.fetchrow(
        """INSERT INTO bills (id, session_id, lot_id, plate, account_id, amount_fen, tariff_id,
                               tariff_version, quote, closed_at, created_at, updated_at, kind)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $11, $12)
            ON CONFLICT (session_id) WHERE kind = 'stay' DO NOTHING
            RETURNING *""",
        bill_id,
        session_id,
        lot_id,
        plate,
        account_id,
        amount_fen,
        tariff_id,
        tariff_version,
        quote.decode(),
        closed_at,
        now,
        kind.value,
    )
    return None if row is None else _bill(row)


async def by_session(conn: asyncpg.Connection, session_id: str) -> Bill | None:
    """The session's stay bill (the one billed at its close)."""
    row = await conn.fetchrow(
        "SELECT * FROM bills WHERE session_id = $1 AND kind = 'stay'", session_id
    )
    return None if row is None else _bill(row)


async def prepayments(conn: asyncpg.Connection, session_id: str) -> list[Bill]:
    """The session's prepay bills, oldest quote first."""
    rows = await conn.fetch(
        "SELECT * FROM bills WHERE session_id = $1 AND kind = 'prepay' ORDER BY closed_at, id",
        session_id,
    )
    return [_bill(r) for r in rows]


async def of_session_locked(conn: asyncpg.Connection, session_id: str) -> list[Bill]:
    """Every bill of the session (stay, prepay, rebill), locked, oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM bills WHERE session_id = $1 ORDER BY created_at, id FOR UPDATE",
        session_id,
    )
    return [_bill(r) for r in rows]


async def set_plate(
    conn: asyncpg.Connection,
    bill: Bill,
    *,
    plate: str,
    account_id: str | None,
    now: datetime,
) -> Bill | None:
    """Bill ``plate`` (and its holder) instead, if the bill is still as it was read."""
    row = await conn.fetchrow(
        """UPDATE bills SET plate = $3, account_id = $4, updated_at = $5
            WHERE id = $1 AND status = $2 AND paid_at IS NULL
           RETURNING *""",
        bill.id,
        bill.status.value,
        plate,
        account_id,
        now,
    )
    return None if row is None else _bill(row)


async def get(conn: asyncpg.Connection, bill_id: str) -> Bill:
    row = await conn.fetchrow("SELECT * FROM bills WHERE id = $1", bill_id)
    if row is None:
        raise UnknownBill(bill_id)
    return _bill(row)


async def lock(conn: asyncpg.Connection, bill_id: str) -> Bill:
    """The bill, locked until the caller's transaction ends.

    Concurrent changes of one bill (ten copies of a payment notification)
    queue here, and each sees the bill as the previous one left it.
    """
    row = await conn.fetchrow("SELECT * FROM bills WHERE id = $1 FOR UPDATE", bill_id)
    if row is None:
        raise UnknownBill(bill_id)
    return _bill(row)


async def update(
    conn: asyncpg.Connection,
    bill: Bill,
    *,
    status: BillStatus,
    now: datetime,
    refunded_fen: Fen | None = None,
    provider: str | None = None,
    payment_ref: str | None = None,
    paid_at: datetime | None = None,
) -> Bill | None:
    """Move ``bill`` to ``status`` if it is still in the status it was read in.

    Returns None when another transaction changed it first. The bill is
    locked by ``lock`` before the decision, so that does not happen in this
    service; the condition is what makes the transition safe on its own.
    Payment fields are only ever set, never cleared.
    """
    try:
        row = await conn.fetchrow(
            """UPDATE bills
                   SET status = $3,
                       refunded_fen = coalesce($4, refunded_fen),
                       provider = coalesce(provider, $5),
                       payment_ref = coalesce(payment_ref, $6),
                       paid_at = coalesce(paid_at, $7),
                       updated_at = $8
                 WHERE id = $1 AND status = $2 AND refunded_fen = $9
                RETURNING *""",
            bill.id,
            bill.status.value,
            status.value,
            refunded_fen,
            provider,
            payment_ref,
            paid_at,
            now,
            bill.refunded_fen,
        )
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name == "bills_refund_within_amount" and refunded_fen is not None:
            raise RefundExceedsAmount(
                bill.id,
                refundable_fen=bill.amount_fen - bill.refunded_fen,
                requested_fen=refunded_fen - bill.refunded_fen,
            ) from exc
        raise
    return None if row is None else _bill(row)


async def insert_event(conn: asyncpg.Connection, event: BillEvent) -> None:
    await conn.execute(
        """INSERT INTO bill_events (bill_id, at, from_status, to_status, actor, remark,
                                    amount_fen, ledger_transaction_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        event.bill_id,
        event.at,
        None if event.from_status is None else event.from_status.value,
        event.to_status.value,
        event.actor,
        event.remark,
        event.amount_fen,
        event.ledger_transaction_id,
    )


async def events(conn: asyncpg.Connection, bill_id: str) -> list[BillEvent]:
    rows = await conn.fetch(
        """SELECT bill_id, at, from_status, to_status, actor, remark, amount_fen,
                  ledger_transaction_id
             FROM bill_events WHERE bill_id = $1 ORDER BY id""",
        bill_id,
    )
    return [
        BillEvent(
            bill_id=row["bill_id"],
            at=row["at"],
            from_status=None if row["from_status"] is None else BillStatus(row["from_status"]),
            to_status=BillStatus(row["to_status"]),
            actor=row["actor"],
            remark=row["remark"],
            amount_fen=row["amount_fen"],
            ledger_transaction_id=row["ledger_transaction_id"],
        )
        for row in rows
    ]


# A prepay bill of a stay still under way is an offer, not a debt: it is owed
# (its receivable is on the ledger, see owed_total) but it is nobody's arrears
# until its session closed (the close lapses it unless it is being paid); each
# query below spells that out too.
_OWED_QUERIES = {
    # (by plate, by account): one statement each rather than
    # "($1 IS NULL OR plate = $1)", which a generic plan cannot serve from the
    # partial indexes.
    (False, False): """
        SELECT * FROM bills
         WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed')
           AND (kind = 'stay' OR NOT EXISTS (
                SELECT 1 FROM sessions s WHERE s.id = bills.session_id AND s.status = 'open'))
         ORDER BY closed_at, id LIMIT $1""",
    (True, False): """
        SELECT * FROM bills
         WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed') AND plate = $2
           AND (kind = 'stay' OR NOT EXISTS (
                SELECT 1 FROM sessions s WHERE s.id = bills.session_id AND s.status = 'open'))
         ORDER BY closed_at, id LIMIT $1""",
    (False, True): """
        SELECT * FROM bills
         WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed') AND account_id = $2
           AND (kind = 'stay' OR NOT EXISTS (
                SELECT 1 FROM sessions s WHERE s.id = bills.session_id AND s.status = 'open'))
         ORDER BY closed_at, id LIMIT $1""",
    (True, True): """
        SELECT * FROM bills
         WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed')
           AND plate = $2 AND account_id = $3 AND (kind = 'stay' OR NOT EXISTS (
                SELECT 1 FROM sessions s WHERE s.id = bills.session_id AND s.status = 'open'))
         ORDER BY closed_at, id LIMIT $1""",
}


async def owed(
    conn: asyncpg.Connection, *, plate: str | None, account_id: str | None, limit: int
) -> list[Bill]:
    query = _OWED_QUERIES[plate is not None, account_id is not None]
    args: list[object] = [limit]
    if plate is not None:
        args.append(plate)
    if account_id is not None:
        args.append(account_id)
    rows = await conn.fetch(query, *args)
    return [_bill(row) for row in rows]


async def owed_total(conn: asyncpg.Connection) -> Fen:
    total = await conn.fetchval(
        "SELECT coalesce(sum(amount_fen), 0) FROM bills "
        "WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed')"
    )
    return int(total)
