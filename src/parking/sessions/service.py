"""Use cases of sessions: recording what the lanes did, and reading it back.

Writes run in the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec

from parking.accounts import service as accounts
from parking.bills import logic as bills_logic
from parking.bills import service as bills
from parking.plates import PlateError, normalise
from parking.sessions import store
from parking.sessions.model import SessionChange, SessionStatus, SessionView


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


_NO_QUOTE = '{{"total_fen": {fee}, "itemised": false}}'


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
    for row in await store.closed_for_billing(conn, [c.id for c in closed]):
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
                row["fee_fen"], standing, exit_at=row["exit_at"], window=row["exit_window"]
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
