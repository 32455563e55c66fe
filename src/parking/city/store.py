"""The city's rollups in PostgreSQL (SQL only): the marks of changed hours, an hour's
figures per lot from the source tables, medians per scope, and ``city_rollups``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final

import asyncpg

from parking.city.model import ADDED, Rollup, Step
from parking.lots.model import Lot

#: The columns the job recomputes from the source tables (the sampled ones,
#: occupied_* and devices*, are written by sample() only).
COUNTED: Final = ("capacity", *ADDED, "stay_median_s")
_TYPES: Final = {
    "capacity": "int",
    "entries": "int",
    "exits": "int",
    "stays": "int",
    "stay_seconds": "float8",
    "stay_median_s": "float8",
    "prepaid_exits": "int",
    "billed_fen": "int8",
    "bills": "int",
    "collected_fen": "int8",
    "paid_bills": "int",
    "contactless_bills": "int",
    "arrears_fen": "int8",
    "arrears_bills": "int",
    "recovered_fen": "int8",
    "recovered_bills": "int",
    "disputes": "int",
}
_SAMPLED: Final = ("occupied_peak", "occupied_last", "devices", "devices_online", "lane_buckets")


async def take_changes(conn: asyncpg.Connection) -> set[datetime]:
    """The hours marked as changed that this transaction can see, removed."""
    rows = await conn.fetch("DELETE FROM rollup_changes RETURNING hour")
    return {r["hour"] for r in rows}


async def mark(conn: asyncpg.Connection, hours: Sequence[datetime]) -> None:
    """Mark hours for the next run (a backfill, or what a failed run had taken)."""
    await conn.execute(
        "INSERT INTO rollup_changes (hour) SELECT unnest($1::timestamptz[])", list(hours)
    )


async def pending(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(DISTINCT hour) FROM rollup_changes"))


_LOT_HOUR: Final = """
WITH
entered AS (
    SELECT lot_id, count(*) AS n FROM sessions
    WHERE entry_at >= $1 AND entry_at < $2 AND status IN ('open', 'closed')
    GROUP BY lot_id
),
exited AS (
    SELECT s.lot_id, count(*) AS n, count(s.entry_at) AS stays,
           coalesce(sum(extract(epoch FROM s.exit_at - s.entry_at))
                    FILTER (WHERE s.entry_at IS NOT NULL), 0) AS stay_seconds,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM bills p
               WHERE p.session_id = s.id AND p.kind = 'prepay' AND p.paid_at IS NOT NULL
           )) AS prepaid
    FROM sessions s
    WHERE s.exit_at >= $1 AND s.exit_at < $2 AND s.status = 'closed'
    GROUP BY s.lot_id
),
billed AS (
    SELECT lot_id, sum(amount_fen) AS fen, count(*) AS n FROM bills
    WHERE created_at >= $1 AND created_at < $2
    GROUP BY lot_id
),
paid AS (
    SELECT b.lot_id, sum(b.amount_fen) AS fen, count(*) AS n,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM contactless_deductions d
               WHERE d.bill_id = b.id AND d.status = 'succeeded'
           )) AS contactless,
           coalesce(sum(b.amount_fen) FILTER (
               WHERE b.kind <> 'prepay' AND b.paid_at > b.closed_at + $3), 0) AS recovered_fen,
           count(*) FILTER (
               WHERE b.kind <> 'prepay' AND b.paid_at > b.closed_at + $3) AS recovered
    FROM bills b
    WHERE b.paid_at >= $1 AND b.paid_at < $2
    GROUP BY b.lot_id
),
arrears AS (
    SELECT lot_id, sum(amount_fen) AS fen, count(*) AS n FROM bills
    WHERE kind <> 'prepay'
      AND closed_at >= $1 - $3 AND closed_at < $2 - $3 AND closed_at + $3 <= $4
      AND status <> 'written_off'
      AND (paid_at IS NULL OR paid_at > closed_at + $3)
    GROUP BY lot_id
),
disputed AS (
    SELECT b.lot_id, count(*) AS n FROM disputes d JOIN bills b ON b.id = d.bill_id
    WHERE d.opened_at >= $1 AND d.opened_at < $2
    GROUP BY b.lot_id
),
touched AS (
    SELECT lot_id FROM entered UNION SELECT lot_id FROM exited UNION SELECT lot_id FROM billed
    UNION SELECT lot_id FROM paid UNION SELECT lot_id FROM arrears UNION SELECT lot_id FROM disputed
)
SELECT l.lot_id,
       coalesce(entered.n, 0) AS entries,
       coalesce(exited.n, 0) AS exits,
       coalesce(exited.stays, 0) AS stays,
       coalesce(exited.stay_seconds, 0)::float8 AS stay_seconds,
       coalesce(exited.prepaid, 0) AS prepaid_exits,
       coalesce(billed.fen, 0)::int8 AS billed_fen,
       coalesce(billed.n, 0) AS bills,
       coalesce(paid.fen, 0)::int8 AS collected_fen,
       coalesce(paid.n, 0) AS paid_bills,
       coalesce(paid.contactless, 0) AS contactless_bills,
       coalesce(arrears.fen, 0)::int8 AS arrears_fen,
       coalesce(arrears.n, 0) AS arrears_bills,
       coalesce(paid.recovered_fen, 0)::int8 AS recovered_fen,
       coalesce(paid.recovered, 0) AS recovered_bills,
       coalesce(disputed.n, 0) AS disputes
FROM touched l
LEFT JOIN entered ON entered.lot_id = l.lot_id
LEFT JOIN exited ON exited.lot_id = l.lot_id
LEFT JOIN billed ON billed.lot_id = l.lot_id
LEFT JOIN paid ON paid.lot_id = l.lot_id
LEFT JOIN arrears ON arrears.lot_id = l.lot_id
LEFT JOIN disputed ON disputed.lot_id = l.lot_id
"""


async def lot_counts(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    arrears_after: timedelta,
) -> list[asyncpg.Record]:
    """Each lot with something in [start, end): its counted figures (one row per lot)."""
    return list(await conn.fetch(_LOT_HOUR, start, end, arrears_after, now))


_MEDIANS: Final = """
SELECT l.id AS lot_id, l.district_code, l.company_id,
       GROUPING(l.id) AS no_lot, GROUPING(l.district_code) AS no_district,
       GROUPING(l.company_id) AS no_company,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM s.exit_at - s.entry_at)) AS median
FROM sessions s
JOIN unnest($3::text[], $4::text[], $5::text[]) AS l(id, district_code, company_id)
  ON l.id = s.lot_id
WHERE s.exit_at >= $1 AND s.exit_at < $2 AND s.status = 'closed' AND s.entry_at IS NOT NULL
GROUP BY GROUPING SETS ((), (l.district_code), (l.company_id), (l.id))
"""


async def stay_medians(
    conn: asyncpg.Connection, start: datetime, end: datetime, lots: Sequence[Lot]
) -> dict[str, float]:
    """scope -> the median stay (seconds) of the sessions that left [start, end) from
    one of ``lots`` (whose districts and companies are the scopes)."""
    out: dict[str, float] = {}
    rows = await conn.fetch(
        _MEDIANS,
        start,
        end,
        [lot.id for lot in lots],
        [lot.district_code for lot in lots],
        [lot.company_id for lot in lots],
    )
    for r in rows:
        if r["median"] is None:  # the grand total of no stays
            continue
        if not r["no_lot"]:
            out[f"lot:{r['lot_id']}"] = float(r["median"])
        elif not r["no_district"]:
            out[f"district:{r['district_code']}"] = float(r["median"])
        elif not r["no_company"]:
            if r["company_id"] is not None:
                out[f"company:{r['company_id']}"] = float(r["median"])
        else:
            out["city"] = float(r["median"])
    return out


# The column lists are the constants above, never input.
_SAVE_COUNTED: Final = f"""
INSERT INTO city_rollups (scope, step, bucket, refreshed_at, {", ".join(COUNTED)})
SELECT scope, $2, $3, $4, {", ".join(COUNTED)}
FROM unnest($1::text[], {", ".join(f"${i + 5}::{_TYPES[c]}[]" for i, c in enumerate(COUNTED))})
     AS t(scope, {", ".join(COUNTED)})
ON CONFLICT (scope, step, bucket) DO UPDATE
SET {", ".join(f"{c} = EXCLUDED.{c}" for c in COUNTED)}, refreshed_at = EXCLUDED.refreshed_at
"""  # noqa: S608
_ZERO_OTHERS: Final = f"""
UPDATE city_rollups
SET {
    ", ".join(
        "stay_median_s = NULL" if c == "stay_median_s" else f"{c} = 0"
        for c in COUNTED
        if c != "capacity"
    )
}, refreshed_at = $4
WHERE step = $1 AND bucket = $2 AND scope <> ALL($3::text[])
  AND (entries, exits, bills, paid_bills, arrears_bills, disputes) <> (0, 0, 0, 0, 0, 0)
"""  # noqa: S608


async def save_counted(
    conn: asyncpg.Connection, step: Step, bucket: datetime, rows: Sequence[Rollup], now: datetime
) -> None:
    """Write the counted figures of every scope of one bucket; a scope that had figures
    before and has none now is zeroed (its sampled figures stay)."""
    await conn.execute(
        _SAVE_COUNTED,
        [r.scope for r in rows],
        step.value,
        bucket,
        now,
        *[[getattr(r, c) for r in rows] for c in COUNTED],
    )
    await conn.execute(_ZERO_OTHERS, step.value, bucket, [r.scope for r in rows], now)


async def save_sampled(
    conn: asyncpg.Connection, bucket: datetime, rows: Sequence[Rollup], now: datetime
) -> None:
    """The live samples of the hour ``bucket``: the highest occupied so far, the latest
    occupied and device counts, the lane histogram (absolute counts for the hour)."""
    await conn.execute(
        """
        INSERT INTO city_rollups (scope, step, bucket, refreshed_at, capacity, occupied_peak,
                                  occupied_last, devices, devices_online)
        SELECT scope, 'hour', $2, $7, capacity, occupied, occupied, devices, online
        FROM unnest($1::text[], $3::int[], $4::int[], $5::int[], $6::int[])
             AS t(scope, capacity, occupied, devices, online)
        ON CONFLICT (scope, step, bucket) DO UPDATE SET
            occupied_peak = greatest(city_rollups.occupied_peak, EXCLUDED.occupied_peak),
            occupied_last = EXCLUDED.occupied_last,
            devices = EXCLUDED.devices,
            devices_online = EXCLUDED.devices_online,
            capacity = EXCLUDED.capacity
        """,
        [r.scope for r in rows],
        bucket,
        [r.capacity for r in rows],
        [r.occupied_last for r in rows],
        [r.devices for r in rows],
        [r.devices_online for r in rows],
        now,
    )


async def save_lane_buckets(
    conn: asyncpg.Connection, bucket: datetime, counts: Sequence[int], now: datetime
) -> None:
    await conn.execute(
        """
        INSERT INTO city_rollups (scope, step, bucket, refreshed_at, lane_buckets)
        VALUES ('city', 'hour', $1, $3, $2)
        ON CONFLICT (scope, step, bucket) DO UPDATE SET lane_buckets = EXCLUDED.lane_buckets
        """,
        bucket,
        list(counts),
        now,
    )


async def hours_of(conn: asyncpg.Connection, start: datetime, end: datetime) -> list[Rollup]:
    """Every scope's hour rows in [start, end)."""
    return [
        _rollup(r)
        for r in await conn.fetch(
            "SELECT * FROM city_rollups WHERE step = 'hour' AND bucket >= $1 AND bucket < $2",
            start,
            end,
        )
    ]


async def save_day(conn: asyncpg.Connection, rows: Sequence[Rollup], now: datetime) -> None:
    """Replace a day's rows (every column: they are derived from the hours)."""
    if not rows:
        return
    bucket = rows[0].bucket
    await conn.execute("DELETE FROM city_rollups WHERE step = 'day' AND bucket = $1", bucket)
    columns = (*COUNTED, *_SAMPLED)
    await conn.copy_records_to_table(
        "city_rollups",
        records=[(r.scope, "day", r.bucket, now, *[getattr(r, c) for c in columns]) for r in rows],
        columns=["scope", "step", "bucket", "refreshed_at", *columns],
    )


async def series(
    conn: asyncpg.Connection, scope: str, step: Step, start: datetime, end: datetime
) -> list[Rollup]:
    return [
        _rollup(r)
        for r in await conn.fetch(
            """
            SELECT * FROM city_rollups
            WHERE scope = $1 AND step = $2 AND bucket >= $3 AND bucket < $4
            ORDER BY bucket
            """,
            scope,
            step.value,
            start,
            end,
        )
    ]


async def outstanding_before(conn: asyncpg.Connection, scope: str, before: datetime) -> int:
    """Arrears turned up minus arrears recovered, over every hour before ``before``."""
    return int(
        await conn.fetchval(
            """
            SELECT coalesce(sum(arrears_fen - recovered_fen), 0) FROM city_rollups
            WHERE scope = $1 AND step = 'hour' AND bucket < $2
            """,
            scope,
            before,
        )
    )


async def day_of(conn: asyncpg.Connection, scope: str, bucket: datetime) -> Rollup | None:
    row = await conn.fetchrow(
        "SELECT * FROM city_rollups WHERE scope = $1 AND step = 'day' AND bucket = $2",
        scope,
        bucket,
    )
    return None if row is None else _rollup(row)


async def lot_days(conn: asyncpg.Connection, bucket: datetime) -> list[Rollup]:
    return [
        _rollup(r)
        for r in await conn.fetch(
            "SELECT * FROM city_rollups WHERE step = 'day' AND bucket = $1 AND scope LIKE 'lot:%'",
            bucket,
        )
    ]


async def reconciliation_of(conn: asyncpg.Connection, day: date) -> list[asyncpg.Record]:
    """Each provider's latest reconciliation run of ``day``."""
    return list(
        await conn.fetch(
            """
            SELECT DISTINCT ON (provider) provider, settled, matched_fen, discrepancies, pending
            FROM reconciliation_runs WHERE business_date = $1
            ORDER BY provider, finished_at DESC
            """,
            day,
        )
    )


async def registered_devices(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every device not revoked: id, lot and kind."""
    return list(
        await conn.fetch("SELECT device_id, lot_id, kind FROM devices WHERE revoked_at IS NULL")
    )


def _rollup(r: asyncpg.Record) -> Rollup:
    values: dict[str, Any] = {c: r[c] for c in (*COUNTED, *_SAMPLED)}
    if values["lane_buckets"] is not None:
        values["lane_buckets"] = list(values["lane_buckets"])
    return Rollup(
        scope=r["scope"],
        step=Step(r["step"]),
        bucket=r["bucket"],
        refreshed_at=r["refreshed_at"],
        **values,
    )
