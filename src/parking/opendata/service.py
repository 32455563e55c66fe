"""The public feed's use cases: every lot of the city, and its free spaces now."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parking.lots import service as lots
from parking.occupancy import store as core
from parking.occupancy.model import CoreUnreachable
from parking.opendata import datex2, logic
from parking.opendata.model import RealtimeSites, StaticSites


async def sites(conn: asyncpg.Connection) -> StaticSites:
    return logic.static_sites(await lots.every_lot(conn), await lots.companies(conn))


async def availability(
    conn: asyncpg.Connection, redis: aioredis.Redis, *, now: datetime
) -> RealtimeSites:
    """Free spaces per lot from the live core. Raises CoreUnreachable when it does not answer."""
    every = await lots.every_lot(conn)
    try:
        counts = await core.live_counts(redis, [lot.id for lot in every])
    except (RedisError, OSError) as exc:
        raise CoreUnreachable("the live occupancy core does not answer; try again") from exc
    return logic.realtime_sites(every, counts, now.replace(microsecond=0))


async def datex2_sites(conn: asyncpg.Connection, *, now: datetime) -> tuple[bytes, bytes]:
    """Every lot as a DATEX II v3 ParkingTablePublication (XML), and the register it
    tells (what makes two answers the same)."""
    every = await lots.every_lot(conn)
    told = [
        (lot.id, lot.name, lot.kind, lot.capacity, lot.latitude, lot.longitude) for lot in every
    ]
    return datex2.parking_sites(every, now), repr(told).encode()


async def datex2_status(
    conn: asyncpg.Connection, redis: aioredis.Redis, *, now: datetime
) -> tuple[bytes, bytes]:
    """Free spaces per lot as a DATEX II v3 ParkingStatusPublication (XML), and the
    counts it tells (what makes two answers the same). Raises CoreUnreachable when the
    live core does not answer."""
    every = await lots.every_lot(conn)
    try:
        counts = await core.live_counts(redis, [lot.id for lot in every])
    except (RedisError, OSError) as exc:
        raise CoreUnreachable("the live occupancy core does not answer; try again") from exc
    told = sorted((lot_id, c.capacity, c.occupied) for lot_id, c in counts.items())
    return datex2.parking_status(every, counts, now), repr(told).encode()
