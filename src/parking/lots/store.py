"""Lots, lanes, spaces and who owns what (SQL only)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Final

import asyncpg

from parking.lots.model import Company, District, LaneView, Lot, SpaceView


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
    exit_window_minutes,
    (extract(epoch FROM review_stay_limit) / 60)::int AS review_stay_limit_minutes,
    review_fee_ceiling_fen, company_id, address"""


def _lot(row: asyncpg.Record) -> Lot:
    return Lot(**dict(row))


async def every_lot(conn: asyncpg.Connection) -> list[Lot]:
    rows = await conn.fetch(f"SELECT {_LOT_COLUMNS} FROM lots ORDER BY id")  # noqa: S608
    return [_lot(r) for r in rows]


async def lots_by_id(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> list[Lot]:
    """Those of ``lot_ids`` that exist, by id."""
    rows = await conn.fetch(
        f"SELECT {_LOT_COLUMNS} FROM lots WHERE id = ANY($1::text[]) ORDER BY id",  # noqa: S608
        list(lot_ids),
    )
    return [_lot(r) for r in rows]


async def exists(conn: asyncpg.Connection, lot_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM lots WHERE id = $1)", lot_id))


async def missing(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> list[str]:
    """Those of ``lot_ids`` no lot has, in the order given."""
    rows = await conn.fetch(
        "SELECT l FROM unnest($1::text[]) WITH ORDINALITY AS u(l, n) "
        "WHERE NOT EXISTS (SELECT 1 FROM lots WHERE id = u.l) ORDER BY n",
        list(lot_ids),
    )
    return [r["l"] for r in rows]


async def owners(conn: asyncpg.Connection) -> dict[str, str]:
    """lot id -> owning company, for every lot that has one."""
    rows = await conn.fetch("SELECT id, company_id FROM lots WHERE company_id IS NOT NULL")
    return {r["id"]: r["company_id"] for r in rows}


async def ids_of_kind(conn: asyncpg.Connection, kind: str) -> list[str]:
    rows = await conn.fetch("SELECT id FROM lots WHERE kind = $1 ORDER BY id", kind)
    return [r["id"] for r in rows]


async def groups_of_lots(conn: asyncpg.Connection) -> dict[str, frozenset[str]]:
    """lot id -> the lot groups it is in, for every lot in one."""
    rows = await conn.fetch(
        "SELECT lot_id, array_agg(group_id) AS groups FROM lot_group_members GROUP BY lot_id"
    )
    return {r["lot_id"]: frozenset(r["groups"]) for r in rows}


async def exit_windows(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> dict[str, timedelta]:
    rows = await conn.fetch(
        "SELECT id, exit_window_minutes FROM lots WHERE id = ANY($1::text[])", list(lot_ids)
    )
    return {r["id"]: timedelta(minutes=r["exit_window_minutes"]) for r in rows}


async def any_lot(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM lots)"))


async def add_missing(conn: asyncpg.Connection, lots: Sequence[Lot]) -> None:
    """Insert the lots that do not exist (identity, place, owner; policies take the
    database's defaults); a lot that exists keeps everything, except that one with no
    owner or address yet gets the one given."""
    await conn.executemany(
        """INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude,
                             company_id, address)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING""",
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
                lot.address,
            )
            for lot in lots
        ],
    )
    await conn.executemany(
        "UPDATE lots SET company_id = $2 WHERE id = $1 AND company_id IS NULL",
        [(lot.id, lot.company_id) for lot in lots if lot.company_id is not None],
    )
    await conn.executemany(
        "UPDATE lots SET address = $2 WHERE id = $1 AND address IS NULL",
        [(lot.id, lot.address) for lot in lots if lot.address is not None],
    )


async def lots(
    conn: asyncpg.Connection, *, company: str | None, after: str | None, limit: int
) -> list[Lot]:
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
    address: str | None = None,
) -> Lot:
    """Raises asyncpg's UniqueViolationError (the id exists) or ForeignKeyViolationError
    (no such district)."""
    row = await conn.fetchrow(
        f"""INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude,
                             full_policy, arrears_hold_after, exit_window_minutes,
                             company_id, address)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
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
        address,
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
    address: str | None = None,
) -> Lot | None:
    """Change the given (not None) fields; None when there is no such lot."""
    row = await conn.fetchrow(
        f"""UPDATE lots SET
               full_policy = coalesce($2, full_policy),
               arrears_hold_after = coalesce($3, arrears_hold_after),
               exit_window_minutes = coalesce($4, exit_window_minutes),
               capacity = coalesce($5, capacity),
               address = coalesce($6, address)
             WHERE id = $1 RETURNING {_LOT_COLUMNS}""",  # noqa: S608
        lot_id,
        full_policy,
        arrears_hold_after,
        exit_window_minutes,
        capacity,
        address,
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


async def lane(conn: asyncpg.Connection, lot_id: str, lane_id: str) -> LaneView | None:
    row = await conn.fetchrow(
        "SELECT lot_id, lane_id, direction FROM lanes WHERE lot_id = $1 AND lane_id = $2",
        lot_id,
        lane_id,
    )
    return None if row is None else LaneView(**dict(row))


async def space(conn: asyncpg.Connection, lot_id: str, space_id: str) -> SpaceView | None:
    row = await conn.fetchrow(
        "SELECT lot_id, space_id, kind FROM spaces WHERE lot_id = $1 AND space_id = $2",
        lot_id,
        space_id,
    )
    return None if row is None else SpaceView(**dict(row))


async def every_lane(conn: asyncpg.Connection) -> list[LaneView]:
    rows = await conn.fetch("SELECT lot_id, lane_id, direction FROM lanes ORDER BY lot_id, lane_id")
    return [LaneView(**dict(r)) for r in rows]


async def spaces_of(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> list[SpaceView]:
    rows = await conn.fetch(
        "SELECT lot_id, space_id, kind FROM spaces WHERE lot_id = ANY($1::text[]) "
        "ORDER BY lot_id, space_id",
        list(lot_ids),
    )
    return [SpaceView(**dict(r)) for r in rows]


async def add_missing_lanes(conn: asyncpg.Connection, lanes: Sequence[LaneView]) -> None:
    await conn.executemany(
        "INSERT INTO lanes (lot_id, lane_id, direction) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        [(lane.lot_id, lane.lane_id, lane.direction) for lane in lanes],
    )


async def add_missing_spaces(
    conn: asyncpg.Connection, spaces: Iterable[tuple[str, str]], *, progress: Callable[[int], None]
) -> None:
    """(lot_id, space_id) pairs, standard spaces; those that exist are skipped. A city's
    112k rows: COPY into a temporary table, then one INSERT that skips what exists, so a
    re-run stays a no-op instead of failing on the primary key. Caller's transaction."""
    await conn.execute("CREATE TEMP TABLE new_spaces (lot_id text, space_id text) ON COMMIT DROP")
    written = 0
    batch: list[tuple[str, str]] = []
    for pair in spaces:
        batch.append(pair)
        if len(batch) >= 20_000:
            await conn.copy_records_to_table("new_spaces", records=batch)
            written += len(batch)
            progress(written)
            batch = []
    if batch:
        await conn.copy_records_to_table("new_spaces", records=batch)
        written += len(batch)
        progress(written)
    await conn.execute(
        "INSERT INTO spaces (lot_id, space_id) SELECT lot_id, space_id FROM new_spaces "
        "ON CONFLICT DO NOTHING"
    )
    await conn.execute("DROP TABLE new_spaces")


async def place_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """lots, spaces, capacity (summed over lots), lanes."""
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM lots) AS lots,
                  (SELECT count(*) FROM spaces) AS spaces,
                  (SELECT coalesce(sum(capacity), 0) FROM lots) AS capacity,
                  (SELECT count(*) FROM lanes) AS lanes"""
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def districts(conn: asyncpg.Connection) -> list[District]:
    rows = await conn.fetch(
        "SELECT code, name, kind, latitude::float8 AS latitude, longitude::float8 AS longitude "
        "FROM districts ORDER BY code"
    )
    return [District(**dict(r)) for r in rows]
