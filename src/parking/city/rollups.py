"""The rollup job's use cases: refresh the hours marked as changed (and this hour and
the last), the business days they fall in, and this hour's live samples (occupancy
from the core, devices heard, the gateway's lane latency histogram).

One run is one transaction: the marks it took come back if it fails. Runs are
serialised on an advisory lock, so a second job waits its turn instead of doubling
the work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, cast

import asyncpg
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parking.city import logic, store
from parking.city.model import ARREARS_AFTER, LANE_BOUNDS_MS, Step
from parking.lots import service as lots
from parking.lots.model import Lot
from parking.occupancy import store as core

log = structlog.get_logger("parking.city")

#: the advisory lock key of the rollup job (one run at a time, city wide)
LOCK_KEY: Final = 0x63_69_74_79  # "city"


@dataclass
class Refreshed:
    hours: int = 0
    days: int = 0
    #: the live samples were taken (False: the core did not answer)
    sampled: bool = False
    lane_hours: int = 0
    seconds: float = 0.0
    marked: int = 0


async def refresh(
    pool: asyncpg.Pool,
    redis: aioredis.Redis | None,
    *,
    now: datetime,
    silent_after: timedelta,
    progress: Callable[[int, int], None] | None = None,
) -> Refreshed:
    """One run of the job. ``redis`` None: no live samples (a backfill)."""
    started = time.monotonic()
    report = Refreshed()
    async with pool.acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        marked = await store.take_changes(conn)
        report.marked = len(marked)
        hours = logic.hours_to_refresh(marked, now)
        every = await lots.every_lot(conn)
        for done, hour in enumerate(hours, start=1):
            await refresh_hour(conn, hour, every, now=now)
            if progress is not None:
                progress(done, len(hours))
        report.hours = len(hours)
        if redis is not None:
            report.sampled = await _sample(conn, redis, every, now=now, silent_after=silent_after)
            report.lane_hours = await _lane(conn, redis, now=now)
        for day in logic.days_of(hours):
            await refresh_day(conn, day, every, now=now)
            report.days += 1
    report.seconds = time.monotonic() - started
    return report


async def refresh_hour(
    conn: asyncpg.Connection, hour: datetime, every: list[Lot], *, now: datetime
) -> None:
    """Recompute one hour of every scope from the source rows."""
    end = hour + timedelta(hours=1)
    per_lot = await store.lot_counts(conn, hour, end, now=now, arrears_after=ARREARS_AFTER)
    medians = await store.stay_medians(conn, hour, end, every)
    rows = logic.roll_up_hour([dict(r) for r in per_lot], every, medians, hour)
    await store.save_counted(conn, Step.HOUR, hour, rows, now)


async def refresh_day(
    conn: asyncpg.Connection, day: datetime, every: list[Lot], *, now: datetime
) -> None:
    """A business day from its hours (and the medians of its own stays)."""
    end = day + timedelta(days=1)
    hours = await store.hours_of(conn, day, end)
    medians = await store.stay_medians(conn, day, end, every)
    await store.save_day(conn, logic.roll_up_day(hours, medians, day), now)


async def _sample(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    every: list[Lot],
    *,
    now: datetime,
    silent_after: timedelta,
) -> bool:
    try:
        counts = await core.live_counts(redis, [lot.id for lot in every])
        heard = await core.heard(redis)
    except (RedisError, OSError) as exc:
        log.warning("rollup_sample_skipped", error=f"{type(exc).__name__}: {exc}")
        return False
    registered = [
        (r["device_id"], r["lot_id"], r["kind"]) for r in await store.registered_devices(conn)
    ]
    _, per_lot = logic.device_health(registered, heard, now=now, silent_after=silent_after)
    hour = logic.hour_of(now)
    await store.save_sampled(conn, hour, logic.samples(every, counts, per_lot, hour), now)
    return True


async def _lane(conn: asyncpg.Connection, redis: aioredis.Redis, *, now: datetime) -> int:
    """The gateway's lane latency histograms of this hour and the last, copied."""
    saved = 0
    current = logic.hour_of(now)
    for hour in (current - timedelta(hours=1), current):
        try:
            counts = await core.lane_latency(redis, int(hour.timestamp()), len(LANE_BOUNDS_MS) + 1)
        except (RedisError, OSError) as exc:
            log.warning("rollup_lane_skipped", error=f"{type(exc).__name__}: {exc}")
            return saved
        if counts is not None:
            await store.save_lane_buckets(conn, hour, counts, now)
            saved += 1
    return saved


async def backfill(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
    """Mark every hour of [start, end) for the next run (after an import, say)."""
    hours = logic.buckets(Step.HOUR, start, end)
    await store.mark(conn, hours)
    return len(hours)
