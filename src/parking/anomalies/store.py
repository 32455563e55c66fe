"""The review queue's SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from parking.anomalies.model import AnomalyView

_COLUMNS: Final = """id, kind, lot_id, device_id, plate, session_id, image_ref,
    details::text AS details, status, created_at, resolved_at, resolution"""


def _view(row: asyncpg.Record) -> AnomalyView:
    values = dict(row)
    values["details"] = msgspec.Raw(values["details"].encode())
    return AnomalyView(**values)


async def queue(
    conn: asyncpg.Connection,
    *,
    status: str,
    kind: str | None,
    after: str | None,
    limit: int,
    lot_ids: list[str] | None,
) -> list[AnomalyView]:
    """``lot_ids`` None: every lot's (and those of no lot)."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM anomalies
             WHERE status = $1 AND ($2::text IS NULL OR kind = $2)
               AND ($3::text IS NULL OR id > $3)
               AND ($5::text[] IS NULL OR lot_id = ANY($5::text[]))
             ORDER BY id LIMIT $4""",  # noqa: S608
        status,
        kind,
        after,
        limit,
        lot_ids,
    )
    return [_view(r) for r in rows]


async def lock(conn: asyncpg.Connection, anomaly_id: str) -> AnomalyView | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM anomalies WHERE id = $1 FOR UPDATE",  # noqa: S608
        anomaly_id,
    )
    return None if row is None else _view(row)


async def resolve(
    conn: asyncpg.Connection, anomaly_id: str, *, at: datetime, resolution: str
) -> AnomalyView:
    row = await conn.fetchrow(
        f"""UPDATE anomalies SET status = 'resolved', resolved_at = $2, resolution = $3
             WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608
        anomaly_id,
        at,
        resolution,
    )
    assert row is not None
    return _view(row)
