"""Bill use cases. Each runs in the caller's transaction (which must be open) and never commits.

A use case that changes a bill locks it, decides with ``logic``, updates it on
the condition that its status is still the one decided on, appends a
``bill_events`` row (who, why, the ledger transaction) and posts the money
movement to the ledger, all in that one transaction: a bill's status and the
ledger can never disagree, whatever is rolled back or killed.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parking.bills import logic, store
from parking.bills.model import (
    Bill,
    BillConflict,
    BillError,
    BillEvent,
    BillKind,
    BillStatus,
    InvalidAmount,
    ReceivablesCheck,
    RefundConflict,
)
from parking.ids import new_id
from parking.ledger import logic as ledger_logic
from parking.ledger import service as ledger
from parking.ledger.model import TransactionKind
from parking.money import Fen


async def open_bill(
    conn: asyncpg.Connection,
    *,
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
    actor: str = "billing",
    kind: BillKind = BillKind.STAY,
) -> Bill | None:
    """Bill a session and post its receivable (bill_opened) in the caller's transaction.

    A stay bill (the default, at the close) is idempotent on ``session_id``: a
    second call returns the existing bill unchanged (BillConflict if it names
    another lot, amount or tariff). A prepay bill (paying in the lot, quoted at
    ``closed_at``) is a new bill each call; the caller serialises them on the
    session row. A free stay (``amount_fen == 0``) creates no bill and returns
    None; the session keeps its quote.
    """
    ledger.require_transaction(conn, "open_bill")
    if amount_fen < 0:
        raise InvalidAmount(f"a bill cannot be negative, got {amount_fen} fen")
    if amount_fen == 0:
        return None
    bill = await store.insert(
        conn,
        bill_id=new_id("b", now),
        session_id=session_id,
        lot_id=lot_id,
        plate=plate,
        account_id=account_id,
        amount_fen=amount_fen,
        tariff_id=tariff_id,
        tariff_version=tariff_version,
        quote=quote,
        closed_at=closed_at,
        now=now,
        kind=kind,
    )
    if bill is None:
        existing = await store.by_session(conn, session_id)
        if existing is None:  # the row we conflicted with is committed, hence visible
            raise BillConflict(f"session {session_id} has a bill that cannot be read")
        mine = (lot_id, amount_fen, tariff_id, tariff_version)
        theirs = (existing.lot_id, existing.amount_fen, existing.tariff_id, existing.tariff_version)
        if mine != theirs:
            raise BillConflict(
                f"session {session_id} is already billed as {existing.id} "
                f"({theirs}); refusing {mine}"
            )
        return existing
    tx_id = await ledger.post(
        conn,
        ledger_logic.bill_opened(
            bill_id=bill.id, lot_id=lot_id, amount_fen=amount_fen, occurred_at=closed_at
        ),
    )
    await _record(
        conn, bill, None, BillStatus.OPEN, actor, "", now, amount_fen=amount_fen, tx_id=tx_id
    )
    return bill


async def mark_paying(
    conn: asyncpg.Connection, bill_id: str, *, actor: str, remark: str = "", now: datetime
) -> Bill:
    """A payment attempt started. Idempotent: a bill already paying is returned as is."""
    ledger.require_transaction(conn, "mark_paying")
    bill = await store.lock(conn, bill_id)
    to = logic.begin_payment(bill)
    if to is None:
        return bill
    return await _move(conn, bill, to, actor=actor, remark=remark, now=now)


async def payment_failed(
    conn: asyncpg.Connection, bill_id: str, *, actor: str, remark: str = "", now: datetime
) -> Bill:
    """The payment attempt failed or expired: the bill is open again. Idempotent."""
    ledger.require_transaction(conn, "payment_failed")
    bill = await store.lock(conn, bill_id)
    to = logic.payment_failed(bill)
    if to is None:
        return bill
    return await _move(conn, bill, to, actor=actor, remark=remark, now=now)


async def mark_paid(
    conn: asyncpg.Connection,
    bill_id: str,
    *,
    provider: str,
    payment_ref: str,
    amount_fen: Fen,
    now: datetime,
    actor: str,
    remark: str = "",
) -> Bill:
    """Record the provider's confirmed payment and post bill_paid, in the caller's transaction.

    Pays a bill at most once: concurrent calls queue on the bill's row lock,
    the first pays, the others (the same ``payment_ref``) return the paid bill
    unchanged. A different payment of a paid bill raises BillAlreadyPaid; a
    wrong amount raises AmountMismatch. Either way nothing changes. A late
    payment of a written-off bill first reverses the write-off.
    """
    ledger.require_transaction(conn, "mark_paid")
    bill = await store.lock(conn, bill_id)
    to = logic.pay(bill, amount_fen=amount_fen, provider=provider, payment_ref=payment_ref)
    if to is None:
        return bill
    if bill.status is BillStatus.WRITTEN_OFF:
        written_off = await ledger.find(conn, TransactionKind.WRITE_OFF, bill.id)
        if written_off is None:
            raise BillError(f"bill {bill.id} is written off but the ledger has no write-off")
        await ledger.reverse(
            conn, written_off.id, memo=f"bill {bill.id} paid after write-off", now=now
        )
    tx_id = await ledger.post(
        conn,
        ledger_logic.bill_paid(
            bill_id=bill.id,
            provider=provider,
            amount_fen=amount_fen,
            occurred_at=now,
            memo=f"{provider} {payment_ref}",
        ),
    )
    return await _move(
        conn,
        bill,
        to,
        actor=actor,
        remark=remark,
        now=now,
        provider=provider,
        payment_ref=payment_ref,
        paid_at=now,
        amount_fen=amount_fen,
        tx_id=tx_id,
    )


async def refund(
    conn: asyncpg.Connection,
    bill_id: str,
    *,
    amount_fen: Fen,
    provider: str,
    refund_ref: str,
    actor: str,
    remark: str,
    now: datetime,
) -> Bill:
    """Record a refund (partial or full) of a paid bill and post it, in the caller's transaction.

    Idempotent on (provider, refund_ref): the same refund again returns the
    bill unchanged (RefundConflict if it was for another bill or amount).
    Refunds never exceed what was paid (RefundExceedsAmount) and go back
    through the provider that was paid (RefundProviderMismatch).
    """
    ledger.require_transaction(conn, "refund")
    bill = await store.lock(conn, bill_id)
    posted = await ledger.find(conn, TransactionKind.REFUND, f"{provider}:{refund_ref}")
    if posted is not None:
        moved = sum(p.amount_fen for p in posted.postings if p.amount_fen > 0)
        if posted.correlation_id != bill.id or moved != amount_fen:
            raise RefundConflict(
                f"{provider} refund {refund_ref} was recorded as {moved} fen "
                f"of {posted.correlation_id}"
            )
        return bill
    to = logic.refund(bill, amount_fen=amount_fen, provider=provider)
    tx_id = await ledger.post(
        conn,
        ledger_logic.refund(
            bill_id=bill.id,
            lot_id=bill.lot_id,
            provider=provider,
            refund_ref=refund_ref,
            amount_fen=amount_fen,
            occurred_at=now,
            memo=remark,
        ),
    )
    return await _move(
        conn,
        bill,
        to,
        actor=actor,
        remark=remark,
        now=now,
        refunded_fen=bill.refunded_fen + amount_fen,
        amount_fen=amount_fen,
        tx_id=tx_id,
    )


async def write_off(
    conn: asyncpg.Connection, bill_id: str, *, actor: str, remark: str, now: datetime
) -> Bill:
    """Give up an unpaid bill (open, or disputed and upheld) and post write_off. Idempotent."""
    ledger.require_transaction(conn, "write_off")
    bill = await store.lock(conn, bill_id)
    to = logic.write_off(bill)
    if to is None:
        return bill
    tx_id = await ledger.post(
        conn,
        ledger_logic.write_off(
            bill_id=bill.id, amount_fen=bill.amount_fen, occurred_at=now, memo=remark
        ),
    )
    return await _move(
        conn,
        bill,
        to,
        actor=actor,
        remark=remark,
        now=now,
        amount_fen=bill.amount_fen,
        tx_id=tx_id,
    )


async def move_to_plate(
    conn: asyncpg.Connection,
    bill_id: str,
    *,
    plate: str,
    account_id: str | None,
    actor: str,
    remark: str,
    now: datetime,
) -> Bill:
    """Bill the right plate (and the account holding it) for an unpaid bill an operator found
    billed to a misread plate; PlateNotMovable when it cannot follow (bills.logic.move_plate).

    Moves no money: the receivable is the same, only who owes it changes. The
    bill's status is unchanged; its event says who moved it from which plate.
    In the caller's transaction; idempotent (a bill of that plate is returned as is).
    """
    ledger.require_transaction(conn, "move_to_plate")
    bill = await store.lock(conn, bill_id)
    if bill.plate == plate and bill.account_id == account_id:
        return bill
    logic.move_plate(bill)
    moved = await store.set_plate(conn, bill, plate=plate, account_id=account_id, now=now)
    if moved is None:
        raise RuntimeError(f"bill {bill.id} changed under its row lock")
    why = f"plate {bill.plate} -> {plate}: {remark}"
    await _record(conn, bill, bill.status, bill.status, actor, why[:2000], now)
    return moved


async def of_session(conn: asyncpg.Connection, session_id: str) -> list[Bill]:
    """Every bill of the session, oldest first, locked (in the caller's transaction)."""
    ledger.require_transaction(conn, "of_session")
    return await store.of_session_locked(conn, session_id)


async def dispute(
    conn: asyncpg.Connection, bill_id: str, *, actor: str, remark: str, now: datetime
) -> Bill:
    """The driver contests the bill. Moves no money. Idempotent."""
    ledger.require_transaction(conn, "dispute")
    bill = await store.lock(conn, bill_id)
    to = logic.dispute(bill)
    if to is None:
        return bill
    return await _move(conn, bill, to, actor=actor, remark=remark, now=now)


async def resolve_dispute(
    conn: asyncpg.Connection, bill_id: str, *, actor: str, remark: str, now: datetime
) -> Bill:
    """Reject a dispute: the bill returns to open, paid or refunded as its money says.

    To uphold a dispute, call ``refund`` (paid bill) or ``write_off`` (unpaid
    bill) on the disputed bill instead.
    """
    ledger.require_transaction(conn, "resolve_dispute")
    bill = await store.lock(conn, bill_id)
    to = logic.resolve_dispute(bill)
    return await _move(conn, bill, to, actor=actor, remark=remark, now=now)


async def get(conn: asyncpg.Connection, bill_id: str) -> Bill:
    return await store.get(conn, bill_id)


async def by_session(conn: asyncpg.Connection, session_id: str) -> Bill | None:
    """The session's stay bill."""
    return await store.by_session(conn, session_id)


async def prepayments(conn: asyncpg.Connection, session_id: str) -> list[Bill]:
    """The session's prepay bills (paying in the lot), oldest quote first."""
    return await store.prepayments(conn, session_id)


async def events(conn: asyncpg.Connection, bill_id: str) -> list[BillEvent]:
    """The bill's audit trail, oldest first."""
    return await store.events(conn, bill_id)


async def open_bills(
    conn: asyncpg.Connection,
    *,
    plate: str | None = None,
    account_id: str | None = None,
    limit: int = 500,
) -> list[Bill]:
    """Arrears: bills still owed (open, paying, or disputed and unpaid), oldest exit first,
    less the prepay bills of stays still under way (offers until the exit).

    Filtered by plate and/or account; with neither, the whole city's arrears.
    """
    return await store.owed(conn, plate=plate, account_id=account_id, limit=limit)


async def receivables_check(conn: asyncpg.Connection) -> ReceivablesCheck:
    """The ledger's receivables against the bills still owed.

    Equal as long as only bills post to receivables: every bill debits it
    when opened and credits it when paid or written off (a late payment of a
    written-off bill reverses the write-off first), so its balance is the sum
    of the bills that are open, paying or disputed and have no payment.

    The two sums come from one snapshot: the caller's transaction if one is
    open (use REPEATABLE READ while others write), else a read-only
    REPEATABLE READ transaction of its own, which writes nothing.
    """
    if conn.is_in_transaction():
        return await _receivables(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _receivables(conn)


async def _receivables(conn: asyncpg.Connection) -> ReceivablesCheck:
    return ReceivablesCheck(
        ledger_fen=await ledger.account_balance(conn, ledger_logic.RECEIVABLES),
        bills_fen=await store.owed_total(conn),
    )


async def receivables_equal_open_bills(conn: asyncpg.Connection) -> bool:
    return (await receivables_check(conn)).equal


async def _move(
    conn: asyncpg.Connection,
    bill: Bill,
    to: BillStatus,
    *,
    actor: str,
    remark: str,
    now: datetime,
    refunded_fen: Fen | None = None,
    provider: str | None = None,
    payment_ref: str | None = None,
    paid_at: datetime | None = None,
    amount_fen: Fen | None = None,
    tx_id: str | None = None,
) -> Bill:
    updated = await store.update(
        conn,
        bill,
        status=to,
        now=now,
        refunded_fen=refunded_fen,
        provider=provider,
        payment_ref=payment_ref,
        paid_at=paid_at,
    )
    if updated is None:
        # Unreachable while the bill is locked by store.lock in this transaction.
        raise RuntimeError(f"bill {bill.id} changed under its row lock")
    await _record(
        conn, bill, bill.status, to, actor, remark, now, amount_fen=amount_fen, tx_id=tx_id
    )
    return updated


async def _record(
    conn: asyncpg.Connection,
    bill: Bill,
    from_status: BillStatus | None,
    to: BillStatus,
    actor: str,
    remark: str,
    now: datetime,
    *,
    amount_fen: Fen | None = None,
    tx_id: str | None = None,
) -> None:
    await store.insert_event(
        conn,
        BillEvent(
            bill_id=bill.id,
            at=now,
            from_status=from_status,
            to_status=to,
            actor=actor,
            remark=remark,
            amount_fen=amount_fen,
            ledger_transaction_id=tx_id,
        ),
    )
