"""Seeding the synthetic city."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from parking.lots import service as lots
from parking.pricing import service as pricing
from parking.seed import city, store
from parking.tariffs.calendar import Calendar, decode_calendar

# Seeded tariff versions apply to every stay since the start of 2026 (local time).
EFFECTIVE_FROM = datetime(2026, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai"))


class _TariffHead(msgspec.Struct):
    id: str
    name: str


def seed_calendars() -> list[Calendar]:
    """The calendars shipped with the seed (the State Council's notices that are public)."""
    folder = resources.files("parking.seed") / "calendars"
    return [
        decode_calendar(entry.read_bytes())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]


async def _write_calendars(conn: asyncpg.Connection, now: datetime) -> None:
    for calendar in seed_calendars():
        await pricing.ship_calendar(conn, calendar, now=now)


def seed_tariffs() -> list[tuple[str, str, bytes]]:
    """(id, name, document) of every tariff shipped with the seed."""
    found: list[tuple[str, str, bytes]] = []
    folder = resources.files("parking.seed") / "tariffs"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        raw = entry.read_bytes()
        head = msgspec.json.decode(raw, type=_TariffHead)
        found.append((head.id, head.name, raw))
    return found


async def seed(
    conn: asyncpg.Connection, *, city_seed: int, progress: store.Progress
) -> dict[str, int]:
    """Write the city (idempotent: a re-run changes nothing) and return the counts."""
    planned = city.build(city_seed)
    async with conn.transaction():
        await store.write_registers(
            conn, seed_tariffs(), effective_from=EFFECTIVE_FROM, progress=progress
        )
        await _write_calendars(conn, EFFECTIVE_FROM)
        # A seeded lot stored before companies existed has no owner yet: it gets
        # its seeded one. A lot that has an owner keeps it (the seed never moves a lot).
        await lots.add_missing(conn, [p.lot for p in planned])
        progress(f"lots: {len(planned)}")
        await lots.add_missing_lanes(conn, [lane for p in planned for lane in p.lane_views()])
        await store.write_tariff_assignments(conn, planned)
        progress("lanes and tariff assignments written")
        await lots.add_missing_spaces(
            conn,
            ((p.id, space) for p in planned for space in p.space_ids()),
            progress=lambda n: progress(f"spaces: {n}"),
        )
    return {**await lots.place_counts(conn), "tariffs": await store.tariff_count(conn)}


async def is_empty(conn: asyncpg.Connection) -> bool:
    return not await lots.any_lot(conn)
