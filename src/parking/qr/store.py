"""Reads of the places a code can point at (SQL only; the caller's connection)."""

from __future__ import annotations

import asyncpg


async def lot(conn: asyncpg.Connection, lot_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id, name, kind, full_policy FROM lots WHERE id = $1", lot_id)


async def lane(conn: asyncpg.Connection, lot_id: str, lane_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT lane_id, direction FROM lanes WHERE lot_id = $1 AND lane_id = $2",
        lot_id,
        lane_id,
    )


async def space(conn: asyncpg.Connection, lot_id: str, space_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT space_id, kind FROM spaces WHERE lot_id = $1 AND space_id = $2",
        lot_id,
        space_id,
    )
