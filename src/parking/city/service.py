"""The city's figures now, from the live core over the lots the caller may read."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parking.auth.model import Principal
from parking.city import logic
from parking.city.model import DistrictNow, LotNow, LotOrder, Overview
from parking.lots import service as lots
from parking.lots.model import District, Lot, LotNotFound
from parking.occupancy import store as core
from parking.occupancy.model import CoreUnreachable, LiveCount


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every lot of the city, its districts and the core's counts, as of one read."""

    lots: list[Lot]
    districts: list[District]
    counts: dict[str, LiveCount]

    def lots_now(self, who: Principal) -> list[LotNow]:
        """The lots ``who`` may read, now."""
        return [
            logic.lot_now(lot, self.counts.get(lot.id)) for lot in lots.readable_by(who, self.lots)
        ]


class Snapshots:
    """One read of the city for everyone who asks within ``max_age`` seconds: a
    dashboard's many viewers and a city app's polls cost one read a second, not one
    each (an event still shows within 2 s). Reads are single-flight."""

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self._snapshot: Snapshot | None = None
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def get(
        self,
        registers: Callable[[], Awaitable[tuple[list[Lot], list[District]]]],
        redis: aioredis.Redis,
    ) -> Snapshot:
        """Raises CoreUnreachable when the live core does not answer."""
        if self._snapshot is not None and time.monotonic() - self._read_at < self.max_age:
            return self._snapshot
        async with self._lock:
            if self._snapshot is not None and time.monotonic() - self._read_at < self.max_age:
                return self._snapshot
            every, districts = await registers()
            counts = await _counts(redis, [lot.id for lot in every])
            self._snapshot = Snapshot(lots=every, districts=districts, counts=counts)
            self._read_at = time.monotonic()
            return self._snapshot


async def registers(conn: asyncpg.Connection) -> tuple[list[Lot], list[District]]:
    """Every lot and district (what a snapshot reads from PostgreSQL)."""
    return await lots.every_lot(conn), await lots.districts(conn)


def overview(snapshot: Snapshot, who: Principal, *, now: datetime) -> Overview:
    """The city (an operator: its company's lots) now."""
    found = snapshot.lots_now(who)
    districts = {lot.district_code for lot in found}
    return logic.overview(found, snapshot.counts, len(districts), now)


def districts(snapshot: Snapshot, who: Principal) -> list[DistrictNow]:
    return logic.districts_now(snapshot.lots_now(who), snapshot.districts)


def lots_now(
    snapshot: Snapshot,
    who: Principal,
    *,
    district: str | None = None,
    order: LotOrder = LotOrder.ID,
) -> list[LotNow]:
    found = snapshot.lots_now(who)
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
    """What one ``/v1/city/stream`` subscriber sees: each tick, the lots it may read
    whose counts changed since its last tick (all of them the first time)."""

    def __init__(self, who: Principal) -> None:
        self.who = who
        self._seen: dict[str, LotNow] = {}

    def tick(self, snapshot: Snapshot) -> list[LotNow]:
        """The lots whose counts changed since the last tick."""
        now = snapshot.lots_now(self.who)
        moved = logic.changed(self._seen, now)
        self._seen = {lot.lot_id: lot for lot in now}
        return moved
