"""Writing the synthetic city to PostgreSQL (SQL only; idempotent)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

from parking.seed.city import COMPANIES, DISTRICTS, Lot

Progress = Callable[[str], None]


async def write_city(
    conn: asyncpg.Connection,
    lots: Sequence[Lot],
    tariffs: Sequence[tuple[str, str, bytes]],
    *,
    effective_from: datetime,
    progress: Progress,
) -> None:
    """Insert what is missing; rows that exist are left untouched. Runs in the caller's tx."""
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
    await conn.executemany(
        """INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude,
                             company_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
        [
            (
                lot.id,
                lot.name,
                lot.district_code,
                lot.kind,
                lot.capacity,
                lot.latitude,
                lot.longitude,
                lot.company_id,
            )
            for lot in lots
        ],
    )
    # A seeded lot stored before companies existed has no owner yet: it gets its
    # seeded one. A lot that has an owner keeps it (the seed never moves a lot).
    await conn.executemany(
        "UPDATE lots SET company_id = $2 WHERE id = $1 AND company_id IS NULL",
        [(lot.id, lot.company_id) for lot in lots],
    )
    progress(f"lots: {len(lots)}")
    await conn.executemany(
        "INSERT INTO lanes (lot_id, lane_id, direction) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        [(lot.id, lane.lane_id, lane.direction) for lot in lots for lane in lot.lanes],
    )
    await conn.executemany(
        "INSERT INTO lot_tariffs (lot_id, vehicle_class, tariff_id) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
        [(lot.id, cls, tid) for lot in lots for cls, tid in enumerate(lot.tariffs, start=1)],
    )
    progress("lanes and tariff assignments written")
    # 112k rows: COPY into a temporary table, then one INSERT that skips what
    # exists, so a re-run stays a no-op instead of failing on the primary key.
    await conn.execute("CREATE TEMP TABLE seed_spaces (lot_id text, space_id text) ON COMMIT DROP")
    written = 0
    batch: list[tuple[str, str]] = []
    for lot in lots:
        batch.extend((lot.id, space) for space in lot.space_ids())
        if len(batch) >= 20_000:
            await conn.copy_records_to_table("seed_spaces", records=batch)
            written += len(batch)
            progress(f"spaces: {written}")
            batch = []
    if batch:
        await conn.copy_records_to_table("seed_spaces", records=batch)
        written += len(batch)
        progress(f"spaces: {written}")
    await conn.execute(
        "INSERT INTO spaces (lot_id, space_id) SELECT lot_id, space_id FROM seed_spaces "
        "ON CONFLICT DO NOTHING"
    )


async def city_counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM lots) AS lots,
                  (SELECT count(*) FROM spaces) AS spaces,
                  (SELECT coalesce(sum(capacity), 0) FROM lots) AS capacity,
                  (SELECT count(*) FROM lanes) AS lanes,
                  (SELECT count(*) FROM tariffs) AS tariffs"""
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}
