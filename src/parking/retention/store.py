"""The retention job's SQL (run as the database owner: it drops partitions)."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Final

import asyncpg
import msgspec

from parking.retention.model import Removed

#: settled bills: what they say about a plate is history, not a debt
SETTLED: Final = ("paid", "refunded", "written_off")
#: a session ended before $1 whose bills (if any) are all settled ($2: SETTLED)
_ENDED_SESSION: Final = """status <> 'open' AND coalesce(exit_at, entry_at) < $1
    AND NOT EXISTS (SELECT 1 FROM bills b WHERE b.session_id = sessions.id
                    AND b.status <> ALL($2::text[]))"""


async def monthly_partitions(conn: asyncpg.Connection) -> list[str]:
    """The partitions of the tables kept by month (their names: ``logic.partition_month``)."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relname IN ('passages', 'space_events', 'sessions', 'audit_log')"""
    )
    return [r["relname"] for r in rows]


async def under_dispute(conn: asyncpg.Connection, name: str) -> bool:
    """Whether a passages partition holds a passage of a stay whose bill is disputed and
    undecided: the evidence stays until the dispute is decided."""
    if not name.startswith("passages_"):
        return False
    quoted = await conn.fetchval("SELECT quote_ident($1)", name)
    return bool(
        await conn.fetchval(
            f"""SELECT EXISTS (SELECT 1 FROM {quoted} p
                 JOIN bills b ON b.session_id = p.session_id
                 JOIN disputes d ON d.bill_id = b.id AND d.status = 'open')"""  # noqa: S608
        )
    )


async def sessions_month_unfinished(conn: asyncpg.Connection, name: str) -> bool:
    """Whether a sessions partition still holds an open session, a plate not yet
    pseudonymised, or a session whose bill is unsettled or disputed: such a month stays
    in the database (what is owed, or readable, is not archived)."""
    quoted = await conn.fetchval("SELECT quote_ident($1)", name)
    return bool(
        await conn.fetchval(
            f"""SELECT EXISTS (SELECT 1 FROM {quoted} s
                 WHERE s.status = 'open'
                    OR (s.plate IS NOT NULL AND left(s.plate, 1) <> '#')
                    OR EXISTS (SELECT 1 FROM bills b WHERE b.session_id = s.id
                               AND b.status <> ALL($1::text[]))
                    OR EXISTS (SELECT 1 FROM bills b
                                 JOIN disputes d ON d.bill_id = b.id AND d.status = 'open'
                                WHERE b.session_id = s.id))""",  # noqa: S608
            list(SETTLED),
        )
    )


async def drop_partition(conn: asyncpg.Connection, name: str) -> int:
    """Drop one monthly partition (``name`` checked by ``logic.partitions_past``);
    returns the rows it held."""
    quoted = await conn.fetchval("SELECT quote_ident($1)", name)
    rows = int(await conn.fetchval(f"SELECT count(*) FROM {quoted}"))  # noqa: S608
    await conn.execute(f"DROP TABLE {quoted}")
    return rows


async def copy_out(conn: asyncpg.Connection, name: str, path: Path) -> int:
    """Every row of partition ``name`` as gzip'd CSV with a header into ``path``
    (written to a temporary file, flushed to disk, then renamed); returns the rows."""
    quoted = await conn.fetchval("SELECT quote_ident($1)", name)
    partial = path.with_suffix(path.suffix + ".partial")
    with gzip.open(partial, "wb") as out:

        async def write(chunk: bytes) -> None:
            out.write(chunk)

        status = await conn.copy_from_table(quoted, output=write, format="csv", header=True)
    with partial.open("rb") as done:
        os.fsync(done.fileno())
    partial.rename(path)
    return int(status.split()[-1])


async def drop_if_rows(conn: asyncpg.Connection, name: str, rows: int) -> bool:
    """Drop partition ``name`` if it still holds exactly ``rows`` rows (a late event
    written into an archived month since: it stays, archived again next run)."""
    quoted = await conn.fetchval("SELECT quote_ident($1)", name)
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {quoted} IN SHARE MODE")
        if int(await conn.fetchval(f"SELECT count(*) FROM {quoted}")) != rows:  # noqa: S608
            return False
        await conn.execute(f"DROP TABLE {quoted}")
    return True


async def copy_in(conn: asyncpg.Connection, parent: str, month: datetime, path: Path) -> int:
    """Load an archive file back: its month's partition made again if needed, the rows
    copied into the parent (routed to it). Returns the rows loaded."""

    async def chunks() -> AsyncIterator[bytes]:
        with gzip.open(path, "rb") as source:
            while chunk := source.read(1 << 20):
                yield chunk

    async with conn.transaction():
        await conn.execute("SELECT ensure_month_partition($1, $2::date)", parent, month.date())
        status = await conn.copy_to_table(parent, source=chunks(), format="csv", header=True)
    return int(status.split()[-1])


async def delete_dead_letters(conn: asyncpg.Connection, before: datetime) -> int:
    done = await conn.execute("DELETE FROM dead_letters WHERE received_at < $1", before)
    return int(done.split()[-1])


async def plates_due(conn: asyncpg.Connection, before: datetime, limit: int) -> list[str]:
    """Plates still readable on sessions ended, or bills settled, before ``before``."""
    rows = await conn.fetch(
        f"""SELECT plate FROM sessions
             WHERE plate IS NOT NULL AND left(plate, 1) <> '#' AND {_ENDED_SESSION}
            UNION
            SELECT plate FROM bills
             WHERE plate IS NOT NULL AND left(plate, 1) <> '#' AND status = ANY($2::text[])
               AND closed_at < $1
            LIMIT $3""",  # noqa: S608 (constant fragment)
        before,
        list(SETTLED),
        limit,
    )
    return [r["plate"] for r in rows]


async def pseudonymise(
    conn: asyncpg.Connection, plate: str, pseudonym: str, before: datetime
) -> tuple[int, int]:
    """The plate's ended sessions and settled bills before ``before`` carry the
    pseudonym instead; an open session, an unsettled bill and its session keep the
    plate (they are owed by it)."""
    sessions = await conn.execute(
        f"""UPDATE sessions SET plate = $4, plate_raw = NULL
             WHERE plate = $3 AND {_ENDED_SESSION}""",  # noqa: S608 (constant fragment)
        before,
        list(SETTLED),
        plate,
        pseudonym,
    )
    bills = await conn.execute(
        """UPDATE bills SET plate = $2
            WHERE plate = $1 AND status = ANY($4::text[]) AND closed_at < $3""",
        plate,
        pseudonym,
        before,
        list(SETTLED),
    )
    return int(sessions.split()[-1]), int(bills.split()[-1])


async def record(conn: asyncpg.Connection, at: datetime, done: Removed) -> None:
    await conn.execute(
        "INSERT INTO retention_runs (at, kind, cutoff, removed, detail) "
        "VALUES ($1, $2, $3, $4, $5::jsonb)",
        at,
        done.kind.value,
        done.cutoff,
        done.removed,
        msgspec.json.encode(done.detail).decode(),
    )


async def runs(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT at, kind, cutoff, removed, detail::text AS detail FROM retention_runs "
        "ORDER BY id DESC LIMIT $1",
        limit,
    )


async def disputed_pictures(conn: asyncpg.Connection) -> list[str]:
    """Pictures of the passages of stays whose bill is under an open dispute: evidence,
    kept past their retention until the dispute is decided."""
    rows = await conn.fetch(
        """SELECT DISTINCT p.image_ref FROM passages p
             JOIN bills b ON b.session_id = p.session_id
             JOIN disputes d ON d.bill_id = b.id AND d.status = 'open'
            WHERE p.image_ref LIKE 'cam/%'"""
    )
    return [r["image_ref"] for r in rows]
