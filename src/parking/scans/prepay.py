"""Paying in the lot (场内缴费): the open stay billed up to now as a prepayment, once per
exit window; the exit then bills only what the stay ran past it."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import asyncpg
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parking.bills import logic as bills_logic
from parking.bills import service as bills
from parking.bills.model import BillKind, BillStatus
from parking.errors import Conflict
from parking.occupancy import store as occupancy_store
from parking.occupancy.batch import PricerLike
from parking.occupancy.logic import to_ms
from parking.pricing import service as pricing
from parking.sessions import service as sessions
from parking.tariffs import quote_to_json

log = structlog.get_logger("parking.api")


class Prepayment(msgspec.Struct, frozen=True, kw_only=True):
    """Where a stay stands after paying in the lot."""

    session_id: str
    lot_id: str
    plate: str | None
    entry_at: datetime
    quoted_at: datetime
    #: the whole stay's fee up to ``quoted_at``
    stay_fen: int
    #: what the prepay bills of the stay billed together
    billed_fen: int
    #: of which paid
    paid_fen: int
    #: prepay bills still to pay (pay them with POST /v1/bills/pay)
    due_bill_ids: list[str]
    due_fen: int
    #: leave free until then (every prepayment paid); null until paid
    leave_by: datetime | None
    exit_window_s: int


class SessionEnded(Conflict):
    """The session is no longer open: its bill (if any) is in my bills."""


async def prepay(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    session_id: str,
    me: str,
    now: datetime,
    pricer: PricerLike,
) -> Prepayment:
    """Bill the open stay up to now, once per exit window (its own transaction), as
    ``me``'s prepayment. A new offer replaces the session's earlier unpaid ones (they
    lapse, written off), so there is one to pay. Raises SessionEnded."""
    async with pool.acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)
        row = await sessions.lock_for_prepay(conn, session_id)
        assert row is not None  # sessions are never deleted
        if row["status"] != "open" or row["entry_at"] is None:
            raise SessionEnded(f"session {session_id} has ended; its bill is in your bills")
        window = row["exit_window"]
        owed = await bills.prepayments(conn, session_id)
        stand = bills_logic.standing(bills_logic.live(owed), at=now, window=window)
        count = pricer.daily_grace_count(
            lot_id=row["lot_id"], plate=row["plate"], entry=row["entry_at"]
        )
        priced = pricer.price(
            lot_id=row["lot_id"],
            plate=row["plate"],
            entry=row["entry_at"],
            exit=now,
            stay_of_day=await pricing.stay_of_day(conn, count, row["plate"], row["entry_at"]),
        )
        in_window = stand.leave_by is not None and now <= stand.leave_by
        if not in_window and priced.fee_fen > stand.billed_fen:
            for offer in owed:
                if (
                    offer.status is not BillStatus.WRITTEN_OFF
                    and bills_logic.Prepayment.of(offer).offer
                ):
                    await bills.write_off(
                        conn,
                        offer.id,
                        actor=f"driver:{me}",
                        remark="prepay offer replaced by a newer one",
                        now=now,
                    )
            owed = await bills.prepayments(conn, session_id)
            stand = bills_logic.standing(bills_logic.live(owed), at=now, window=window)
        more = priced.fee_fen - stand.billed_fen
        if not in_window and more > 0 and priced.tariff_id and priced.tariff_version:
            quote = msgspec.json.decode(quote_to_json(priced.quote)) if priced.quote else {}
            await bills.open_bill(
                conn,
                session_id=session_id,
                lot_id=row["lot_id"],
                plate=row["plate"],
                account_id=me,
                amount_fen=more,
                tariff_id=priced.tariff_id,
                tariff_version=priced.tariff_version,
                quote=msgspec.json.encode(
                    {**quote, "stay_fen": priced.fee_fen, "prepaid_fen": stand.billed_fen}
                ),
                closed_at=now,
                now=now,
                actor=f"driver:{me}",
                kind=BillKind.PREPAY,
            )
            owed = await bills.prepayments(conn, session_id)
            stand = bills_logic.standing(bills_logic.live(owed), at=now, window=window)
    if row["plate"] is not None:
        try:
            await occupancy_store.set_prepaid(
                redis,
                lot_id=row["lot_id"],
                plate=row["plate"],
                session_id=session_id,
                billed_fen=stand.settled_fen,
                leave_by_ms=None if stand.leave_by is None else to_ms(stand.leave_by),
            )
        except RedisError as exc:  # only the exit's display reads it; the bill is right anyway
            log.warning("prepaid_hint_failed", session_id=session_id, error=repr(exc))
    due = [
        b for b in owed if b.paid_at is None and b.status in (BillStatus.OPEN, BillStatus.PAYING)
    ]
    return Prepayment(
        session_id=session_id,
        lot_id=row["lot_id"],
        plate=row["plate"],
        entry_at=row["entry_at"],
        quoted_at=now,
        stay_fen=priced.fee_fen,
        billed_fen=stand.billed_fen,
        paid_fen=sum(b.amount_fen for b in owed if b.paid_at is not None),
        due_bill_ids=[b.id for b in due],
        due_fen=sum(b.amount_fen for b in due),
        leave_by=stand.leave_by,
        exit_window_s=int(window.total_seconds()),
    )
