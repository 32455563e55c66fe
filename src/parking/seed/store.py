"""Writing the synthetic city to PostgreSQL (SQL only; idempotent)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

from parking.seed.city import COMPANIES, DISTRICTS, PlannedLot

Progress = Callable[[str], None]


async def write_registers(
    conn: asyncpg.Connection,
    tariffs: Sequence[tuple[str, str, bytes]],
    *,
    effective_from: datetime,
    progress: Progress,
) -> None:
    """The tariffs, districts and operator companies a lot refers to. Insert what is
    missing; rows that exist are left untouched. Runs in the caller's tx."""
    await conn.executemany(
        "INSERT INTO tariffs (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(tid, name) for tid, name, _ in tariffs],
    )
    await conn.executemany(
        """INSERT INTO tariff_versions (tariff_id, version, effective_from, document, created_by)
           VALUES ($1, 1, $2, $3::jsonb, 'seed') ON CONFLICT DO NOTHING""",
        [(tid, effective_from, doc.decode()) for tid, _, doc in tariffs],
    )
    progress(f"tariffs: {len(tariffs)}")
    await conn.executemany(
        """INSERT INTO districts (code, name, kind, latitude, longitude)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        [(d.code, d.name, d.kind, d.latitude, d.longitude) for d in DISTRICTS],
    )
    progress(f"districts: {len(DISTRICTS)}")
    await conn.executemany(
        "INSERT INTO operator_companies (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(c.id, c.name) for c in COMPANIES],
    )
    progress(f"operator companies: {len(COMPANIES)}")


async def write_tariff_assignments(conn: asyncpg.Connection, lots: Sequence[PlannedLot]) -> None:
    """Each (stored) lot's tariff per vehicle class; idempotent."""
    await conn.executemany(
        "INSERT INTO lot_tariffs (lot_id, vehicle_class, tariff_id) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
        [(lot.id, cls, tid) for lot in lots for cls, tid in enumerate(lot.tariffs, start=1)],
    )


async def tariff_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM tariffs"))
