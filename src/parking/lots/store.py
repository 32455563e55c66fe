"""Lots, lanes, spaces and who owns what (SQL only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import asyncpg

from parking.lots.model import Company, LaneView, LotView, SpaceView


async def companies(conn: asyncpg.Connection) -> list[Company]:
    rows = await conn.fetch("SELECT id, name FROM operator_companies ORDER BY id")
    return [Company(id=r["id"], name=r["name"]) for r in rows]


async def company_exists(conn: asyncpg.Connection, company_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT true FROM operator_companies WHERE id = $1", company_id)
    )


async def lot_owner(conn: asyncpg.Connection, lot_id: str) -> tuple[bool, str | None]:
    """(the lot exists, the company that owns it)."""
    row = await conn.fetchrow("SELECT company_id FROM lots WHERE id = $1", lot_id)
    return (False, None) if row is None else (True, row["company_id"])


async def tariff_owner(conn: asyncpg.Connection, tariff_id: str) -> tuple[bool, str | None]:
    row = await conn.fetchrow("SELECT company_id FROM tariffs WHERE id = $1", tariff_id)
    return (False, None) if row is None else (True, row["company_id"])


async def device_lot(conn: asyncpg.Connection, device_id: str) -> str | None:
    lot: str | None = await conn.fetchval(
        "SELECT lot_id FROM devices WHERE device_id = $1", device_id
    )
    return lot


async def set_tariff_owner(conn: asyncpg.Connection, tariff_id: str, company_id: str) -> None:
    await conn.execute("UPDATE tariffs SET company_id = $2 WHERE id = $1", tariff_id, company_id)


async def lot_counts(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    rows = await conn.fetch(
        """SELECT c.id, c.name, count(l.id) AS lots FROM operator_companies c
             LEFT JOIN lots l ON l.company_id = c.id GROUP BY c.id, c.name ORDER BY c.id"""
    )
    return [(r["id"], r["name"], int(r["lots"])) for r in rows]


async def lot_owners(conn: asyncpg.Connection, lot_ids: list[str]) -> dict[str, str | None]:
    """lot id -> owning company, for those of ``lot_ids`` that exist."""
    rows = await conn.fetch("SELECT id, company_id FROM lots WHERE id = ANY($1::text[])", lot_ids)
    return {r["id"]: r["company_id"] for r in rows}


async def group_lots(conn: asyncpg.Connection, group_id: str) -> list[str] | None:
    """The lots of a lot group (None: no such group)."""
    row = await conn.fetchrow(
        """SELECT array_remove(array_agg(m.lot_id ORDER BY m.lot_id), NULL) AS lots
             FROM lot_groups g LEFT JOIN lot_group_members m ON m.group_id = g.id
            WHERE g.id = $1 GROUP BY g.id""",
        group_id,
    )
    return None if row is None else list(row["lots"])


async def blacklist_owner(conn: asyncpg.Connection, plate: str) -> tuple[bool, str | None]:
    """(the plate is blacklisted, the company that listed it)."""
    row = await conn.fetchrow("SELECT company_id FROM plate_blacklist WHERE plate = $1", plate)
    return (False, None) if row is None else (True, row["company_id"])


async def pass_group(conn: asyncpg.Connection, pass_id: str) -> str | None:
    group: str | None = await conn.fetchval(
        "SELECT group_id FROM monthly_passes WHERE id = $1", pass_id
    )
    return group


# ------------------------------------------------------------------ lots, lanes, spaces

_LOT_COLUMNS: Final = """id, name, district_code, kind, capacity, latitude::float8 AS latitude,
    longitude::float8 AS longitude, full_policy,
    (extract(epoch FROM arrears_hold_after) / 60)::int AS arrears_hold_after_minutes,
    exit_window_minutes"""


def _lot(row: asyncpg.Record) -> LotView:
    return LotView(**dict(row))


async def lots(
    conn: asyncpg.Connection, *, company: str | None, after: str | None, limit: int
) -> list[LotView]:
    """Lots by id after ``after`` (of ``company`` only, unless None)."""
    rows = await conn.fetch(
        f"SELECT {_LOT_COLUMNS} FROM lots WHERE ($1::text IS NULL OR id > $1) "  # noqa: S608
        "AND ($3::text IS NULL OR company_id = $3) ORDER BY id LIMIT $2",
        after,
        limit,
        company,
    )
    return [_lot(r) for r in rows]


async def insert_lot(
    conn: asyncpg.Connection,
    *,
    lot_id: str,
    name: str,
    district_code: str,
    kind: str,
    capacity: int,
    latitude: float,
    longitude: float,
    full_policy: str,
    arrears_hold_after: timedelta,
    exit_window_minutes: int,
    company_id: str | None,
) -> LotView:
    """Raises asyncpg's UniqueViolationError (the id exists) or ForeignKeyViolationError
    (no such district)."""
    row = await conn.fetchrow(
        f"""INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude,
                             full_policy, arrears_hold_after, exit_window_minutes,
                             company_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            RETURNING {_LOT_COLUMNS}""",  # noqa: S608
        lot_id,
        name,
        district_code,
        kind,
        capacity,
        latitude,
        longitude,
        full_policy,
        arrears_hold_after,
        exit_window_minutes,
        company_id,
    )
    assert row is not None
    return _lot(row)


async def update_lot(
    conn: asyncpg.Connection,
    lot_id: str,
    *,
    full_policy: str | None,
    arrears_hold_after: timedelta | None,
    exit_window_minutes: int | None,
    capacity: int | None,
) -> LotView | None:
    """Change the given (not None) fields; None when there is no such lot."""
    row = await conn.fetchrow(
        f"""UPDATE lots SET
               full_policy = coalesce($2, full_policy),
               arrears_hold_after = coalesce($3, arrears_hold_after),
               exit_window_minutes = coalesce($4, exit_window_minutes),
               capacity = coalesce($5, capacity)
             WHERE id = $1 RETURNING {_LOT_COLUMNS}""",  # noqa: S608
        lot_id,
        full_policy,
        arrears_hold_after,
        exit_window_minutes,
        capacity,
    )
    return None if row is None else _lot(row)


async def lanes(conn: asyncpg.Connection, lot_id: str) -> list[LaneView]:
    rows = await conn.fetch(
        "SELECT lot_id, lane_id, direction FROM lanes WHERE lot_id = $1 ORDER BY lane_id",
        lot_id,
    )
    return [LaneView(**dict(r)) for r in rows]


async def insert_lane(conn: asyncpg.Connection, lot_id: str, lane_id: str, direction: str) -> None:
    """Raises asyncpg's UniqueViolationError when the lot has the lane."""
    await conn.execute(
        "INSERT INTO lanes (lot_id, lane_id, direction) VALUES ($1, $2, $3)",
        lot_id,
        lane_id,
        direction,
    )


async def spaces(
    conn: asyncpg.Connection, lot_id: str, *, after: str | None, limit: int
) -> list[SpaceView]:
    rows = await conn.fetch(
        "SELECT lot_id, space_id, kind FROM spaces WHERE lot_id = $1 "
        "AND ($2::text IS NULL OR space_id > $2) ORDER BY space_id LIMIT $3",
        lot_id,
        after,
        limit,
    )
    return [SpaceView(**dict(r)) for r in rows]


async def insert_space(conn: asyncpg.Connection, lot_id: str, space_id: str, kind: str) -> None:
    """Raises asyncpg's UniqueViolationError when the lot has the space."""
    await conn.execute(
        "INSERT INTO spaces (lot_id, space_id, kind) VALUES ($1, $2, $3)",
        lot_id,
        space_id,
        kind,
    )


async def names(conn: asyncpg.Connection, lot_ids: list[str]) -> dict[str, str]:
    """lot id -> name, for those of ``lot_ids`` that exist."""
    rows = await conn.fetch("SELECT id, name FROM lots WHERE id = ANY($1::text[])", lot_ids)
    return {r["id"]: r["name"] for r in rows}


async def exit_window(conn: asyncpg.Connection, lot_id: str) -> timedelta | None:
    minutes: int | None = await conn.fetchval(
        "SELECT exit_window_minutes FROM lots WHERE id = $1", lot_id
    )
    return None if minutes is None else timedelta(minutes=minutes)


async def lot_ids_of(conn: asyncpg.Connection, company_id: str) -> list[str]:
    rows = await conn.fetch("SELECT id FROM lots WHERE company_id = $1 ORDER BY id", company_id)
    return [r["id"] for r in rows]
