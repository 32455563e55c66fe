"""Sessions and the audit log by month (migration 0027), as the platform's role writes
them: a month's partition is made on demand (by the owner's function: the role owns
nothing), a session never leaves the partition its id names, the city-wide rules on
open sessions hold across months, and the audit log is append-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from parking import audit
from parking.ids import new_id
from parking.occupancy import records
from parking.sessions import service, store
from parking.sessions.model import SessionChange, SessionStatus

LOT = "GZ-DEMO-01"
PLATE = "赣B0M027"
AUTUMN = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
#: a month no migration made (the migrations make 2026 and 2027)
LATER = datetime(2031, 3, 2, 9, 30, tzinfo=UTC)


async def _home(conn: asyncpg.Connection, table: str, where: str, *args: object) -> str:
    return await conn.fetchval(
        f"SELECT tableoid::regclass::text FROM {table} WHERE {where}",
        *args,
    )


async def test_session_ids_name_their_month_in_sql_as_in_python(
    city_db: asyncpg.Connection,
) -> None:
    for at in (AUTUMN, LATER, datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
               datetime(2027, 1, 1, tzinfo=UTC)):  # fmt: skip
        sid = new_id("s", at)
        month = await city_db.fetchval("SELECT session_id_month($1)", sid)
        assert month == at.date().replace(day=1), sid
        floor = await city_db.fetchval("SELECT session_id_floor($1::date)", at.date())
        first = datetime(at.year, at.month, 1, tzinfo=UTC)
        assert floor == new_id("s", first)[:12] <= sid
    assert await city_db.fetchval("SELECT session_id_month('s-ret-old')") is None


async def test_the_platform_role_makes_months_and_one_open_session_per_plate_holds_across_them(
    city_db: asyncpg.Connection,
) -> None:
    db = city_db
    assert await db.fetchval("SELECT current_user") == "parking_app"
    first, second = new_id("s", AUTUMN), new_id("s", LATER)
    entry = SessionChange(
        id=first,
        lot_id=LOT,
        status=SessionStatus.OPEN,
        plate=PLATE,
        plate_raw=PLATE,
        entry_at=AUTUMN,
        entry_device_id="g1",
        entry_seq=1,
    )
    later = msgspec.structs.replace(entry, id=second, entry_at=LATER, entry_device_id="g2")
    async with db.transaction():
        await service.record(db, [entry])
    async with db.transaction():
        await service.record(db, [later])  # its month made by the platform's own role
    assert await _home(db, "sessions", "id = $1", first) == "sessions_2026_11"
    assert await _home(db, "sessions", "id = $1", second) == "sessions_2031_03"
    # the later entry superseded the open one in the other month
    rows = await db.fetch("SELECT id, status, superseded_by FROM sessions ORDER BY id")
    assert [tuple(r) for r in rows] == [(first, "superseded", second), (second, "open", None)]
    assert await db.fetchval("SELECT array_agg(id) FROM sessions_open") == [second]
    # a second open session of the plate, in any month, is refused by the city-wide rule
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await db.execute(
            "INSERT INTO sessions (id, lot_id, plate, status, entry_at) "
            "VALUES ($1, $2, $3, 'open', $4)",
            new_id("s", AUTUMN), LOT, PLATE, AUTUMN + timedelta(days=1),
        )  # fmt: skip
    assert refused.value.constraint_name == "sessions_one_open_per_plate"
    # its exit: the merge by id finds the row in its month, the plate is free again
    leaving = SessionChange(id=second, lot_id=LOT, status=SessionStatus.CLOSED, plate=PLATE,
                            entry_at=LATER, exit_at=LATER + timedelta(hours=2),
                            exit_device_id="g3", exit_seq=1, fee_fen=0)  # fmt: skip
    async with db.transaction():
        await service.record(db, [leaving], now=LATER + timedelta(hours=2))
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE id = $1", second) == 1
    assert await db.fetchval("SELECT count(*) FROM sessions_open") == 0
    assert await db.fetchval("SELECT status FROM sessions WHERE id = $1", second) == "closed"


async def test_one_open_unplated_car_per_account_and_no_well_formed_id_outside_its_month(
    city_db: asyncpg.Connection,
) -> None:
    db = city_db
    account = new_id("acc", AUTUMN)
    await db.execute(
        "INSERT INTO accounts (id, phone, created_at) VALUES ($1, '+8613800000270', $2)",
        account, AUTUMN,
    )  # fmt: skip
    await store.open_unplated(db, session_id=new_id("s", AUTUMN), lot_id=LOT, entry_at=AUTUMN,
                              account_id=account, flags=[])  # fmt: skip
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await store.open_unplated(db, session_id=new_id("s", LATER), lot_id=LOT,
                                  entry_at=LATER, account_id=account, flags=[])  # fmt: skip
    assert refused.value.constraint_name == "sessions_one_open_unplated_per_account"
    # a well-formed id of a month not made yet may not fall into the catch-all partition
    # (that month's partition could never be made again)
    with pytest.raises(asyncpg.CheckViolationError, match="sessions_unsorted_names_no_month"):
        await db.execute(
            "INSERT INTO sessions (id, lot_id, status, exit_at, fee_fen) "
            "VALUES ($1, $2, 'closed', $3, 0)",
            new_id("s", datetime(2033, 1, 5, tzinfo=UTC)), LOT, AUTUMN,
        )  # fmt: skip


async def test_passage_months_past_2027_are_made_by_the_platform_role(
    city_db: asyncpg.Connection,
) -> None:
    async with city_db.transaction():
        await records.ensure_partitions(city_db, [datetime(2031, 3, 1, tzinfo=UTC)])
    made = await city_db.fetchval(
        "SELECT array_agg(relname ORDER BY relname) FROM pg_class "
        "WHERE relname IN ('passages_2031_03', 'space_events_2031_03')"
    )
    assert made == ["passages_2031_03", "space_events_2031_03"]


async def test_the_audit_log_makes_its_months_and_is_append_only(
    city_db: asyncpg.Connection,
) -> None:
    db = city_db
    await audit.record(db, at=LATER, actor="op-1", role="operator", action="set_tariff",
                       target="lot:GZ-DEMO-01", details={"tariff": "x"})  # fmt: skip
    assert await _home(db, "audit_log", "at = $1", LATER) == "audit_log_2031_03"
    for statement in (
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
        "UPDATE audit_log_2031_03 SET actor = 'nobody'",
        "DELETE FROM audit_log_2031_03",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute(statement)
    assert await db.fetchval("SELECT actor FROM audit_log WHERE at = $1", LATER) == "op-1"
