"""The city's figures now, from the live core over the lots the caller may read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parking.auth.model import Principal
from parking.city import logic
from parking.city.model import DistrictNow, LotNow, LotOrder, Overview
from parking.lots import service as lots
from parking.lots.model import Lot, LotNotFound
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


class Watch:
    """What one ``/v1/city/stream`` subscriber sees: the lots it may read (re-read every
    ``refresh_every`` ticks) and, each tick, the lots whose counts changed."""

    def __init__(self, who: Principal, *, refresh_every: int = 60) -> None:
        self.who = who
        self.refresh_every = refresh_every
        self._lots: list[Lot] = []
        self._seen: dict[str, LotNow] = {}
        self._ticks = 0
        self._counts: dict[str, LiveCount] = {}

    async def tick(
        self, conn_for_lots: Callable[[], Awaitable[list[Lot]]], redis: aioredis.Redis
    ) -> tuple[list[LotNow], list[LotNow]]:
        """(every lot now, those that changed since the last tick: all of them the first
        time). Raises CoreUnreachable when the core does not answer."""
        if self._ticks % self.refresh_every == 0:
            self._lots = lots.readable_by(self.who, await conn_for_lots())
        self._ticks += 1
        counts = await _counts(redis, [lot.id for lot in self._lots])
        now = [logic.lot_now(lot, counts.get(lot.id)) for lot in self._lots]
        moved = logic.changed(self._seen, now)
        self._seen = {lot.lot_id: lot for lot in now}
        self._counts = counts
        return now, moved

    def overview(self, found: list[LotNow], at: datetime) -> Overview:
        districts = {lot.district_code for lot in found}
        return logic.overview(found, self._counts, len(districts), at)
