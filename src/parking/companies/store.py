"""Who owns what (SQL only)."""

from __future__ import annotations

import asyncpg

from parking.companies.model import Company


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
