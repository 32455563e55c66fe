"""The occupancy core's records in PostgreSQL (SQL only): the directory and plate
flags it loads, what the rebuild reads, what the persister writes, the CLI's reads.
The live state is in Redis (``store``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, Final

import asyncpg

LIBRARY: Final = (
    resources.files("parking.occupancy").joinpath("lua/occupancy.lua").read_text("utf-8")
)

Reply = list[Any] | bytes | int | Exception | None
Arg = bytes | str | int


async def live_devices(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    # The device registry's table (parking.devices owns it); read-only here.
    return await conn.fetch(
        "SELECT device_id, lot_id, kind, lane_id, space_id FROM devices WHERE revoked_at IS NULL"
    )


async def blacklisted_plates(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT plate, reason FROM plate_blacklist")


async def add_to_blacklist(
    conn: asyncpg.Connection, plate: str, reason: str, *, by: str, company_id: str | None
) -> None:
    """List the plate, or change the reason of its entry (the entry keeps its owner)."""
    await conn.execute(
        "INSERT INTO plate_blacklist (plate, reason, created_by, company_id) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (plate) DO UPDATE SET reason = EXCLUDED.reason",
        plate,
        reason,
        by,
        company_id,
    )


async def remove_from_blacklist(conn: asyncpg.Connection, plate: str) -> str | None:
    """The reason the plate was listed for, None when it was not listed."""
    reason: str | None = await conn.fetchval(
        "DELETE FROM plate_blacklist WHERE plate = $1 RETURNING reason", plate
    )
    return reason


async def live_passes(conn: asyncpg.Connection, now: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, plate, group_id, valid_from, valid_until FROM monthly_passes
           WHERE revoked_at IS NULL AND valid_until > $1""",
        now,
    )


async def arrears_since(
    conn: asyncpg.Connection, plates: list[str] | None = None
) -> list[asyncpg.Record]:
    """Per plate owing something, when its oldest unpaid bill closed; every plate, or
    only ``plates``. What parking.bills counts as owed (see bills_owed_by_plate_idx),
    less the prepay bills of stays still under way: an unpaid one is an offer, and
    anyone in the lot can make one for any plate, so it never holds a car."""
    return await conn.fetch(
        """SELECT plate, min(closed_at) AS since FROM bills b
           WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed')
             AND plate IS NOT NULL AND ($1::text[] IS NULL OR plate = ANY($1::text[]))
             AND (kind = 'stay' OR NOT EXISTS (
                  SELECT 1 FROM sessions s WHERE s.id = b.session_id AND s.status = 'open'))
           GROUP BY plate""",
        plates,
    )


async def open_sessions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, lot_id, plate, entry_at, entry_device_id, entry_seq, account_id
           FROM sessions WHERE status = 'open'"""
    )


async def exits_without_entry(conn: asyncpg.Connection, since: datetime) -> list[asyncpg.Record]:
    """Exits without an entry read since ``since`` that no entry has completed yet."""
    return await conn.fetch(
        """SELECT id, lot_id, plate, exit_at, exit_device_id, exit_seq FROM sessions
           WHERE status = 'closed' AND entry_at IS NULL AND pricing_reason = 'no_entry'
             AND plate IS NOT NULL AND exit_at >= $1 ORDER BY exit_at""",
        since,
    )


async def space_states(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT lot_id, space_id, occupied, device_id, seq, observed_at FROM space_states"
    )


async def device_marks_pg(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per device: watermark and the stored seqs above it (normally none).

    Every device with a stored event has a device_watermarks row (seq 0 until
    its seq 1 is stored), so this reads one row per device plus an index range.
    """
    return await conn.fetch(
        """SELECT w.device_id, w.seq AS wm,
                  ARRAY(SELECT e.seq FROM device_events e
                        WHERE e.device_id = w.device_id AND e.seq > w.seq
                        ORDER BY e.seq) AS above
           FROM device_watermarks w"""
    )


async def ensure_partitions(conn: asyncpg.Connection, months: Iterable[datetime]) -> None:
    for month in sorted(set(months)):
        await conn.execute("SELECT ensure_event_partitions($1::date)", month.date())


async def insert_device_events(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[Any, ...]],
) -> set[tuple[str, int]]:
    """Insert (device, seq, kind, observed_at, received_at, event_at, sent_at,
    clock_offset_ms); return the pairs that were new."""
    if not rows:
        return set()
    cols = list(zip(*rows, strict=True))
    found = await conn.fetch(
        """INSERT INTO device_events (device_id, seq, kind, observed_at, received_at, event_at,
                                      sent_at, clock_offset_ms)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[],
                                $5::timestamptz[], $6::timestamptz[], $7::timestamptz[],
                                $8::bigint[])
           ON CONFLICT DO NOTHING
           RETURNING device_id, seq""",
        *[list(c) for c in cols],
    )
    return {(r["device_id"], r["seq"]) for r in found}


async def insert_passages(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO passages (device_id, seq, received_at, observed_at, lot_id, lane_id,
                                 direction, plate, plate_raw, plate_color, confidence, image_ref,
                                 outcome, hold_reason, session_id, event_at, sent_at,
                                 clock_offset_ms)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
                                $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                                $10::text[], $11::real[], $12::text[], $13::text[], $14::text[],
                                $15::text[], $16::timestamptz[], $17::timestamptz[],
                                $18::bigint[])
           ON CONFLICT DO NOTHING""",
        *cols,
    )


async def insert_space_events(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO space_events (device_id, seq, received_at, observed_at, lot_id, space_id,
                                     occupied, battery_pct, event_at, sent_at, clock_offset_ms)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
                                $5::text[], $6::text[], $7::bool[], $8::smallint[],
                                $9::timestamptz[], $10::timestamptz[], $11::bigint[])
           ON CONFLICT DO NOTHING""",
        *cols,
    )


async def upsert_space_states(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(lot, space, occupied, device, seq, observed_at, received_at); the newest seq wins."""
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO space_states (lot_id, space_id, occupied, device_id, seq, observed_at,
                                     received_at)
           SELECT DISTINCT ON (lot_id, space_id) *
           FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::bigint[],
                       $6::timestamptz[], $7::timestamptz[])
                AS t(lot_id, space_id, occupied, device_id, seq, observed_at, received_at)
           ORDER BY lot_id, space_id, seq DESC
           ON CONFLICT (lot_id, space_id) DO UPDATE SET
               occupied = EXCLUDED.occupied, device_id = EXCLUDED.device_id,
               seq = EXCLUDED.seq, observed_at = EXCLUDED.observed_at,
               received_at = EXCLUDED.received_at
           WHERE space_states.device_id <> EXCLUDED.device_id
              OR space_states.seq < EXCLUDED.seq""",
        *cols,
    )


async def insert_dead_letters(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(source, received_at, topic, device_id, seq, reason, payload)."""
    if not rows:
        return
    await conn.executemany(
        """INSERT INTO dead_letters (source, received_at, topic, device_id, seq, reason, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source) DO NOTHING""",
        rows,
    )


async def insert_anomalies(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(id, kind, lot, device, plate, session, image_ref, details json, created_at)."""
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO anomalies (id, kind, lot_id, device_id, plate, session_id, image_ref,
                                  details, created_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::jsonb[], $9::timestamptz[])
           -- also the one-open-per-device indexes (device_clock_skew)
           ON CONFLICT DO NOTHING""",
        *cols,
    )


async def resolve_device_anomalies(
    conn: asyncpg.Connection, *, kind: str, device_ids: Sequence[str], at: datetime, why: str
) -> None:
    if not device_ids:
        return
    await conn.execute(
        """UPDATE anomalies SET status = 'resolved', resolved_at = $3, resolution = $4
           WHERE kind = $1 AND status = 'open' AND device_id = ANY($2::text[])""",
        kind,
        list(device_ids),
        at,
        why,
    )


async def resolve_completed_exits(
    conn: asyncpg.Connection, session_ids: Sequence[str], at: datetime
) -> None:
    """An exit without entry whose entry has arrived since (a late entry completed the
    session) is no longer an anomaly: resolved, whichever of the two was stored first."""
    if not session_ids:
        return
    await conn.execute(
        """UPDATE anomalies a SET status = 'resolved', resolved_at = $2,
                                  resolution = 'entry arrived late: ' || s.entry_device_id
                                               || ':' || s.entry_seq
           FROM sessions s
           WHERE a.kind = 'exit_without_entry' AND a.status = 'open'
             AND a.session_id = ANY($1::text[]) AND s.id = a.session_id
             AND s.entry_at IS NOT NULL""",
        list(session_ids),
        at,
    )


async def went_back(
    conn: asyncpg.Connection, pairs: Sequence[tuple[str, int]]
) -> list[asyncpg.Record]:
    """Of the stored events ``pairs`` and their neighbours by seq, those observed (device
    clock) before the same device's previous stored event by seq."""
    if not pairs:
        return []
    devices, seqs = (list(c) for c in zip(*pairs, strict=True))
    # Each stored new event against the one before it, and the one after it against
    # the new event (a gap filled late). The neighbours' columns come out of the lateral
    # index walks themselves: joining them back by (device_id, seq) let the planner
    # walk all of a device's events per new event, which grew through the day (2 s a
    # batch of 2,000 by 17:00 of the city-day replay, against 0.05 s now).
    return await conn.fetch(
        """WITH new AS (
               SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(device_id, seq)
           ), cur AS (
               SELECT e.device_id, e.seq, e.observed_at, e.received_at
                 FROM new x
                 JOIN device_events e ON e.device_id = x.device_id AND e.seq = x.seq
                WHERE e.observed_at IS NOT NULL
           )
           SELECT c.device_id, c.seq, c.observed_at, c.received_at,
                  b.seq AS prev_seq, b.observed_at AS prev_observed_at
             FROM cur c
             CROSS JOIN LATERAL (
                 SELECT seq, observed_at FROM device_events d
                  WHERE d.device_id = c.device_id AND d.seq < c.seq
                    AND d.observed_at IS NOT NULL
                  ORDER BY seq DESC LIMIT 1) b
            WHERE c.observed_at < b.observed_at
           UNION
           SELECT a.device_id, a.seq, a.observed_at, a.received_at,
                  c.seq AS prev_seq, c.observed_at AS prev_observed_at
             FROM cur c
             CROSS JOIN LATERAL (
                 SELECT device_id, seq, observed_at, received_at FROM device_events d
                  WHERE d.device_id = c.device_id AND d.seq > c.seq
                    AND d.observed_at IS NOT NULL
                  ORDER BY seq LIMIT 1) a
            WHERE a.observed_at < c.observed_at""",
        devices,
        seqs,
    )


async def record_device_clocks(
    conn: asyncpg.Connection, clocks: Mapping[str, tuple[int | None, bool, datetime]]
) -> None:
    """Each device's latest clock reading (offset ms, skewed, at); an older one never
    replaces a newer."""
    if not clocks:
        return
    rows = [(d, offset, skewed, at) for d, (offset, skewed, at) in sorted(clocks.items())]
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO device_clocks (device_id, offset_ms, skewed, checked_at)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::timestamptz[])
           ON CONFLICT (device_id) DO UPDATE
              SET offset_ms = coalesce(EXCLUDED.offset_ms, device_clocks.offset_ms),
                  skewed = EXCLUDED.skewed, checked_at = EXCLUDED.checked_at
            WHERE device_clocks.checked_at <= EXCLUDED.checked_at""",
        *cols,
    )


async def resolve_filled_gaps(conn: asyncpg.Connection, device_ids: Sequence[str]) -> None:
    """A seq gap is resolved once the device's watermark has passed it."""
    if not device_ids:
        return
    await conn.execute(
        """UPDATE anomalies a SET status = 'resolved', resolved_at = w.updated_at,
                                  resolution = 'filled: watermark ' || w.seq
           FROM device_watermarks w
           WHERE a.kind = 'seq_gap' AND a.status = 'open' AND a.device_id = w.device_id
             AND a.device_id = ANY($1::text[]) AND (a.details->>'to')::bigint <= w.seq""",
        list(device_ids),
    )


async def current_watermarks(conn: asyncpg.Connection, device_ids: Sequence[str]) -> dict[str, int]:
    """Stored watermarks (> 0) of these devices."""
    if not device_ids:
        return {}
    rows = await conn.fetch(
        "SELECT device_id, seq FROM device_watermarks "
        "WHERE device_id = ANY($1::text[]) AND seq > 0",
        list(device_ids),
    )
    return {r["device_id"]: r["seq"] for r in rows}


async def advance_watermarks(
    conn: asyncpg.Connection, device_ids: Sequence[str], now: datetime
) -> dict[str, int]:
    """Move each device's watermark to the end of its contiguous run of stored seqs.

    Returns device -> new watermark for the devices whose watermark moved. Only
    committed or own rows are visible, so the result never covers a seq that is
    not stored; GREATEST keeps it monotonic when two persisters race. A device
    seen for the first time gets its row (seq 0) even when nothing is covered yet.
    """
    if not device_ids:
        return {}
    rows = await conn.fetch(
        """WITH d AS (
               SELECT t.device_id, coalesce(w.seq, 0) AS old, w.seq IS NULL AS fresh
               FROM unnest($1::text[]) AS t(device_id)
               LEFT JOIN device_watermarks w USING (device_id)
           ), next AS (
               SELECT d.device_id, d.old, d.fresh,
                      CASE WHEN EXISTS (SELECT 1 FROM device_events e
                                        WHERE e.device_id = d.device_id AND e.seq = d.old + 1)
                      THEN (SELECT e.seq FROM device_events e
                            WHERE e.device_id = d.device_id AND e.seq > d.old
                              AND NOT EXISTS (SELECT 1 FROM device_events f
                                              WHERE f.device_id = e.device_id
                                                AND f.seq = e.seq + 1)
                            ORDER BY e.seq LIMIT 1)
                      ELSE d.old END AS new
               FROM d
           )
           INSERT INTO device_watermarks AS w (device_id, seq, updated_at)
           SELECT device_id, new, $2 FROM next WHERE fresh OR new > old
           ON CONFLICT (device_id) DO UPDATE
               SET seq = GREATEST(w.seq, EXCLUDED.seq), updated_at = EXCLUDED.updated_at
           RETURNING device_id, seq""",
        list(device_ids),
        now,
    )
    return {r["device_id"]: r["seq"] for r in rows if r["seq"] > 0}


async def watermarks(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT device_id, seq FROM device_watermarks")
    return {r["device_id"]: r["seq"] for r in rows}


async def dead_letters(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, received_at, topic, device_id, seq, reason, payload
           FROM dead_letters ORDER BY id DESC LIMIT $1""",
        limit,
    )


async def anomalies(
    conn: asyncpg.Connection, *, kind: str | None, status: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, kind, lot_id, device_id, plate, session_id, image_ref, details::text,
                  status, created_at, resolved_at, resolution
           FROM anomalies
           WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2)
           ORDER BY created_at DESC, id LIMIT $3""",
        kind,
        status,
        limit,
    )


async def session_head(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT lot_id, plate, status, entry_at, account_id FROM sessions WHERE id = $1",
        session_id,
    )


async def prepaid_open_sessions(conn: asyncpg.Connection) -> list[str]:
    """Open plated sessions that paid in the lot (their exit display hints)."""
    rows = await conn.fetch(
        """SELECT DISTINCT b.session_id FROM bills b JOIN sessions s ON s.id = b.session_id
           WHERE b.kind = 'prepay' AND s.status = 'open' AND s.plate IS NOT NULL"""
    )
    return [r["session_id"] for r in rows]
