"""The persister's use case: turn applied-events stream entries into rows, in one
transaction, and say whose watermarks moved (the plan is ``plan.plan``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from parking.occupancy import plan as planning
from parking.occupancy import records
from parking.occupancy.model import (
    AnomalyKind,
)
from parking.sessions import service as sessions


@dataclass(frozen=True, slots=True)
class Persisted:
    #: device -> (tag of its lot shard, new watermark), for watermarks that moved
    watermarks: dict[str, tuple[str, int]]
    #: entries that could not be understood, with why
    poison: list[tuple[planning.StreamEntry, str]]
    #: entries written (the poison ones excluded)
    written: list[planning.StreamEntry]
    #: bills opened for sessions that closed in this batch
    bills_opened: list[str]


_months_ready: set[datetime] = set()


async def persist(
    conn: asyncpg.Connection, entries: Sequence[planning.StreamEntry], now: datetime
) -> Persisted:
    """Write ``entries`` in one transaction of the caller's connection. Idempotent:
    writing an entry again changes nothing (device_events dedups events, session
    facts merge, anomalies and dead letters have ids derived from their source)."""
    plan = planning.plan(entries)
    poisoned = {id(e) for e, _ in plan.poison}
    months = plan.months - _months_ready
    async with conn.transaction():
        if months:
            await records.ensure_partitions(conn, months)
        new = await records.insert_device_events(conn, plan.device_events)
        await records.insert_passages(conn, [r for r in plan.passages if (r[0], r[1]) in new])
        await records.insert_space_events(
            conn, [r for r in plan.space_events if (r[0], r[1]) in new]
        )
        await records.upsert_space_states(conn, plan.space_states)
        bills_opened = await sessions.record(conn, plan.sessions, now=now)
        bills_opened += await sessions.complete_late_entries(conn, plan.late_entries, now=now)
        went_back = await records.went_back(
            conn,
            sorted(
                (device, seq)
                for device, seq, kind, *_ in plan.device_events
                if kind != "dead_letter" and (device, seq) in new
            ),
        )
        await records.insert_anomalies(
            conn,
            [*plan.anomalies, *planning.went_back([dict(r) for r in went_back], plan.device_lots)],
        )
        await records.insert_dead_letters(conn, plan.dead_letters)
        await records.resolve_completed_exits(
            conn,
            sorted(
                {c.id for c in plan.late_entries}
                | {c.id for c in plan.sessions if c.pricing_reason == "no_entry"}
            ),
            now,
        )
        await records.resolve_device_anomalies(
            conn,
            kind=AnomalyKind.DEVICE_OFFLINE,
            device_ids=plan.back_online,
            at=now,
            why="back online",
        )
        # After the inserts: a device whose latest event here has a right clock
        # closes its skew anomaly, even one this batch opened.
        await records.resolve_device_anomalies(
            conn,
            kind=AnomalyKind.DEVICE_CLOCK_SKEW,
            device_ids=sorted(d for d, (_, skewed, _) in plan.clocks.items() if not skewed),
            at=now,
            why="clock right again",
        )
        await records.record_device_clocks(conn, plan.clocks)
        moved = await records.advance_watermarks(conn, list(plan.devices), now)
        # Events stored before (a persister killed after its commit, before it
        # published): their watermark did not move now, but it may never have
        # been published. Publishing the stored value again is harmless (retained,
        # monotonic) and lets those devices empty their outboxes.
        repeated = {row[0] for row in plan.device_events if (row[0], row[1]) not in new}
        announce = {
            **await records.current_watermarks(conn, sorted(repeated - set(moved))),
            **moved,
        }
        await records.resolve_filled_gaps(conn, list(moved))
    _months_ready.update(months)
    return Persisted(
        watermarks={d: (plan.devices[d], wm) for d, wm in announce.items()},
        poison=plan.poison,
        written=[e for e in entries if id(e) not in poisoned],
        bills_opened=bills_opened,
    )
