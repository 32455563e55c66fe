"""Seeding the synthetic city."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from parking.seed import city, store

# Seeded tariff versions apply to every stay since the start of 2026 (local time).
EFFECTIVE_FROM = datetime(2026, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai"))


class _TariffHead(msgspec.Struct):
    id: str
    name: str


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
    lots = city.build(city_seed)
    async with conn.transaction():
        await store.write_city(
            conn, lots, seed_tariffs(), effective_from=EFFECTIVE_FROM, progress=progress
        )
    return await store.city_counts(conn)


async def is_empty(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM lots)")
