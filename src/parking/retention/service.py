"""Retention and minimisation (issue 19): each kind of data past its time is removed
(passages and sensor readings by dropping whole monthly partitions, dead letters by
row) or, for the plate on financial records, pseudonymised; every run is recorded in
``retention_runs``. Each kind in its own transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
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
    due = logic.partitions_past(await store.event_partitions(conn), parent, cutoff)
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


async def apply(
    conn: asyncpg.Connection, policy: Policy, *, key: bytes, now: datetime
) -> list[Removed]:
    """Remove (or pseudonymise) what is past its time at ``now``; one record per kind."""
    done = [
        await _partitions(conn, Kind.PASSAGES, "passages", policy.passages_months, now),
        await _partitions(conn, Kind.SENSOR_READINGS, "space_events", policy.sensor_months, now),
        await _dead_letters(conn, policy.dead_letter_days, now),
        await _plates(conn, key, policy.plate_months, now),
    ]
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
