"""Retention and minimisation (issue 19): each kind of data past its time is removed
(passages and sensor readings by dropping whole monthly partitions, dead letters by
row) or, for the plate on financial records, pseudonymised; every run is recorded in
``retention_runs``. Each kind in its own transaction."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import asyncpg
import structlog

from parking.retention import logic, store
from parking.retention.model import Kind, Policy, Removed

log = structlog.get_logger("parking.retention")
#: plates pseudonymised per batch (one transaction each)
PLATE_BATCH: Final = 500


async def _partitions(
    conn: asyncpg.Connection, kind: Kind, parent: str, months: int, now: datetime
) -> Removed:
    cutoff = logic.months_before(now, months)
    due = logic.partitions_past(await store.monthly_partitions(conn), parent, cutoff)
    detail: dict[str, int] = {}
    kept = 0
    async with conn.transaction():
        for name in due:
            if await store.under_dispute(conn, name):
                kept += 1  # kept whole until its disputes are decided
                continue
            detail[name] = await store.drop_partition(conn, name)
        removed = sum(detail.values())
        if kept:
            detail["partitions_kept_for_disputes"] = kept
        done = Removed(kind=kind, cutoff=cutoff, removed=removed, detail=detail)
        await store.record(conn, now, done)
    return done


async def _dead_letters(conn: asyncpg.Connection, days: int, now: datetime) -> Removed:
    cutoff = now - timedelta(days=days)
    async with conn.transaction():
        removed = await store.delete_dead_letters(conn, cutoff)
        done = Removed(kind=Kind.DEAD_LETTERS, cutoff=cutoff, removed=removed, detail={})
        await store.record(conn, now, done)
    return done


async def _plates(conn: asyncpg.Connection, key: bytes, months: int, now: datetime) -> Removed:
    cutoff = logic.months_before(now, months)
    sessions = bills = plates = 0
    while True:
        async with conn.transaction():
            due = await store.plates_due(conn, cutoff, PLATE_BATCH)
            for plate in due:
                s, b = await store.pseudonymise(conn, plate, logic.pseudonym(key, plate), cutoff)
                sessions, bills = sessions + s, bills + b
            plates += len(due)
        if len(due) < PLATE_BATCH:
            break
    done = Removed(
        kind=Kind.PLATES,
        cutoff=cutoff,
        removed=sessions + bills,
        detail={"plates": plates, "sessions": sessions, "bills": bills},
    )
    async with conn.transaction():
        await store.record(conn, now, done)
    return done


#: the archived tables and the policy field of their retention
ARCHIVED: Final = (("passages", "passages_months"), ("space_events", "sensor_months"))
#: tables archived and kept: sessions (financial records) and the audit log
KEPT: Final = ("sessions", "audit_log")


def _archive_cutoff(parent: str, policy: Policy, now: datetime) -> datetime:
    """Months ending by this instant leave the database. Sessions stay while their plates
    are readable (``plate_months``; the plates step pseudonymises them first), the audit
    log ``audit_hot_months``, passages and sensor readings ``hot_months``."""
    if parent == "sessions":
        return logic.months_before(now, max(policy.hot_months, policy.plate_months))
    if parent == "audit_log":
        return logic.months_before(now, policy.audit_hot_months)
    return logic.months_before(now, policy.hot_months)


async def _kept_in_database(conn: asyncpg.Connection, name: str) -> bool:
    """A month that may not leave yet: passages under an open dispute; sessions still
    open, readable or owed."""
    if name.startswith("sessions_"):
        return await store.sessions_month_unfinished(conn, name)
    return await store.under_dispute(conn, name)


def archive_file(archive_dir: Path, name: str) -> Path:
    return archive_dir / f"{name}.csv.gz"


async def _archive(
    conn: asyncpg.Connection, archive_dir: Path, policy: Policy, now: datetime
) -> Removed:
    """Months past the database's months (``_archive_cutoff``) leave the database for
    archive files; archive files of passages and sensor readings past their kind's
    retention are deleted (those of sessions and of the audit log are kept)."""
    cutoff = logic.months_before(now, policy.hot_months)
    await asyncio.to_thread(archive_dir.mkdir, parents=True, exist_ok=True)
    names = await store.monthly_partitions(conn)
    detail: dict[str, int] = {}
    moved = 0
    for parent in (*(p for p, _ in ARCHIVED), *KEPT):
        for name in logic.partitions_past(names, parent, _archive_cutoff(parent, policy, now)):
            if await _kept_in_database(conn, name):
                counter = (
                    "sessions_months_kept_unfinished"
                    if parent == "sessions"
                    else "partitions_kept_for_disputes"
                )
                detail[counter] = detail.get(counter, 0) + 1
                continue
            path = archive_file(archive_dir, name)
            rows = await store.copy_out(conn, name, path)
            if rows == 0:
                await asyncio.to_thread(path.unlink)  # a month made ahead, never used
            if await store.drop_if_rows(conn, name, rows) and rows:
                detail[name] = rows
                moved += rows
    detail.update(await asyncio.to_thread(_expire_archives, archive_dir, policy, now))
    done = Removed(kind=Kind.ARCHIVE, cutoff=cutoff, removed=moved, detail=detail)
    async with conn.transaction():
        await store.record(conn, now, done)
    return done


def _expire_archives(archive_dir: Path, policy: Policy, now: datetime) -> dict[str, int]:
    """Delete the archive files whose month is past its kind's retention."""
    deleted: dict[str, int] = {}
    for parent, field in ARCHIVED:
        expired = logic.months_before(now, getattr(policy, field))
        for path in sorted(archive_dir.glob(f"{parent}_*.csv.gz")):
            name = path.name.removesuffix(".csv.gz")
            if logic.partitions_past([name], parent, expired):
                path.unlink()
                deleted[f"{name} deleted"] = 1
    return deleted


async def restore(conn: asyncpg.Connection, archive_dir: Path, name: str) -> int:
    """Bring one archived month back into its table (``passages_2026_01``); returns the
    rows. The file stays (the next run archives the month again, while it is past the
    database's months)."""
    month = logic.partition_month(name)
    if month is None:
        raise ValueError(
            f"{name!r} is not a monthly partition of passages, space_events, sessions or audit_log"
        )
    path = archive_file(archive_dir, name)
    if not await asyncio.to_thread(path.exists):
        raise FileNotFoundError(f"no archive of {name} in {archive_dir}")
    parent, first = month
    return await store.copy_in(conn, parent, first, path)


async def apply(
    conn: asyncpg.Connection,
    policy: Policy,
    *,
    key: bytes,
    now: datetime,
    archive_dir: Path | None = None,
) -> list[Removed]:
    """Remove (or pseudonymise) what is past its time at ``now``, then move the months
    past ``policy.hot_months`` to ``archive_dir`` (when given); one record per kind."""
    done = [
        await _partitions(conn, Kind.PASSAGES, "passages", policy.passages_months, now),
        await _partitions(conn, Kind.SENSOR_READINGS, "space_events", policy.sensor_months, now),
        await _dead_letters(conn, policy.dead_letter_days, now),
        await _plates(conn, key, policy.plate_months, now),
    ]
    if archive_dir is not None:
        done.append(await _archive(conn, archive_dir, policy, now))
    for item in done:
        log.info(
            "retention_applied", kind=item.kind.value, removed=item.removed,
            cutoff=item.cutoff.isoformat(),
        )  # fmt: skip
    return done


async def evidence_pictures(conn: asyncpg.Connection) -> frozenset[str]:
    """Camera pictures to keep past their retention: those of stays under an open
    dispute."""
    return frozenset(await store.disputed_pictures(conn))
