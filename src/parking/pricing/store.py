"""SQL of the pricing rules (queries only; the caller owns the transaction)."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def lot_tariffs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT lot_id, vehicle_class, tariff_id FROM lot_tariffs")


async def tariff_versions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT tariff_id, version, effective_from, document::text AS document "
        "FROM tariff_versions ORDER BY tariff_id, effective_from"
    )


async def exempt_plates(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT plate, reason, company_id FROM plate_exemptions")


async def exempt_kinds(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT kind, reason, company_id FROM exempt_plate_kinds")


async def class_overrides(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT plate, vehicle_class FROM vehicle_class_overrides")


async def active_passes(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT p.id, p.plate, p.valid_from, p.valid_until,
                  array_agg(m.lot_id ORDER BY m.lot_id) AS lots
           FROM monthly_passes p JOIN lot_group_members m ON m.group_id = p.group_id
           WHERE p.revoked_at IS NULL
           GROUP BY p.id"""
    )


async def tariff_exists(conn: asyncpg.Connection, tariff_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tariffs WHERE id = $1)", tariff_id)
    )


async def insert_tariff(conn: asyncpg.Connection, tariff_id: str, name: str) -> None:
    await conn.execute("INSERT INTO tariffs (id, name) VALUES ($1, $2)", tariff_id, name)


async def lock_tariff(conn: asyncpg.Connection, tariff_id: str) -> None:
    # Serialises concurrent version additions so version numbers stay dense.
    await conn.execute("SELECT 1 FROM tariffs WHERE id = $1 FOR UPDATE", tariff_id)


async def latest_version(conn: asyncpg.Connection, tariff_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT version, effective_from FROM tariff_versions WHERE tariff_id = $1 "
        "ORDER BY version DESC LIMIT 1",
        tariff_id,
    )


async def insert_version(
    conn: asyncpg.Connection,
    *,
    tariff_id: str,
    version: int,
    effective_from: datetime,
    document: str,
    created_by: str,
) -> None:
    await conn.execute(
        """INSERT INTO tariff_versions (tariff_id, version, effective_from, document, created_by)
           VALUES ($1, $2, $3, $4::jsonb, $5)""",
        tariff_id,
        version,
        effective_from,
        document,
        created_by,
    )


async def versions_of(conn: asyncpg.Connection, tariff_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT version, effective_from, document::text AS document, created_by, created_at "
        "FROM tariff_versions WHERE tariff_id = $1 ORDER BY version",
        tariff_id,
    )


async def assign(conn: asyncpg.Connection, lot_id: str, vehicle_class: int, tariff_id: str) -> None:
    await conn.execute(
        """INSERT INTO lot_tariffs (lot_id, vehicle_class, tariff_id) VALUES ($1, $2, $3)
           ON CONFLICT (lot_id, vehicle_class) DO UPDATE SET tariff_id = EXCLUDED.tariff_id""",
        lot_id,
        vehicle_class,
        tariff_id,
    )


async def upsert_plate_exemption(
    conn: asyncpg.Connection, plate: str, reason: str, by: str, company: str | None
) -> None:
    await conn.execute(
        """INSERT INTO plate_exemptions (plate, reason, created_by, company_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (company_id, plate) DO UPDATE SET reason = EXCLUDED.reason,
               created_by = EXCLUDED.created_by, created_at = now()""",
        plate,
        reason,
        by,
        company,
    )


async def delete_plate_exemption(conn: asyncpg.Connection, plate: str, company: str | None) -> bool:
    return bool(
        await conn.fetchval(
            "DELETE FROM plate_exemptions WHERE plate = $1 AND company_id IS NOT DISTINCT FROM $2 "
            "RETURNING 1",
            plate,
            company,
        )
    )


async def upsert_exempt_kind(
    conn: asyncpg.Connection, kind: str, reason: str, by: str, company: str | None
) -> None:
    await conn.execute(
        """INSERT INTO exempt_plate_kinds (kind, reason, created_by, company_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (company_id, kind) DO UPDATE SET reason = EXCLUDED.reason,
               created_by = EXCLUDED.created_by, created_at = now()""",
        kind,
        reason,
        by,
        company,
    )


async def delete_exempt_kind(conn: asyncpg.Connection, kind: str, company: str | None) -> bool:
    return bool(
        await conn.fetchval(
            "DELETE FROM exempt_plate_kinds WHERE kind = $1 "
            "AND company_id IS NOT DISTINCT FROM $2 RETURNING 1",
            kind,
            company,
        )
    )


async def upsert_lot_group(
    conn: asyncpg.Connection, group_id: str, name: str, lots: list[str]
) -> None:
    await conn.execute(
        "INSERT INTO lot_groups (id, name) VALUES ($1, $2) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        group_id,
        name,
    )
    await conn.execute("DELETE FROM lot_group_members WHERE group_id = $1", group_id)
    await conn.execute(
        "INSERT INTO lot_group_members (group_id, lot_id) SELECT $1, unnest($2::text[])",
        group_id,
        lots,
    )


async def group_exists(conn: asyncpg.Connection, group_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM lot_groups WHERE id = $1)", group_id)
    )


async def insert_pass(
    conn: asyncpg.Connection,
    *,
    pass_id: str,
    plate: str,
    group_id: str,
    valid_from: datetime,
    valid_until: datetime,
    by: str,
) -> None:
    await conn.execute(
        """INSERT INTO monthly_passes (id, plate, group_id, valid_from, valid_until, created_by)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        pass_id,
        plate,
        group_id,
        valid_from,
        valid_until,
        by,
    )


async def revoke_pass(conn: asyncpg.Connection, pass_id: str, at: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "UPDATE monthly_passes SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL "
            "RETURNING 1",
            pass_id,
            at,
        )
    )


async def tariff_of_lot(conn: asyncpg.Connection, lot_id: str, vehicle_class: int) -> str | None:
    value = await conn.fetchval(
        "SELECT tariff_id FROM lot_tariffs WHERE lot_id = $1 AND vehicle_class = $2",
        lot_id,
        vehicle_class,
    )
    return value if isinstance(value, str) else None


async def calendars(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every calendar edition, the newest import first."""
    return await conn.fetch(
        "SELECT version, name, years, document::text AS document, created_by, created_at "
        "FROM calendars ORDER BY seq DESC"
    )


async def insert_calendar(
    conn: asyncpg.Connection,
    *,
    version: str,
    name: str,
    years: list[int],
    document: str,
    by: str,
    now: datetime,
) -> bool:
    """False when the version exists already."""
    done = await conn.fetchval(
        """INSERT INTO calendars (version, name, years, document, created_by, created_at)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6) ON CONFLICT (version) DO NOTHING
           RETURNING true""",
        version,
        name,
        years,
        document,
        by,
        now,
    )
    return bool(done)


async def stays_entered(
    conn: asyncpg.Connection, plate: str, *, lots: list[str], since: datetime, before: datetime
) -> int:
    """The plate's stays (open or closed) entered at ``lots`` in [since, before)."""
    value = await conn.fetchval(
        """SELECT count(*) FROM sessions
            WHERE plate = $1 AND lot_id = ANY($2::text[]) AND status IN ('open', 'closed')
              AND entry_at >= $3 AND entry_at < $4""",
        plate,
        lots,
        since,
        before,
    )
    return int(value)
