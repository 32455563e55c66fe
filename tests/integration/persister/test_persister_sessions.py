"""Session facts merge the same whatever order several persisters write them in."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import asyncpg

from parking.sessions import service
from parking.sessions.model import SessionChange, SessionStatus

T = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def facts() -> list[SessionChange]:
    return [
        SessionChange(
            id="s-a",
            lot_id="GZ-DEMO-01",
            status=SessionStatus.OPEN,
            plate="赣B1",
            plate_raw="赣B1",
            entry_at=T,
            entry_device_id="g1",
            entry_seq=1,
        ),
        SessionChange(
            id="s-a",
            lot_id="GZ-DEMO-01",
            status=SessionStatus.CLOSED,
            plate="赣B1",
            entry_at=T,
            exit_at=T + timedelta(hours=1),
            exit_device_id="g2",
            exit_seq=1,
            fee_fen=500,
            tariff_id="suizhou-zone1",
            tariff_version=1,
            pricing_reason="tariff",
            quote=b'{"total_fen": 500}',
        ),
        SessionChange(
            id="s-b",
            lot_id="GZ-ZG-0001",
            status=SessionStatus.OPEN,
            plate="赣B1",
            entry_at=T + timedelta(hours=2),
            entry_device_id="g3",
            entry_seq=1,
        ),
        SessionChange(
            id="s-c",
            lot_id="GZ-ZG-0002",
            status=SessionStatus.OPEN,
            plate="赣B1",
            entry_at=T + timedelta(hours=3),
            entry_device_id="g4",
            entry_seq=1,
        ),
        SessionChange(
            id="s-b",
            lot_id="GZ-ZG-0001",
            status=SessionStatus.SUPERSEDED,
            plate="赣B1",
            entry_at=T + timedelta(hours=2),
            superseded_by="s-c",
            flags=("plate_elsewhere",),
        ),
    ]


async def _state(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT id, status, fee_fen, exit_at, superseded_by FROM sessions ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_session_facts_give_the_same_rows_in_any_order_and_any_batching(
    city_db: asyncpg.Connection,
) -> None:
    db = city_db
    expected = [
        ("s-a", "closed", 500, T + timedelta(hours=1), None),
        ("s-b", "superseded", None, None, "s-c"),
        ("s-c", "open", None, None, None),
    ]
    for order in itertools.islice(itertools.permutations(facts()), 0, 120, 7):
        async with db.transaction():
            await db.execute("DELETE FROM sessions")
            # one fact per transaction, as separate persister batches would write them
            for fact in order:
                await service.record(db, [fact])
            assert await _state(db) == expected, order
        async with db.transaction():
            await db.execute("DELETE FROM sessions")
            await service.record(db, list(order))
            assert await _state(db) == expected, order
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE status = 'open'") == 1
    # However often its close was recorded, the closed session was billed once,
    # with its receivable in the ledger.
    bills = await db.fetch("SELECT session_id, amount_fen, lot_id, plate FROM bills")
    assert [tuple(b) for b in bills] == [("s-a", 500, "GZ-DEMO-01", "赣B1")]
    assert (
        await db.fetchval("SELECT count(*) FROM ledger_transactions WHERE kind = 'bill_opened'")
        == 1
    )
    assert (
        await db.fetchval(
            "SELECT sum(amount_fen) FROM ledger_postings WHERE account_code = 'receivables'"
        )
        == 500
    )
