"""The lanes learn what a plate owes the moment PostgreSQL commits it (OwedWatch:
LISTEN on the bills' NOTIFY), against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as aioredis

from parking.bills import service as bills
from parking.bills.model import BillKind
from parking.occupancy import keys, plate_flags, rebuild, store
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

DEMO = "GZ-DEMO-01"
PLATE = "赣B0W001"


async def until(check: object, within: float = 10.0) -> None:
    assert callable(check)
    for _ in range(int(within * 20)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def arrears(redis: aioredis.Redis) -> str | None:
    value = (await store.plate_entry(redis, PLATE)).get("arrears")
    return value or None


async def a_bill(conn: asyncpg.Connection, *, kind: BillKind = BillKind.STAY, sid: str = "") -> str:
    row = await conn.fetchrow("SELECT tariff_id, version FROM tariff_versions LIMIT 1")
    assert row is not None
    now = datetime.now(UTC)
    async with conn.transaction():
        bill = await bills.open_bill(
            conn,
            session_id=sid or f"s-owed-{now.timestamp()}",
            lot_id=DEMO,
            plate=PLATE,
            account_id=None,
            amount_fen=500,
            tariff_id=row["tariff_id"],
            tariff_version=row["version"],
            quote=b"{}",
            closed_at=now,
            now=now,
            kind=kind,
        )
    assert bill is not None
    return bill.id


async def pay(conn: asyncpg.Connection, bill_id: str) -> None:
    async with conn.transaction():
        await bills.mark_paid(
            conn,
            bill_id,
            provider="sandbox",
            payment_ref=f"o-{bill_id}",
            amount_fen=500,
            now=datetime.now(UTC),
            actor="test",
        )


@pytest.fixture
async def watching(
    city_db_url: str, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> AsyncIterator[plate_flags.OwedWatch]:
    await rebuild.rebuild(city_db, redis_client, now=datetime.now(UTC), force=True)
    flag_sync = plate_flags.FlagSync()
    caught_up = asyncio.Event()

    async def catch_up(conn: asyncpg.Connection) -> None:
        await flag_sync.run(conn, redis_client, datetime.now(UTC))
        caught_up.set()

    watch = plate_flags.OwedWatch(
        city_db_url, redis_client, lambda: datetime.now(UTC), catch_up, keepalive_s=0.5
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(watch.run(stopping))
    await asyncio.wait_for(caught_up.wait(), 10)
    try:
        yield watch
    finally:
        stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def test_a_new_bill_flags_the_plate_and_paying_lifts_it_at_once(
    watching: plate_flags.OwedWatch, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    assert await arrears(redis_client) is None
    bill_id = await a_bill(city_db)

    async def flagged() -> bool:
        return await arrears(redis_client) is not None

    await until(flagged)
    await pay(city_db, bill_id)

    async def lifted() -> bool:
        return await arrears(redis_client) is None

    await until(lifted)


async def test_a_change_made_while_nobody_listened_is_caught_up_on_start(
    city_db_url: str, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    await rebuild.rebuild(city_db, redis_client, now=datetime.now(UTC), force=True)
    await a_bill(city_db)  # no listener yet
    assert await arrears(redis_client) is None

    async def catch_up(conn: asyncpg.Connection) -> None:
        await plate_flags.FlagSync().run(conn, redis_client, datetime.now(UTC))

    stopping = asyncio.Event()
    task = asyncio.create_task(
        plate_flags.OwedWatch(
            city_db_url, redis_client, lambda: datetime.now(UTC), catch_up, keepalive_s=0.5
        ).run(stopping)
    )
    try:

        async def flagged() -> bool:
            return await arrears(redis_client) is not None

        await until(flagged)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


async def test_a_paid_prepayment_reaches_the_exit_display_hint(
    watching: plate_flags.OwedWatch, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    sid = "s-owed-prepay-1"
    async with city_db.transaction():
        await sessions.record(
            city_db,
            [
                SessionChange(
                    id=sid,
                    lot_id=DEMO,
                    status=SessionStatus.OPEN,
                    plate=PLATE,
                    entry_at=datetime.now(UTC),
                )
            ],
        )
    bill_id = await a_bill(city_db, kind=BillKind.PREPAY, sid=sid)
    await pay(city_db, bill_id)

    async def hinted() -> bool:
        value = await redis_client.get(keys.prepaid(DEMO, PLATE))
        return (
            value is not None
            and value.decode().startswith(f"{sid}|500|")
            and not value.decode().endswith("|0")
        )

    await until(hinted)
