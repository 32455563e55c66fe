"""What a scanned code shows before anyone logs in: the lot, the place, free spaces
now and the tariff in words. Public: nothing personal is here."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parking.lots import service as lots
from parking.occupancy import store as core
from parking.pricing import service as pricing
from parking.qr import service as qr
from parking.qr.model import QrToken
from parking.tariffs.words import describe

#: the seeded lots never close; a lot with hours of its own would carry them here
OPEN_ALL_DAY: Final = "全天24小时开放"


class CodeAbout(msgspec.Struct, frozen=True, kw_only=True):
    #: lot, lane or space
    kind: str
    lot_id: str
    lot_name: str
    district: str
    #: the lot's street address (None: its operator has not given one)
    address: str | None
    #: gated or on_street
    lot_kind: str
    capacity: int
    #: None when the live core does not answer
    free: int | None
    full: bool
    opening_hours: str
    lane_id: str | None = None
    #: lanes: in (entry) or out (exit)
    direction: str | None = None
    space_id: str | None = None
    tariff_name: str | None = None
    #: the tariff for a small car, in short sentences (empty: none in force)
    tariff: list[str] = msgspec.field(default_factory=list)
    expires_at: datetime | None = None


async def about(
    conn: asyncpg.Connection, redis: aioredis.Redis, token: QrToken, *, now: datetime
) -> CodeAbout:
    """Raises QrTargetNotFound when the code's place is gone."""
    place = await qr.place_of(conn, token.target)
    lot = await lots.find_lot(conn, place.lot_id)
    assert lot is not None  # place_of found it
    names = {d.code: d.name for d in await lots.districts(conn)}
    tariff = await pricing.tariff_in_force(conn, lot.id, now=now)
    try:
        count = (await core.live_counts(redis, [lot.id])).get(lot.id)
    except (RedisError, OSError):
        count = None
    free = None if count is None else max(0, count.capacity - count.occupied)
    return CodeAbout(
        kind=place.kind,
        lot_id=lot.id,
        lot_name=lot.name,
        district=names.get(lot.district_code, lot.district_code),
        address=lot.address,
        lot_kind=lot.kind,
        capacity=count.capacity if count is not None else lot.capacity,
        free=free,
        full=free == 0,
        opening_hours=OPEN_ALL_DAY,
        lane_id=place.lane_id,
        direction=place.direction,
        space_id=place.space_id,
        tariff_name=None if tariff is None else tariff.name,
        tariff=[] if tariff is None else describe(tariff),
        expires_at=token.expires_at,
    )
