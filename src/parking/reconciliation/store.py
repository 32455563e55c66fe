"""Statements, runs, discrepancies and the holding pool (SQL only; the caller's tx).

Our side of the matching (payment attempts and refund requests) is read here
too, read-only: the two streams are sorted in PostgreSQL with the "C"
collation, the byte order Python compares strings in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final

import asyncpg

from parking.clock import SHANGHAI
from parking.reconciliation.model import (
    HOLDING_DAYS,
    Discrepancy,
    Found,
    Line,
    Ours,
    PendingItem,
    Run,
    StatementImport,
    Waiting,
)

_FETCH: Final = 20_000
_LINE_COLUMNS: Final = (
    "import_id",
    "line_no",
    "kind",
    "match_key",
    "out_trade_no",
    "out_refund_no",
    "transaction_id",
    "refund_id",
    "state",
    "succeeded",
    "amount_fen",
    "fee_milli_fen",
    "trade_time",
    "line",
)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)
    return start, start + timedelta(days=1)


# ------------------------------------------------------------------ imports


async def current_import(
    conn: asyncpg.Connection, provider: str, day: date
) -> StatementImport | None:
    row = await conn.fetchrow(
        "SELECT * FROM statement_imports WHERE provider = $1 AND business_date = $2 "
        "AND replaced_at IS NULL",
        provider,
        day,
    )
    return None if row is None else StatementImport(**dict(row))


async def lock_day(conn: asyncpg.Connection, provider: str, day: date) -> None:
    """One import or run of a provider's day at a time (transaction-scoped)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('reconcile:' || $1::text || ':' || $2::text))",
        provider,
        day.isoformat(),
    )


async def insert_import(conn: asyncpg.Connection, statement: StatementImport) -> None:
    await conn.execute(
        """INSERT INTO statement_imports (id, provider, business_date, kind, sha256, size_bytes,
                                          source, path, lines, imported_by, imported_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        statement.id,
        statement.provider,
        statement.business_date,
        statement.kind,
        statement.sha256,
        statement.size_bytes,
        statement.source,
        statement.path,
        statement.lines,
        statement.imported_by,
        statement.imported_at,
    )


async def set_line_count(conn: asyncpg.Connection, import_id: str, lines: int) -> None:
    await conn.execute("UPDATE statement_imports SET lines = $2 WHERE id = $1", import_id, lines)


async def mark_replaced(
    conn: asyncpg.Connection, import_id: str, *, by: str | None, at: datetime
) -> None:
    await conn.execute(
        "UPDATE statement_imports SET replaced_at = $3, replaced_by = $2 WHERE id = $1",
        import_id,
        by,
        at,
    )


async def copy_lines(conn: asyncpg.Connection, import_id: str, lines: Iterable[Line]) -> None:
    """COPY the lines in (lazily: ``lines`` may be a generator over a streamed file)."""
    records = (
        (
            import_id,
            x.line_no,
            x.kind,
            x.match_key,
            x.out_trade_no,
            x.out_refund_no,
            x.transaction_id,
            x.refund_id,
            x.state,
            x.succeeded,
            x.amount_fen,
            x.fee_milli_fen,
            x.trade_time,
            x.line,
        )
        for x in lines
    )
    await conn.copy_records_to_table("statement_lines", records=records, columns=_LINE_COLUMNS)


async def imports(conn: asyncpg.Connection, provider: str, day: date) -> list[StatementImport]:
    rows = await conn.fetch(
        "SELECT * FROM statement_imports WHERE provider = $1 AND business_date = $2 "
        "ORDER BY imported_at, replaced_at IS NULL, id",
        provider,
        day,
    )
    return [StatementImport(**dict(r)) for r in rows]


# ------------------------------------------------------------------ the two sorted streams


_OURS: Final = """
WITH keys AS (
    SELECT DISTINCT kind, match_key FROM statement_lines WHERE import_id = $1
), pool AS (
    SELECT kind, match_key FROM reconciliation_pool
     WHERE provider = $2 AND (
           (status = 'waiting' AND business_date < $5)
        OR (business_date >= $5 - $6::int AND business_date < $5
            AND (status <> 'cleared' OR cleared_on = $5)))
), cleared_elsewhere AS (
    SELECT kind, match_key FROM reconciliation_pool
     WHERE provider = $2 AND status = 'cleared' AND cleared_on <> $5
), payments AS (
    SELECT 'payment' AS kind, a.out_trade_no AS match_key, a.out_trade_no,
           NULL::text AS out_refund_no, a.id AS record_id, a.status = 'paid' AS succeeded,
           a.status, a.amount_fen,
           CASE WHEN a.status = 'paid' THEN (a.settled_at AT TIME ZONE 'Asia/Shanghai')::date END
               AS business_date,
           a.transaction_id
      FROM payment_attempts a
     WHERE a.provider = $2 AND (
           (a.status = 'paid' AND a.settled_at >= $3 AND a.settled_at < $4
            AND a.out_trade_no NOT IN (
                SELECT match_key FROM cleared_elsewhere WHERE kind = 'payment'))
        OR a.out_trade_no IN (SELECT match_key FROM keys WHERE kind = 'payment')
        OR a.out_trade_no IN (SELECT match_key FROM pool WHERE kind = 'payment'))
), refunds AS (
    SELECT 'refund' AS kind, r.out_refund_no AS match_key, r.out_trade_no,
           r.out_refund_no, r.id AS record_id, r.status = 'refunded' AS succeeded,
           r.status, r.amount_fen,
           CASE WHEN r.status = 'refunded'
                THEN (r.refunded_at AT TIME ZONE 'Asia/Shanghai')::date END AS business_date,
           r.provider_refund_id AS transaction_id
      FROM refund_requests r
     WHERE r.provider = $2 AND (
           (r.status = 'refunded' AND r.refunded_at >= $3 AND r.refunded_at < $4
            AND r.out_refund_no NOT IN (
                SELECT match_key FROM cleared_elsewhere WHERE kind = 'refund'))
        OR r.out_refund_no IN (SELECT match_key FROM keys WHERE kind = 'refund')
        OR r.out_refund_no IN (SELECT match_key FROM pool WHERE kind = 'refund'))
), ours AS (
    SELECT * FROM payments UNION ALL SELECT * FROM refunds
), lines AS (
    SELECT line_no, kind, match_key, out_trade_no, out_refund_no, transaction_id, refund_id,
           state, succeeded, amount_fen, fee_milli_fen
      FROM statement_lines WHERE import_id = $1
)
SELECT l.line_no, l.kind, l.match_key, l.out_trade_no, l.out_refund_no, l.transaction_id,
       l.refund_id, l.state, l.succeeded, l.amount_fen, l.fee_milli_fen,
       o.kind, o.match_key, o.out_trade_no, o.out_refund_no, o.record_id, o.succeeded,
       o.status, o.amount_fen, o.business_date, o.transaction_id,
       coalesce(l.kind, o.kind), coalesce(l.match_key, o.match_key)
  FROM lines l FULL JOIN ours o ON o.kind = l.kind AND o.match_key = l.match_key
 ORDER BY coalesce(l.kind, o.kind) COLLATE "C", coalesce(l.match_key, o.match_key) COLLATE "C",
          l.line_no
"""

#: where a paired row's parts are: the line's fields, ours, then the group's key
_LINE_END: Final = 11
_OURS_END: Final = 21


async def paired(
    conn: asyncpg.Connection, import_id: str, provider: str, day: date
) -> AsyncIterator[tuple[list[Line], Ours | None]]:
    """(the import's lines of one key in line order, our record of that key), for every key
    of the import and every record of ours the day should see (those that succeeded on
    ``day``, those the pool re-checks, those a line names), by (kind, key); streamed from
    one cursor. Inside a transaction."""
    start, end = _day_bounds(day)
    group: list[Line] = []
    mine: Ours | None = None
    current: tuple[object, ...] | None = None
    async for record in conn.cursor(
        _OURS, import_id, provider, start, end, day, HOLDING_DAYS, prefetch=_FETCH
    ):
        row = tuple(record)
        key = row[_OURS_END:]
        if key != current:
            if current is not None:
                yield group, mine
            current, group = key, []
            mine = Ours(*row[_LINE_END:_OURS_END]) if row[_LINE_END] is not None else None
        if row[0] is not None:
            group.append(Line(*row[:_LINE_END]))
    if current is not None:
        yield group, mine


async def line_texts(
    conn: asyncpg.Connection, import_id: str, line_nos: Sequence[int]
) -> dict[int, str]:
    rows = await conn.fetch(
        "SELECT line_no, line FROM statement_lines WHERE import_id = $1 "
        "AND line_no = ANY($2::int[])",
        import_id,
        list(line_nos),
    )
    return {r["line_no"]: r["line"] for r in rows}


async def pooled_keys(conn: asyncpg.Connection, provider: str, day: date) -> set[tuple[str, str]]:
    """(kind, key) of the pool entries a run of ``day`` re-checks."""
    rows = await conn.fetch(
        """SELECT kind, match_key FROM reconciliation_pool
            WHERE provider = $1 AND (
                  (status = 'waiting' AND business_date < $2)
               OR (business_date >= $2 - $3::int AND business_date < $2
                   AND (status <> 'cleared' OR cleared_on = $2)))""",
        provider,
        day,
        HOLDING_DAYS,
    )
    return {(r["kind"], r["match_key"]) for r in rows}


async def reconciled_days(conn: asyncpg.Connection, provider: str, *, before: date) -> set[date]:
    rows = await conn.fetch(
        "SELECT DISTINCT business_date FROM reconciliation_runs "
        "WHERE provider = $1 AND business_date < $2",
        provider,
        before,
    )
    return {r["business_date"] for r in rows}


# ------------------------------------------------------------------ the pool


async def pool_wait(conn: asyncpg.Connection, provider: str, items: Sequence[Waiting]) -> None:
    await conn.executemany(
        """INSERT INTO reconciliation_pool (provider, kind, match_key, business_date, ours_fen,
                                            status)
           VALUES ($1, $2, $3, $4, $5, 'waiting')
           ON CONFLICT (provider, kind, match_key) DO UPDATE
              SET status = 'waiting', cleared_on = NULL, ours_fen = EXCLUDED.ours_fen""",
        [(provider, w.kind, w.match_key, w.business_date, w.ours_fen) for w in items],
    )


async def pool_settle(
    conn: asyncpg.Connection,
    provider: str,
    items: Sequence[Waiting],
    *,
    status: str,
    on: date | None,
) -> None:
    await conn.executemany(
        """INSERT INTO reconciliation_pool (provider, kind, match_key, business_date, ours_fen,
                                            status, cleared_on)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (provider, kind, match_key) DO UPDATE
              SET status = EXCLUDED.status, cleared_on = EXCLUDED.cleared_on""",
        [(provider, w.kind, w.match_key, w.business_date, w.ours_fen, status, on) for w in items],
    )


async def pending_of(conn: asyncpg.Connection, provider: str, day: date) -> list[PendingItem]:
    """What of ``day`` (or before) still waits in the pool, as of the newest run."""
    rows = await conn.fetch(
        """SELECT p.kind, p.match_key, p.business_date, p.ours_fen,
                  CASE WHEN p.kind = 'payment' THEN p.match_key
                       ELSE (SELECT out_trade_no FROM refund_requests r
                              WHERE r.out_refund_no = p.match_key) END AS out_trade_no
             FROM reconciliation_pool p
            WHERE p.provider = $1 AND p.status = 'waiting' AND p.business_date <= $2
            ORDER BY p.business_date, p.kind, p.match_key""",
        provider,
        day,
    )
    return [
        PendingItem(
            kind=r["kind"],
            out_trade_no=r["out_trade_no"],
            out_refund_no=r["match_key"] if r["kind"] == "refund" else None,
            business_date=r["business_date"],
            ours_fen=r["ours_fen"],
        )
        for r in rows
    ]


# ------------------------------------------------------------------ runs and discrepancies


async def insert_run(conn: asyncpg.Connection, run: Run) -> None:
    await conn.execute(
        """INSERT INTO reconciliation_runs (id, provider, business_date, import_id, started_at,
                  finished_at, duration_ms, lines, matched, matched_fen, fees_fen, refunds,
                  refunds_fen, discrepancies, pending, settled, run_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)""",
        run.id,
        run.provider,
        run.business_date,
        run.import_id,
        run.started_at,
        run.finished_at,
        run.duration_ms,
        run.lines,
        run.matched,
        run.matched_fen,
        run.fees_fen,
        run.refunds,
        run.refunds_fen,
        run.discrepancies,
        run.pending,
        run.settled,
        run.run_by,
    )


async def upsert_discrepancies(
    conn: asyncpg.Connection,
    provider: str,
    found: Sequence[tuple[str, Found]],
    *,
    run_id: str,
    now: datetime,
) -> None:
    """Insert what is new (id given), refresh what was found before (its id kept)."""
    await conn.executemany(
        """INSERT INTO discrepancies (id, provider, business_date, kind, dedup_key, out_trade_no,
                  out_refund_no, transaction_id, refund_id, attempt_id, refund_request_id,
                  ours_fen, provider_fen, line_no, line, detail, found_at, last_run_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18)
           ON CONFLICT (provider, dedup_key) DO UPDATE
              SET ours_fen = EXCLUDED.ours_fen, provider_fen = EXCLUDED.provider_fen,
                  line_no = EXCLUDED.line_no, line = EXCLUDED.line, detail = EXCLUDED.detail,
                  last_run_id = EXCLUDED.last_run_id,
                  status = CASE WHEN discrepancies.status = 'withdrawn' THEN 'open'
                                ELSE discrepancies.status END""",
        [
            (
                new_id,
                provider,
                f.business_date,
                f.kind.value,
                f.dedup_key,
                f.out_trade_no,
                f.out_refund_no,
                f.transaction_id,
                f.refund_id,
                f.record_id if f.record_kind == "payment" else None,
                f.record_id if f.record_kind == "refund" else None,
                f.ours_fen,
                f.provider_fen,
                f.line_no,
                f.line,
                f.detail,
                now,
                run_id,
            )
            for new_id, f in found
        ],
    )


async def withdraw_unfound(
    conn: asyncpg.Connection, provider: str, day: date, *, run_id: str
) -> int:
    """Open discrepancies of ``day`` this run did not find again (a replaced statement)."""
    result: str = await conn.execute(
        """UPDATE discrepancies SET status = 'withdrawn'
            WHERE provider = $1 AND business_date = $2 AND status = 'open'
              AND last_run_id <> $3 AND kind <> 'missing_at_provider'""",
        provider,
        day,
        run_id,
    )
    return int(result.split()[-1])


_DISCREPANCY: Final = """SELECT id, provider, business_date, kind, status, out_trade_no,
    out_refund_no, transaction_id, refund_id, attempt_id, refund_request_id, ours_fen,
    provider_fen, line_no, line, detail, found_at, resolution, remark, resolved_by, resolved_at
    FROM discrepancies"""


async def discrepancies_of_run(conn: asyncpg.Connection, run_id: str) -> list[Discrepancy]:
    rows = await conn.fetch(
        f"{_DISCREPANCY} WHERE last_run_id = $1 ORDER BY kind, out_trade_no, line_no, id",
        run_id,
    )
    return [Discrepancy(**dict(r)) for r in rows]


async def find_discrepancies(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    kind: str | None,
    provider: str | None,
    day: date | None,
    after: str | None,
    limit: int,
) -> list[Discrepancy]:
    rows = await conn.fetch(
        f"""{_DISCREPANCY}
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
               AND ($3::text IS NULL OR provider = $3) AND ($4::date IS NULL OR business_date = $4)
               AND ($5::text IS NULL OR id > $5)
             ORDER BY id LIMIT $6""",
        status,
        kind,
        provider,
        day,
        after,
        limit,
    )
    return [Discrepancy(**dict(r)) for r in rows]


async def discrepancy(
    conn: asyncpg.Connection, discrepancy_id: str, *, lock: bool = False
) -> Discrepancy | None:
    row = await conn.fetchrow(
        f"{_DISCREPANCY} WHERE id = $1{' FOR UPDATE' if lock else ''}", discrepancy_id
    )
    return None if row is None else Discrepancy(**dict(row))


async def resolve(
    conn: asyncpg.Connection,
    discrepancy_id: str,
    *,
    resolution: str,
    remark: str,
    by: str,
    at: datetime,
) -> Discrepancy:
    row = await conn.fetchrow(
        """UPDATE discrepancies SET status = 'resolved', resolution = $2, remark = $3,
                  resolved_by = $4, resolved_at = $5
            WHERE id = $1 RETURNING id""",
        discrepancy_id,
        resolution,
        remark,
        by,
        at,
    )
    assert row is not None
    found = await discrepancy(conn, discrepancy_id)
    assert found is not None
    return found


async def last_run(conn: asyncpg.Connection, provider: str, day: date) -> Run | None:
    row = await conn.fetchrow(
        """SELECT * FROM reconciliation_runs WHERE provider = $1 AND business_date = $2
            ORDER BY started_at DESC, id DESC LIMIT 1""",
        provider,
        day,
    )
    return None if row is None else Run(**dict(row))


async def run_by_id(conn: asyncpg.Connection, run_id: str) -> Run | None:
    row = await conn.fetchrow("SELECT * FROM reconciliation_runs WHERE id = $1", run_id)
    return None if row is None else Run(**dict(row))


async def runs(
    conn: asyncpg.Connection,
    *,
    provider: str | None,
    first: date | None,
    last: date | None,
    limit: int,
) -> list[Run]:
    rows = await conn.fetch(
        """SELECT * FROM reconciliation_runs
            WHERE ($1::text IS NULL OR provider = $1)
              AND ($2::date IS NULL OR business_date >= $2)
              AND ($3::date IS NULL OR business_date <= $3)
            ORDER BY business_date DESC, provider, started_at DESC LIMIT $4""",
        provider,
        first,
        last,
        limit,
    )
    return [Run(**dict(r)) for r in rows]


async def open_kinds(conn: asyncpg.Connection, provider: str, day: date) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT kind, count(*) AS n FROM discrepancies
            WHERE provider = $1 AND business_date = $2 AND status = 'open' GROUP BY kind""",
        provider,
        day,
    )
    return [dict(r) for r in rows]
