"""A driver's open stays now, each with what leaving now would cost (the app's home
screen, ``GET /v1/me/sessions/current``).

Which stays are mine is the accounts' rule (``accounts.service.my_plates``): the
stays my scans made, and those of my verified plates that began after I bound
them (one that began before is the earlier holder's). Where a plate's car is
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

from parking.accounts import service as accounts
from parking.occupancy import logic, store
from parking.occupancy.model import CurrentSession
from parking.pricing import Pricer
from parking.pricing import service as pricing
from parking.pricing.model import PricingError
from parking.sessions import service as sessions

#: plate -> (session id, lot, entry ms)
Stays = dict[str, tuple[str, str, int]]


async def current(
    pool: asyncpg.Pool, redis: aioredis.Redis, pricer: Pricer, account_id: str, *, now: datetime
) -> list[CurrentSession]:
    """The account's open stays, plated ones by plate, then its unplated ones.

    Reads only; a pooled connection is held for the PostgreSQL reads, never
    across the Redis round trip."""
    # The hot path of the app's home screen: one indexed read for my verified
    # plates (not the vehicle views, which also derive each plate's class) and
    # one for the sessions my scans made (sessions_account_idx); then Redis.
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        held = {b.plate: b for b in await accounts.my_plates(conn, account_id)}
        made = await sessions.made_by(conn, account_id)
    unplated = [r for r in made if r["plate"] is None]
    mine = {r["id"] for r in made}
    plates = sorted(set(held) | {r["plate"] for r in made if r["plate"] is not None})
    if not plates and not unplated:
        return []
    open_now, source = await _open_stays(pool, redis, plates) if plates else ({}, {})
    shown = {
        plate: stay
        for plate, stay in sorted(open_now.items())
        if stay[0] in mine or (plate in held and logic.from_ms(stay[2]) >= held[plate].bound_at)
    }
    index = await _stays_of_day(pool, pricer, shown)
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
            session_id=r["id"],
            plate=None,
            lot_id=r["lot_id"],
            entry=r["entry_at"],
            now=now,
            source="record",
        )
        for r in unplated
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


async def _stays_of_day(pool: asyncpg.Pool, pricer: Pricer, stays: Stays) -> dict[str, int]:
    """Each stay's index of the day, for the few whose price depends on it (a new-energy
    plate under ``nev.daily_grace``): a PostgreSQL read only for those."""
    wanted = []
    for plate, (_sid, lot_id, entry_ms) in stays.items():
        entry = logic.from_ms(entry_ms)
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
        priced = pricer.price(
            lot_id=lot_id, plate=plate, entry=entry, exit=max(entry, now), stay_of_day=stay_of_day
        )
    except PricingError as exc:
        fee, tariff, reason = None, None, f"cannot price: {exc}"
    else:
        fee, tariff, reason = priced.fee_fen, priced, priced.reason
    return CurrentSession(
        session_id=session_id,
        plate=plate,
        lot_id=lot_id,
        entry_at=entry,
        quoted_at=now,
        fee_fen=fee,
        tariff_id=tariff.tariff_id if tariff is not None else None,
        tariff_version=tariff.tariff_version if tariff is not None else None,
        pricing_reason=reason,
        source=source,
    )
