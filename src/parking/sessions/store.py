"""SQL of the sessions table (queries only; the caller owns the transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg

from parking.sessions.model import SessionChange


def _columns(changes: Sequence[SessionChange]) -> list[list[Any]]:
    return [
        [c.id for c in changes],
        [c.lot_id for c in changes],
        [c.plate for c in changes],
        [c.plate_raw for c in changes],
        [c.status.value for c in changes],
        [c.entry_at for c in changes],
        [c.exit_at for c in changes],
        [c.entry_device_id for c in changes],
        [c.entry_seq for c in changes],
        [c.exit_device_id for c in changes],
        [c.exit_seq for c in changes],
        [c.vehicle_class for c in changes],
        [c.fee_fen for c in changes],
        [c.tariff_id for c in changes],
        [c.tariff_version for c in changes],
        [c.pricing_reason for c in changes],
        [c.quote.decode() if c.quote is not None else None for c in changes],
        [c.superseded_by for c in changes],
        [",".join(c.flags) for c in changes],
        [c.account_id for c in changes],
    ]


async def ensure_months(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[str]) -> None:
    """Make the monthly partitions these session ids fall in, if missing (sessions are
    partitioned by the ULID time of their id, migration 0027)."""
    if ids:
        await conn.execute("SELECT ensure_session_partitions($1::text[])", list(ids))


async def supersede_older_open(conn: asyncpg.Connection, opens: Sequence[SessionChange]) -> None:
    """Supersede open sessions of the same plates that entered no later than these."""
    if not opens:
        return
    await conn.execute(
        """UPDATE sessions s
           SET status = 'superseded', superseded_by = i.id, updated_at = now(),
               flags = CASE WHEN 'plate_elsewhere' = ANY(s.flags) THEN s.flags
                            ELSE s.flags || '{plate_elsewhere}' END
           FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS i(id, plate, entry_at)
           JOIN sessions_open o ON o.plate = i.plate
           WHERE s.id = o.id AND s.status = 'open' AND s.id <> i.id
             AND s.entry_at <= i.entry_at""",
        [c.id for c in opens],
        [c.plate for c in opens],
        [c.entry_at for c in opens],
    )


async def merge(conn: asyncpg.Connection, changes: Sequence[SessionChange]) -> None:
    """Insert or merge each change into its session row (order-insensitive)."""
    if not changes:
        return
    await conn.execute(
        """
        WITH input AS (
            SELECT * FROM unnest(
                $1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                $6::timestamptz[], $7::timestamptz[], $8::text[], $9::bigint[], $10::text[],
                $11::bigint[], $12::smallint[], $13::bigint[], $14::text[], $15::integer[],
                $16::text[], $17::jsonb[], $18::text[], $19::text[], $20::text[]
            ) AS t(id, lot_id, plate, plate_raw, status, entry_at, exit_at, entry_device_id,
                   entry_seq, exit_device_id, exit_seq, vehicle_class, fee_fen, tariff_id,
                   tariff_version, pricing_reason, quote, superseded_by, flags, account_id)
        ), resolved AS (
            -- An open session whose plate is open elsewhere with a later entry
            -- arrived late: it is superseded by that one (one open per plate).
            SELECT i.*, other.id AS newer_id
            FROM input i
            LEFT JOIN LATERAL (
                SELECT o.id FROM sessions_open o
                WHERE i.status = 'open' AND o.plate = i.plate AND o.id <> i.id
                LIMIT 1
            ) other ON true
        )
        INSERT INTO sessions AS sessions (
            id, lot_id, plate, plate_raw, status, entry_at, exit_at, entry_device_id, entry_seq,
            exit_device_id, exit_seq, vehicle_class, fee_fen, tariff_id, tariff_version,
            pricing_reason, quote, superseded_by, flags, account_id)
        SELECT id, lot_id, plate, plate_raw,
               CASE WHEN newer_id IS NOT NULL THEN 'superseded' ELSE status END,
               entry_at, exit_at, entry_device_id, entry_seq, exit_device_id, exit_seq,
               vehicle_class, fee_fen, tariff_id, tariff_version, pricing_reason, quote,
               coalesce(superseded_by, newer_id),
               CASE WHEN flags = '' THEN '{}'::text[] ELSE string_to_array(flags, ',') END
                 || CASE WHEN newer_id IS NOT NULL THEN '{older_entry}'::text[]
                         ELSE '{}'::text[] END,
               account_id
        FROM resolved
        ON CONFLICT (id) DO UPDATE SET
            status = CASE
                WHEN session_status_rank(EXCLUDED.status) > session_status_rank(sessions.status)
                THEN EXCLUDED.status ELSE sessions.status END,
            -- who superseded a session is kept only while it stays superseded (or voided)
            superseded_by = CASE
                WHEN (CASE
                        WHEN session_status_rank(EXCLUDED.status)
                             > session_status_rank(sessions.status)
                        THEN EXCLUDED.status ELSE sessions.status END) IN ('superseded', 'voided')
                THEN coalesce(sessions.superseded_by, EXCLUDED.superseded_by) END,
            plate = coalesce(sessions.plate, EXCLUDED.plate),
            plate_raw = coalesce(sessions.plate_raw, EXCLUDED.plate_raw),
            entry_at = coalesce(sessions.entry_at, EXCLUDED.entry_at),
            entry_device_id = coalesce(sessions.entry_device_id, EXCLUDED.entry_device_id),
            entry_seq = coalesce(sessions.entry_seq, EXCLUDED.entry_seq),
            exit_at = coalesce(sessions.exit_at, EXCLUDED.exit_at),
            exit_device_id = coalesce(sessions.exit_device_id, EXCLUDED.exit_device_id),
            exit_seq = coalesce(sessions.exit_seq, EXCLUDED.exit_seq),
            vehicle_class = coalesce(sessions.vehicle_class, EXCLUDED.vehicle_class),
            fee_fen = coalesce(sessions.fee_fen, EXCLUDED.fee_fen),
            tariff_id = coalesce(sessions.tariff_id, EXCLUDED.tariff_id),
            tariff_version = coalesce(sessions.tariff_version, EXCLUDED.tariff_version),
            pricing_reason = coalesce(sessions.pricing_reason, EXCLUDED.pricing_reason),
            quote = coalesce(sessions.quote, EXCLUDED.quote),
            account_id = coalesce(sessions.account_id, EXCLUDED.account_id),
            flags = ARRAY(SELECT DISTINCT f FROM unnest(sessions.flags || EXCLUDED.flags) AS f
                          ORDER BY f),
            updated_at = now()
        """,
        *_columns(changes),
    )


async def complete_without_entry(
    conn: asyncpg.Connection, changes: Sequence[SessionChange]
) -> set[str]:
    """Give exits without entry the entry that arrived after them (closed facts with
    both ends and the fee priced from the entry): the entry, the price and the flags
    replace the exit's free no-entry close. A session whose exit is not stored yet
    (another persister holds it) is written whole; one that has its entry already,
    or a fee, is left as it is. Returns the ids completed now."""
    if not changes:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO sessions AS sessions (
            id, lot_id, plate, plate_raw, status, entry_at, exit_at, entry_device_id, entry_seq,
            exit_device_id, exit_seq, vehicle_class, fee_fen, tariff_id, tariff_version,
            pricing_reason, quote, superseded_by, flags, account_id)
        SELECT id, lot_id, plate, plate_raw, status, entry_at, exit_at, entry_device_id,
               entry_seq, exit_device_id, exit_seq, vehicle_class, fee_fen, tariff_id,
               tariff_version, pricing_reason, quote, superseded_by,
               CASE WHEN flags = '' THEN '{}'::text[] ELSE string_to_array(flags, ',') END,
               account_id
        FROM unnest(
            $1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::timestamptz[], $7::timestamptz[], $8::text[], $9::bigint[], $10::text[],
            $11::bigint[], $12::smallint[], $13::bigint[], $14::text[], $15::integer[],
            $16::text[], $17::jsonb[], $18::text[], $19::text[], $20::text[]
        ) AS t(id, lot_id, plate, plate_raw, status, entry_at, exit_at, entry_device_id,
               entry_seq, exit_device_id, exit_seq, vehicle_class, fee_fen, tariff_id,
               tariff_version, pricing_reason, quote, superseded_by, flags, account_id)
        ON CONFLICT (id) DO UPDATE SET
            entry_at = EXCLUDED.entry_at,
            entry_device_id = EXCLUDED.entry_device_id,
            entry_seq = EXCLUDED.entry_seq,
            vehicle_class = EXCLUDED.vehicle_class,
            fee_fen = EXCLUDED.fee_fen,
            tariff_id = EXCLUDED.tariff_id,
            tariff_version = EXCLUDED.tariff_version,
            pricing_reason = EXCLUDED.pricing_reason,
            quote = EXCLUDED.quote,
            flags = ARRAY(SELECT DISTINCT f FROM unnest(sessions.flags || EXCLUDED.flags) AS f
                          ORDER BY f),
            updated_at = now()
        WHERE sessions.status = 'closed' AND sessions.entry_at IS NULL
          AND coalesce(sessions.fee_fen, 0) = 0
        RETURNING id
        """,
        *_columns(changes),
    )
    return {r["id"] for r in rows}


async def by_plate(conn: asyncpg.Connection, plate: str, *, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, lot_id, plate, status, entry_at, exit_at, fee_fen, tariff_id,
                  tariff_version, pricing_reason, superseded_by, flags
           FROM sessions WHERE plate = $1
           ORDER BY coalesce(entry_at, exit_at) DESC, id DESC LIMIT $2""",
        plate,
        limit,
    )


async def open_by_lot(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT lot_id, count(*) AS n FROM sessions_open GROUP BY lot_id")


async def closed_for_billing(conn: asyncpg.Connection, ids: Sequence[str]) -> list[asyncpg.Record]:
    """Merged rows of sessions that are closed with a fee, among ``ids``."""
    return await conn.fetch(
        """SELECT id, lot_id, plate, account_id, exit_at, fee_fen, tariff_id,
                  tariff_version, quote::text AS quote
           FROM sessions
           WHERE id = ANY($1::text[]) AND status = 'closed' AND fee_fen > 0
           ORDER BY id""",
        list(ids),
    )


async def open_unplated(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    session_id: str,
    lot_id: str,
    entry_at: datetime,
    account_id: str,
    flags: Sequence[str],
) -> None:
    """An unplated car let in by the account's scan: one plain INSERT (nothing to merge,
    nothing to supersede). A second open one of the account violates
    ``sessions_one_open_unplated_per_account`` (asyncpg.UniqueViolationError)."""
    await ensure_months(conn, [session_id])
    await conn.execute(
        """INSERT INTO sessions (id, lot_id, status, entry_at, entry_device_id, account_id, flags)
           VALUES ($1, $2, 'open', $3, $4, $5, $6::text[])""",
        session_id,
        lot_id,
        entry_at,
        f"account:{account_id}",
        account_id,
        list(flags),
    )


async def lock_session(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, lot_id, plate, account_id, status, entry_at, exit_at FROM sessions "
        "WHERE id = $1 "
        "FOR UPDATE",
        session_id,
    )


async def set_plate(conn: asyncpg.Connection, session_id: str, plate: str) -> None:
    """Raises asyncpg's UniqueViolationError when the plate has an open session already."""
    await conn.execute(
        "UPDATE sessions SET plate = $2, updated_at = now() WHERE id = $1",
        session_id,
        plate,
    )


# ------------------------------------------------------------------ a driver's sessions

#: Open sessions my scans made: my unplated car's (one at most), on-street stays I claimed.
_MADE_BY_SQL: Final = """
SELECT id, lot_id, plate, entry_at
  FROM sessions WHERE account_id = $1 AND status = 'open'
"""


# Sessions my scans made are mine, and those billed to me (a stay is billed to
# the plate's verified holder at the close); sessions of a plate are mine while I
# hold it verified, from its binding on ($5 plates, $6 their bound_at:
# accounts.my_plates), so neither a stranger who typed the plate nor its next
# holder reads them.
_HISTORY_SQL: Final = """
SELECT s.id, s.lot_id, s.plate, s.status, s.entry_at, s.exit_at, s.fee_fen, s.tariff_id,
       s.tariff_version, s.pricing_reason, b.id AS bill_id, b.status AS bill_status,
       coalesce(s.entry_at, s.exit_at) AS at
  FROM sessions s
  -- the stay's bill; a stay paid in the lot before the exit has none, its (latest
  -- standing) prepay bill stands for it
  LEFT JOIN LATERAL (
        SELECT x.id, x.status, x.account_id FROM bills x
         WHERE x.session_id = s.id
           AND (x.kind = 'stay' OR x.status <> 'written_off')
         ORDER BY x.kind = 'stay' DESC, x.closed_at DESC, x.id DESC
         LIMIT 1) b ON true
 WHERE s.status <> 'superseded'
   AND (s.account_id = $1 OR b.account_id = $1 OR EXISTS (
        SELECT 1 FROM unnest($5::text[], $6::timestamptz[]) AS v(plate, bound_at)
         WHERE v.plate = s.plate AND coalesce(s.entry_at, s.exit_at) >= v.bound_at))
   AND ($2::timestamptz IS NULL OR (coalesce(s.entry_at, s.exit_at), s.id) < ($2, $3::text))
 ORDER BY coalesce(s.entry_at, s.exit_at) DESC, s.id DESC
 LIMIT $4
"""


async def made_by(conn: asyncpg.Connection, account_id: str) -> list[asyncpg.Record]:
    """Open sessions the account's scans made (id, lot_id, plate, entry_at)."""
    return await conn.fetch(_MADE_BY_SQL, account_id)


async def recorded_open(conn: asyncpg.Connection, plates: list[str]) -> list[asyncpg.Record]:
    """Open sessions of the plates as recorded (id, lot_id, plate, entry_at)."""
    return await conn.fetch(
        "SELECT id, lot_id, plate, entry_at FROM sessions "
        "WHERE plate = ANY($1::text[]) AND status = 'open' AND entry_at IS NOT NULL",
        plates,
    )


async def history(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    before: tuple[datetime, str] | None,
    limit: int,
    plates: list[str],
    bound_at: list[datetime],
) -> list[asyncpg.Record]:
    at, sid = before if before is not None else (None, None)
    return await conn.fetch(_HISTORY_SQL, account_id, at, sid, limit, plates, bound_at)


async def entry_at(conn: asyncpg.Connection, session_id: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT entry_at FROM sessions WHERE id = $1", session_id
    )
    return value


async def is_open(conn: asyncpg.Connection, session_id: str) -> bool | None:
    value: bool | None = await conn.fetchval(
        "SELECT status = 'open' FROM sessions WHERE id = $1", session_id
    )
    return value


async def unplated_open_lot(conn: asyncpg.Connection, account_id: str) -> str | None:
    lot: str | None = await conn.fetchval(
        "SELECT lot_id FROM sessions WHERE account_id = $1 AND status = 'open' AND plate IS NULL",
        account_id,
    )
    return lot


async def lock_unplated_open(
    conn: asyncpg.Connection, lot_id: str, account_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, lot_id, entry_at FROM sessions WHERE lot_id = $1 AND status = 'open' "
        "AND plate IS NULL AND account_id = $2 FOR UPDATE",
        lot_id,
        account_id,
    )


async def holder_view(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT account_id, plate, entry_at FROM sessions WHERE id = $1", session_id
    )


async def open_in_lot(conn: asyncpg.Connection, lot_id: str, plate: str) -> str | None:
    sid: str | None = await conn.fetchval(
        "SELECT id FROM sessions WHERE lot_id = $1 AND plate = $2 AND status = 'open' "
        "AND entry_at IS NOT NULL",
        lot_id,
        plate,
    )
    return sid


async def lock_for_prepay(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, lot_id, plate, status, entry_at FROM sessions WHERE id = $1 FOR UPDATE",
        session_id,
    )


async def stay_of_bill(
    conn: asyncpg.Connection, bill_id: str, *, review: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT s.entry_at, b.lot_id,
                  EXISTS (SELECT 1 FROM anomalies a
                           WHERE a.session_id = s.id AND a.kind = $2
                             AND a.status = 'open') AS needs_review
           FROM bills b
           JOIN sessions s ON s.id = b.session_id WHERE b.id = $1""",
        bill_id,
        review,
    )
