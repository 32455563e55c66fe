"""A driver's open stays now, each with what leaving now would cost (the app's home
screen, ``GET /v1/me/sessions/current``).

Which stays are mine is the accounts' rule (``accounts.service.my_plates``): the
stays my scans made, and those of my verified plates that began after I bound
them (one that began before is the earlier holder's), read through this
worker's copy of what each account holds (``parking.sessions.mine``, at most
1 s behind a change made on another worker). Where a plate's car is
comes from the core in Redis (the lane's own state, there the moment the barrier
opens) and from PostgreSQL when the plate's shard is not loaded or Redis does not
answer; an unplated car's stay is written to PostgreSQL by the scan itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parking.occupancy import logic, store
from parking.occupancy.model import CurrentSession
from parking.pricing import Pricer
from parking.pricing import service as pricing
from parking.pricing.model import PricingError
from parking.sessions import mine
from parking.sessions import service as sessions

#: plate -> (session id, lot, entry ms)
Stays = dict[str, tuple[str, str, int]]


async def current(
    pool: asyncpg.Pool, redis: aioredis.Redis, pricer: Pricer, account_id: str, *, now: datetime
) -> list[CurrentSession]:
    """The account's open stays, plated ones by plate, then its unplated ones.

    Reads only; a pooled connection is held for the PostgreSQL reads, never
    across the Redis round trip."""
    # The hot path of the app's home screen. What the account holds comes from
    # this worker's copy (parking.sessions.mine: no PostgreSQL round trip while
    # it vouches for itself), where its plates' cars are from the core in Redis,
    # and each stay's fee from the pricer's kept fees (priced again only once
    # the price can have moved, parking.pricing.live).
    copy = mine.copy_of(redis)
    if copy is not None:
        held, made = await copy.mine(pool, account_id)
    else:
        async with pool.acquire() as proxy:
            held, made = await mine.read(cast(asyncpg.Connection, proxy), account_id)
    unplated = [m for m in made if m.plate is None]
    ids = {m.id for m in made}
    plates = sorted(set(held) | {m.plate for m in made if m.plate is not None})
    if not plates and not unplated:
        return []
    open_now, source = await _open_stays(pool, redis, plates) if plates else ({}, {})
    shown = {
        plate: stay
        for plate, stay in sorted(open_now.items())
        if stay[0] in ids or (plate in held and logic.from_ms(stay[2]) >= held[plate].bound_at)
    }
    index = await _stays_of_day(pool, pricer, shown, now)
    items = [
        quote_now(
            pricer,
            session_id=sid,
            plate=plate,
            lot_id=lot_id,
            entry=logic.from_ms(entry_ms),
            now=now,
            source=source[plate],
            stay_of_day=index.get(plate, 1),
        )
        for plate, (sid, lot_id, entry_ms) in shown.items()
    ]
    items += [
        quote_now(
            pricer,
            session_id=m.id,
            plate=None,
            lot_id=m.lot_id,
            entry=m.entry_at,
            now=now,
            source="record",
        )
        for m in unplated
    ]
    return items


async def _open_stays(
    pool: asyncpg.Pool, redis: aioredis.Redis, plates: list[str]
) -> tuple[Stays, dict[str, str]]:
    """The plates' open stays and where each was read ("live" or "record")."""
    try:
        found = await store.open_stays(redis, plates)
        return found, dict.fromkeys(found, "live")
    except store.ShardsNotLoaded as partial:
        found = dict(partial.found)
        source = dict.fromkeys(found, "live")
        recorded = await _recorded(pool, partial.plates)
        found.update(recorded)
        source.update(dict.fromkeys(recorded, "record"))
        return found, source
    except (RedisError, OSError, TimeoutError):
        recorded = await _recorded(pool, plates)
        return recorded, dict.fromkeys(recorded, "record")


async def _stays_of_day(
    pool: asyncpg.Pool, pricer: Pricer, stays: Stays, now: datetime
) -> dict[str, int]:
    """Each stay's index of the day, for the few whose price depends on it (a new-energy
    plate under ``nev.daily_grace``): a PostgreSQL read only for those. A stay whose
    kept fee still holds and does not depend on it needs nothing."""
    wanted = []
    for plate, (sid, lot_id, entry_ms) in stays.items():
        entry = logic.from_ms(entry_ms)
        held = pricer.held_fee(
            session_id=sid, lot_id=lot_id, plate=plate, entry=entry, at=max(entry, now)
        )
        if held is not None:
            continue
        count = pricer.daily_grace_count(lot_id=lot_id, plate=plate, entry=entry)
        if count is not None:
            wanted.append((plate, count, entry))
    if not wanted:
        return {}
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        return {
            plate: await pricing.stay_of_day(conn, count, plate, entry)
            for plate, count, entry in wanted
        }


async def _recorded(pool: asyncpg.Pool, plates: list[str]) -> Stays:
    async with pool.acquire() as proxy:
        found = await sessions.recorded_open(cast(asyncpg.Connection, proxy), plates)
    return {p: (sid, lot, logic.to_ms(at)) for p, (sid, lot, at) in found.items()}


def quote_now(
    pricer: Pricer,
    *,
    session_id: str,
    plate: str | None,
    lot_id: str,
    entry: datetime,
    now: datetime,
    source: str,
    stay_of_day: int = 1,
) -> CurrentSession:
    """The stay with its fee if it ended now; a stay the lot cannot price says why."""
    try:
        fee = pricer.live_fee(
            session_id=session_id,
            lot_id=lot_id,
            plate=plate,
            entry=entry,
            at=max(entry, now),
            stay_of_day=stay_of_day,
        )
    except PricingError as exc:
        fen, tariff_id, version, reason = None, None, None, f"cannot price: {exc}"
    else:
        fen, tariff_id, version, reason = fee.fee_fen, fee.tariff_id, fee.tariff_version, fee.reason
    return CurrentSession(
        session_id=session_id,
        plate=plate,
        lot_id=lot_id,
        entry_at=entry,
        quoted_at=now,
        fee_fen=fen,
        tariff_id=tariff_id,
        tariff_version=version,
        pricing_reason=reason,
        source=source,
    )
