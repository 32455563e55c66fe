"""Use cases of sessions: recording what the lanes did, and reading it back.

Writes run in the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import msgspec

from parking.accounts import service as accounts
from parking.bills import logic as bills_logic
from parking.bills import service as bills
from parking.bills.model import BillKind, BillStatus, IllegalBillTransition
from parking.lots import service as lots
from parking.payments import decisions
from parking.plates import PlateError, normalise
from parking.sessions import store
from parking.sessions.model import SessionChange, SessionMoney, SessionStatus, SessionView


def _latest_open_per_plate(changes: Sequence[SessionChange]) -> list[SessionChange]:
    """Within one batch two opens of a plate cannot both stay open: the later entry wins."""
    latest: dict[str, SessionChange] = {}
    for change in changes:
        if change.status is not SessionStatus.OPEN or change.plate is None:
            continue
        best = latest.get(change.plate)
        key = (change.entry_at, change.id)
        if best is None or key > (best.entry_at, best.id):
            latest[change.plate] = change
    return list(latest.values())


async def record(
    conn: asyncpg.Connection,
    changes: Sequence[SessionChange],
    *,
    now: datetime | None = None,
) -> list[str]:
    """Merge what the lanes did into the sessions table (caller's transaction; idempotent).

    Facts may arrive in any order and more than once; merging is order-insensitive
    (see `SessionChange`). At most one session per plate stays open: an open
    session is superseded by a later entry of its plate, wherever it happened.

    A session that closes with a fee gets its bill and receivable in the same
    transaction (idempotent on the session); returns the ids of those bills.
    """
    if not changes:
        return []
    winners = _latest_open_per_plate(changes)
    winner_ids = {c.id for c in winners}
    by_plate = {c.plate: c.id for c in winners}
    settled: list[SessionChange] = []
    for change in changes:
        if (
            change.status is SessionStatus.OPEN
            and change.plate is not None
            and change.id not in winner_ids
        ):
            change = msgspec.structs.replace(
                change,
                status=SessionStatus.SUPERSEDED,
                superseded_by=by_plate[change.plate],
                flags=(*change.flags, "plate_elsewhere"),
            )
        settled.append(change)
    await store.ensure_months(conn, sorted({c.id for c in changes}))
    await store.supersede_older_open(conn, winners)
    # Several facts of one session in a batch: merge them one statement each,
    # since INSERT .. ON CONFLICT cannot touch a row twice in one statement.
    rounds: list[list[SessionChange]] = []
    seen: dict[str, int] = {}
    for change in settled:
        n = seen.get(change.id, 0)
        seen[change.id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(change)
    for batch in rounds:
        await store.merge(conn, batch)
    closed = [c for c in settled if c.status is SessionStatus.CLOSED]
    return await _closed(conn, closed, now or datetime.now(UTC))


async def complete_late_entries(
    conn: asyncpg.Connection, changes: Sequence[SessionChange], *, now: datetime
) -> list[str]:
    """Exits without entry completed by their entry, which reached the platform after
    them (an entry camera's backlog): each closed fact carries both ends and the fee
    priced from the entry. In the caller's transaction; idempotent (a session that
    has its entry already is left alone). Returns the ids of the bills opened."""
    await store.ensure_months(conn, sorted({c.id for c in changes}))
    done = await store.complete_without_entry(conn, changes)
    return await _closed(conn, [c for c in changes if c.id in done], now)


_NO_QUOTE = '{{"total_fen": {fee}, "itemised": false}}'
#: a session of a lot that is gone (the lots' default)
_DEFAULT_EXIT_WINDOW: Final = timedelta(minutes=15)


async def _closed(
    conn: asyncpg.Connection, closed: Sequence[SessionChange], now: datetime
) -> list[str]:
    """Bill the sessions that just closed with a fee, in the caller's transaction.

    The bill is read from the merged row, not from the fact: facts of one
    session arrive in any order, and the row holds all of them. ``open_bill``
    is idempotent on the session, so a redelivered close bills once.

    A session paid in the lot (prepay bills) is billed what is left: nothing
    when it left within the exit window of its payment, else the whole stay's
    fee less what the prepayments billed (bills.logic.due_at_exit).
    """
    if not closed:
        return []
    opened: list[str] = []
    rows = await store.closed_for_billing(conn, [c.id for c in closed])
    windows = await lots.exit_windows(conn, sorted({row["lot_id"] for row in rows}))
    for row in rows:
        plate = row["plate"]
        account = row["account_id"]
        if account is None and plate:
            account = await accounts.account_holding(conn, plate)
        # A priced close carries its itemised quote; one recorded without
        # (a hand-entered fee) still gets a bill that says so.
        quote = (row["quote"] or _NO_QUOTE.format(fee=row["fee_fen"])).encode()
        amount = row["fee_fen"]
        prepaid = await bills.prepayments(conn, row["id"])
        # A prepay bill is an offer until the exit: one nobody paid lapses now
        # (written off, so the ledger's receivable goes with it) and the stay
        # bill carries the whole fee less what was paid, so it never becomes a
        # debt that holds the car somewhere else.
        lapsed = [b for b in prepaid if bills_logic.Prepayment.of(b).offer]
        for offer in lapsed:
            await bills.write_off(
                conn, offer.id, actor="billing", remark="prepay offer lapsed at the exit", now=now
            )
        if lapsed:
            prepaid = await bills.prepayments(conn, row["id"])
        standing = bills_logic.live(prepaid)
        if standing:
            amount = bills_logic.due_at_exit(
                row["fee_fen"],
                standing,
                exit_at=row["exit_at"],
                window=windows.get(row["lot_id"], _DEFAULT_EXIT_WINDOW),
            )
            settled = sum(p.amount_fen for p in standing if not p.offer)
            quote = _with_prepaid(quote, settled, row["fee_fen"])
        bill = await bills.open_bill(
            conn,
            session_id=row["id"],
            lot_id=row["lot_id"],
            plate=plate,
            account_id=account,
            amount_fen=amount,
            tariff_id=row["tariff_id"],
            tariff_version=row["tariff_version"],
            quote=quote,
            closed_at=row["exit_at"],
            now=now,
        )
        if bill is not None:
            opened.append(bill.id)
    return opened


async def void_bills(
    conn: asyncpg.Connection, session_id: str, *, by: str, remark: str, now: datetime
) -> SessionMoney:
    """An operator voided the session: none of its bills is owed any more.

    Unpaid bills are written off (bills.write_off posts the ledger's write_off);
    paid ones are refunded in full through the provider that took the money
    (decisions.request_refund: an approved refund request, sent by the caller
    after the commit with ``decisions.submit_refunds``, else by the sweeper).
    A bill with a payment in flight refuses the void (IllegalBillTransition,
    409) until the payment has ended. In the caller's transaction; idempotent
    (written-off bills and refunds already asked are left as they are).
    """
    actor = f"operator:{by}"
    why = f"session {session_id} voided: {remark}"
    written_off: list[str] = []
    refunds: list[str] = []
    for bill in await bills.of_session(conn, session_id):
        if bill.status is BillStatus.PAYING:
            raise IllegalBillTransition(
                bill.id, bill.status, "void its session", "a payment is in flight; retry later"
            )
        if bill.paid_at is None:
            if bill.status is not BillStatus.WRITTEN_OFF:
                await bills.write_off(conn, bill.id, actor=actor, remark=why, now=now)
                written_off.append(bill.id)
            continue
        request_id = await decisions.request_refund(
            conn, bill.id, reason="停车记录作废", by=by, role="operator", remark=why, now=now
        )
        if request_id is not None:
            refunds.append(request_id)
    return SessionMoney(written_off=written_off, refunds=refunds)


async def rebill_plate(
    conn: asyncpg.Connection,
    session_id: str,
    *,
    wrong: str | None,
    right: str,
    by: str,
    remark: str,
    now: datetime,
) -> SessionMoney:
    """An operator fixed the session's misread plate ``wrong`` to ``right``: its bills follow.

    - an unpaid bill (open, disputed, written off) now bills the right plate and
      the account holding it: the wrong plate's arrears are gone, the right one owes;
    - a bill paid by a contactless deduction under the wrong plate's mandate is
      refunded in full to that payer (through the provider, sent after the commit)
      and the stay is billed again to the right plate (a ``rebill`` bill of what
      the stay kept: the amount less earlier refunds);
    - a bill with a payment in flight, or paid by a person (at the cashier), is
      refused with PlateNotMovable (409), saying what to do first: nothing changes.

    In the caller's transaction, after it changed the session's plate.
    """
    actor = f"operator:{by}"
    why = f"plate {wrong} fixed to {right}: {remark}"
    account = await accounts.account_holding(conn, right)
    moved: list[str] = []
    rebilled: list[str] = []
    refunds: list[str] = []
    for bill in await bills.of_session(conn, session_id):
        if bill.plate == right:
            continue  # billed to the right plate already (a rebill, a retried decision)
        if bill.paid_at is not None:
            deduction = await decisions.paid_by_deduction(conn, bill)
            if deduction is not None:
                kept = bill.refundable_fen
                request_id = await decisions.request_refund(
                    conn,
                    bill.id,
                    reason="车牌识别错误",
                    by=by,
                    role="operator",
                    remark=why,
                    now=now,
                )
                if request_id is not None:
                    refunds.append(request_id)
                again = await bills.open_bill(
                    conn,
                    session_id=session_id,
                    lot_id=bill.lot_id,
                    plate=right,
                    account_id=account,
                    amount_fen=kept,
                    tariff_id=bill.tariff_id,
                    tariff_version=bill.tariff_version,
                    quote=bytes(bill.quote),
                    closed_at=bill.closed_at,
                    now=now,
                    actor=actor,
                    kind=BillKind.REBILL,
                )
                if again is not None:
                    rebilled.append(again.id)
                continue
        await bills.move_to_plate(
            conn, bill.id, plate=right, account_id=account, actor=actor, remark=why, now=now
        )
        moved.append(bill.id)
    return SessionMoney(moved=moved, rebilled=rebilled, refunds=refunds)


def _with_prepaid(quote: bytes, prepaid_fen: int, stay_fen: int) -> bytes:
    """The stay's quote, saying what was paid in the lot, so the bill explains itself."""
    body = msgspec.json.decode(quote)
    if not isinstance(body, dict):
        body = {"quote": body}
    body["stay_fen"] = stay_fen
    body["prepaid_fen"] = prepaid_fen
    return msgspec.json.encode(body)


async def list_for_plate(
    conn: asyncpg.Connection, plate: str, *, limit: int = 100
) -> list[SessionView]:
    """Sessions of a plate, newest first (the plate as read or typed; normalised here)."""
    try:
        text = normalise(plate)
    except PlateError:
        text = plate.strip()
    return [
        SessionView(
            id=r["id"],
            lot_id=r["lot_id"],
            plate=r["plate"],
            status=r["status"],
            entry_at=r["entry_at"],
            exit_at=r["exit_at"],
            fee_fen=r["fee_fen"],
            tariff_id=r["tariff_id"],
            tariff_version=r["tariff_version"],
            pricing_reason=r["pricing_reason"],
            superseded_by=r["superseded_by"],
            flags=list(r["flags"]),
        )
        for r in await store.by_plate(conn, text, limit=limit)
    ]


async def lock_session(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    """The session's row (id, lot_id, plate, account_id, status, entry_at, exit_at),
    locked for the caller's transaction; None when it is not recorded (yet)."""
    return await store.lock_session(conn, session_id)


async def set_plate(conn: asyncpg.Connection, session_id: str, plate: str) -> None:
    """Correct a session's plate (caller's transaction). Raises asyncpg's
    UniqueViolationError when the plate has an open session already."""
    await store.set_plate(conn, session_id, plate)


# ------------------------------------------------------------------ a driver's sessions


async def made_by(conn: asyncpg.Connection, account_id: str) -> list[asyncpg.Record]:
    """Open sessions the account's scans made: its unplated car's (one at most), on-street
    stays it claimed (id, lot_id, plate, entry_at)."""
    return await store.made_by(conn, account_id)


async def recorded_open(
    conn: asyncpg.Connection, plates: list[str]
) -> dict[str, tuple[str, str, datetime]]:
    """plate -> (session id, lot, entry) of the plates' open sessions as recorded."""
    rows = await store.recorded_open(conn, plates)
    return {r["plate"]: (r["id"], r["lot_id"], r["entry_at"]) for r in rows}


async def history(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The account's sessions, newest first, before ``before`` (time, id): those its scans
    made, those billed to it, and its verified plates' since it bound them
    (``accounts.my_plates``), each with its stay bill."""
    held = await accounts.my_plates(conn, account_id)
    return await store.history(
        conn,
        account_id,
        before=before,
        limit=limit,
        plates=[b.plate for b in held],
        bound_at=[b.bound_at for b in held],
    )


async def entry_at(conn: asyncpg.Connection, session_id: str) -> datetime | None:
    return await store.entry_at(conn, session_id)


async def is_open(conn: asyncpg.Connection, session_id: str) -> bool | None:
    """Whether the session is open as recorded; None when it is not recorded."""
    return await store.is_open(conn, session_id)


async def unplated_open_lot(conn: asyncpg.Connection, account_id: str) -> str | None:
    """The lot of the account's open unplated session (one at most city-wide)."""
    return await store.unplated_open_lot(conn, account_id)


async def lock_unplated_open(
    conn: asyncpg.Connection, lot_id: str, account_id: str
) -> asyncpg.Record | None:
    """The account's open unplated session in the lot (id, lot_id, entry_at), locked."""
    return await store.lock_unplated_open(conn, lot_id, account_id)


async def holder_view(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    """What says whose a session is: account_id (a scan's), plate, entry_at."""
    return await store.holder_view(conn, session_id)


async def open_in_lot(conn: asyncpg.Connection, lot_id: str, plate: str) -> str | None:
    """The plate's open session in the lot, None when it has none there."""
    return await store.open_in_lot(conn, lot_id, plate)


async def lock_for_prepay(conn: asyncpg.Connection, session_id: str) -> dict[str, Any] | None:
    """The session (id, lot_id, plate, status, entry_at, exit_window: its lot's), locked
    for the caller's transaction."""
    row = await store.lock_for_prepay(conn, session_id)
    if row is None:
        return None
    window = await lots.exit_window(conn, row["lot_id"])
    return {**dict(row), "exit_window": window}


async def open_unplated(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    session_id: str,
    lot_id: str,
    entry_at: datetime,
    account_id: str,
    flags: Sequence[str],
) -> None:
    """Record an unplated car let in by the account's scan (on its own when given the
    pool). A second open one of the account raises asyncpg.UniqueViolationError."""
    await store.open_unplated(
        conn,
        session_id=session_id,
        lot_id=lot_id,
        entry_at=entry_at,
        account_id=account_id,
        flags=flags,
    )


async def stay_of_bill(
    conn: asyncpg.Connection, bill_id: str, *, review: str
) -> dict[str, Any] | None:
    """The stay a bill is for, as a contactless deduction names it: entry_at, the lot's
    name, and needs_review (an open ``review`` anomaly holds the deduction back)."""
    row = await store.stay_of_bill(conn, bill_id, review=review)
    if row is None:
        return None
    names = await lots.lot_names(conn, [row["lot_id"]])
    if row["lot_id"] not in names:
        return None
    return {**dict(row), "name": names[row["lot_id"]]}
