"""The city's figures now, from the live core over the lots the caller may read."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parking.auth.model import Principal
from parking.city import logic
from parking.city.model import DistrictNow, LotNow, LotOrder, Overview
from parking.lots import service as lots
from parking.lots.model import LotNotFound
from parking.occupancy import store as core
from parking.occupancy.model import CoreUnreachable, LiveCount


async def _now(
    conn: asyncpg.Connection, redis: aioredis.Redis, who: Principal
) -> tuple[list[LotNow], dict[str, LiveCount]]:
    mine = lots.readable_by(who, await lots.every_lot(conn))
    counts = await _counts(redis, [lot.id for lot in mine])
    return [logic.lot_now(lot, counts.get(lot.id)) for lot in mine], counts


async def overview(
    conn: asyncpg.Connection, redis: aioredis.Redis, who: Principal, *, now: datetime
) -> Overview:
    """The city (an operator: its company's lots) now. Raises CoreUnreachable when the
    live core does not answer."""
    found, counts = await _now(conn, redis, who)
    districts = {lot.district_code for lot in found}
    return logic.overview(found, counts, len(districts), now)


async def districts(
    conn: asyncpg.Connection, redis: aioredis.Redis, who: Principal
) -> list[DistrictNow]:
    found, _ = await _now(conn, redis, who)
    return logic.districts_now(found, await lots.districts(conn))


async def lots_now(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    who: Principal,
    *,
    district: str | None = None,
    order: LotOrder = LotOrder.ID,
) -> list[LotNow]:
    found, _ = await _now(conn, redis, who)
    if district is not None:
        found = [lot for lot in found if lot.district_code == district]
    return logic.ordered(found, order)


async def lot_now(
    conn: asyncpg.Connection, redis: aioredis.Redis, who: Principal, lot_id: str
) -> LotNow:
    """Raises LotNotFound for a lot that does not exist or the caller may not read."""
    lot = await lots.find_lot(conn, lot_id)
    if lot is None or not lots.readable_by(who, [lot]):
        raise LotNotFound(f"lot {lot_id} does not exist")
    counts = await _counts(redis, [lot.id])
    return logic.lot_now(lot, counts.get(lot.id))


async def _counts(redis: aioredis.Redis, lot_ids: list[str]) -> dict[str, LiveCount]:
    try:
        return await core.live_counts(redis, lot_ids)
    except (RedisError, OSError) as exc:
        raise CoreUnreachable("the live occupancy core does not answer; try again") from exc
