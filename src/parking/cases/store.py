"""The cases' SQL: cases, their reports, tasks, events, notifications and the rules."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from parking.cases.model import (
    Case,
    CaseEvent,
    Category,
    Found,
    Holder,
    Level,
    Outcome,
    PhotoView,
    RuleSet,
    RuleSetView,
    State,
    Task,
    Violation,
)

_COLUMNS: Final = """id, source, source_ref, category, level, state, lot_id, district_code,
    lane_id, space_id, text, holder, rule_version, reports, reporter_account_id,
    received_at, accept_due_at, resolve_due_at, accepted_at, resolved_at, closed_at,
    updated_at, plate"""
_RULES: Final = msgspec.json.Decoder(RuleSet)
#: reports of one place ($1 lot, $2 lane, $3 space) and category ($4) since $5
_SAME_PLACE: Final = """lot_id = $1 AND lane_id IS NOT DISTINCT FROM $2
    AND space_id IS NOT DISTINCT FROM $3 AND category = $4
    AND received_at >= $5 AND source = 'report'"""


def _case(row: asyncpg.Record) -> Case:
    return msgspec.convert(dict(row), Case)


# --------------------------------------------------------------------------- rules


async def rules(conn: asyncpg.Connection) -> RuleSetView | None:
    """The rules in force (the highest version), None before the first."""
    row = await conn.fetchrow(
        "SELECT version, rules::text AS rules, created_by, remark, created_at "
        "FROM case_rule_sets ORDER BY version DESC LIMIT 1"
    )
    if row is None:
        return None
    return RuleSetView(
        version=row["version"],
        rules=_RULES.decode(row["rules"]),
        created_by=row["created_by"],
        remark=row["remark"],
        created_at=row["created_at"],
    )


async def add_rules(
    conn: asyncpg.Connection, rules: RuleSet, *, by: str, remark: str, now: datetime
) -> RuleSetView:
    """The next version (a concurrent change loses on the primary key)."""
    row = await conn.fetchrow(
        """INSERT INTO case_rule_sets (version, rules, created_by, remark, created_at)
           SELECT coalesce(max(version), 0) + 1, $1::jsonb, $2, $3, $4 FROM case_rule_sets
           RETURNING version""",
        msgspec.json.encode(rules).decode(),
        by,
        remark,
        now,
    )
    assert row is not None
    return RuleSetView(
        version=row["version"], rules=rules, created_by=by, remark=remark, created_at=now
    )


# --------------------------------------------------------------------------- cases


async def insert_case(conn: asyncpg.Connection, case: Case) -> Case:
    """Raises asyncpg's UniqueViolationError when the source already has an open case."""
    values = msgspec.to_builtins(case, builtin_types=(datetime,))
    names = list(values)
    row = await conn.fetchrow(
        f"INSERT INTO cases ({', '.join(names)}) "  # noqa: S608
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))}) RETURNING {_COLUMNS}",
        *values.values(),
    )
    assert row is not None
    return _case(row)


async def case(conn: asyncpg.Connection, case_id: str, *, lock: bool = False) -> Case | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM cases WHERE id = $1{' FOR UPDATE' if lock else ''}",  # noqa: S608
        case_id,
    )
    return None if row is None else _case(row)


async def update_case(
    conn: asyncpg.Connection,
    case_id: str,
    *,
    state: State,
    level: Level,
    holder: str,
    now: datetime,
    accept_due_at: datetime | None = None,
    resolve_due_at: datetime | None = None,
    accepted_at: datetime | None = None,
    resolved_at: datetime | None = None,
    closed_at: datetime | None = None,
    clear_resolution: bool = False,
) -> Case:
    """Set the state, level and holder; the other fields only when given (resolved_at
    and closed_at are cleared by ``clear_resolution``: a reopened case)."""
    row = await conn.fetchrow(
        f"""UPDATE cases SET state = $2, level = $3, holder = $4, updated_at = $5,
               accept_due_at = coalesce($6, accept_due_at),
               resolve_due_at = coalesce($7, resolve_due_at),
               accepted_at = coalesce($8, accepted_at),
               resolved_at = CASE WHEN $11 THEN NULL ELSE coalesce($9, resolved_at) END,
               closed_at = CASE WHEN $11 THEN NULL ELSE coalesce($10, closed_at) END
             WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608
        case_id,
        state.value,
        level.value,
        holder,
        now,
        accept_due_at,
        resolve_due_at,
        accepted_at,
        resolved_at,
        closed_at,
        clear_resolution,
    )
    assert row is not None
    return _case(row)


async def merge_target(
    conn: asyncpg.Connection,
    *,
    lot_id: str,
    lane_id: str | None,
    space_id: str | None,
    category: Category,
    since: datetime,
    plate: str | None = None,
) -> Case | None:
    """An open case of the same place, category and plate (if any) received since
    ``since``, locked."""
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM cases WHERE {_SAME_PLACE}
               AND plate IS NOT DISTINCT FROM $6 AND state NOT IN ('resolved', 'closed')
             ORDER BY received_at LIMIT 1 FOR UPDATE""",  # noqa: S608
        lot_id,
        lane_id,
        space_id,
        category.value,
        since,
        plate,
    )
    return None if row is None else _case(row)


async def add_report(
    conn: asyncpg.Connection,
    case_id: str,
    *,
    account_id: str,
    text: str,
    now: datetime,
    plate: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO case_reports (case_id, account_id, text, at, plate) "
        "VALUES ($1, $2, $3, $4, $5)",
        case_id,
        account_id,
        text,
        now,
        plate,
    )


async def count_merged(conn: asyncpg.Connection, case_id: str, now: datetime) -> Case:
    row = await conn.fetchrow(
        f"UPDATE cases SET reports = reports + 1, updated_at = $2 WHERE id = $1 "  # noqa: S608
        f"RETURNING {_COLUMNS}",
        case_id,
        now,
    )
    assert row is not None
    return _case(row)


async def recent_reports(
    conn: asyncpg.Connection,
    *,
    lot_id: str,
    lane_id: str | None,
    space_id: str | None,
    category: Category,
    since: datetime,
) -> int:
    """Reports of the place and category since ``since`` (merged ones counted)."""
    value = await conn.fetchval(
        f"SELECT coalesce(sum(reports), 0) FROM cases WHERE {_SAME_PLACE}",  # noqa: S608
        lot_id,
        lane_id,
        space_id,
        category.value,
        since,
    )
    return int(value)


async def open_case_of_source(
    conn: asyncpg.Connection, source: str, source_ref: str
) -> Case | None:
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM cases WHERE source = $1 AND source_ref = $2
             AND state NOT IN ('resolved', 'closed') FOR UPDATE""",  # noqa: S608
        source,
        source_ref,
    )
    return None if row is None else _case(row)


async def open_cases_of_source(conn: asyncpg.Connection, source: str) -> list[Case]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM cases WHERE source = $1
             AND state NOT IN ('resolved', 'closed') ORDER BY id""",  # noqa: S608
        source,
    )
    return [_case(r) for r in rows]


async def queue(
    conn: asyncpg.Connection, holders: list[str], *, open_only: bool, limit: int
) -> list[Case]:
    """Cases held by any of ``holders`` or with a task of theirs, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM cases c
             WHERE (holder = ANY($1::text[]) OR EXISTS (
                    SELECT 1 FROM case_tasks t WHERE t.case_id = c.id
                       AND t.holder = ANY($1::text[])))
               AND (NOT $2 OR state NOT IN ('resolved', 'closed'))
             ORDER BY received_at, id LIMIT $3""",  # noqa: S608
        holders,
        open_only,
        limit,
    )
    return [_case(r) for r in rows]


async def every_case(conn: asyncpg.Connection, *, open_only: bool, limit: int) -> list[Case]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM cases
             WHERE (NOT $1 OR state NOT IN ('resolved', 'closed'))
             ORDER BY received_at, id LIMIT $2""",  # noqa: S608
        open_only,
        limit,
    )
    return [_case(r) for r in rows]


async def cases_due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
    """Open cases with a clock run out at ``now`` (the clock job's work), oldest first."""
    rows = await conn.fetch(
        """SELECT id FROM cases WHERE state NOT IN ('resolved', 'closed')
             AND least(accept_due_at, resolve_due_at) <= $1
           ORDER BY least(accept_due_at, resolve_due_at) LIMIT $2""",
        now,
        limit,
    )
    return [r["id"] for r in rows]


async def resolved_before(conn: asyncpg.Connection, before: datetime, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT id FROM cases WHERE state = 'resolved' AND resolved_at <= $1 "
        "ORDER BY resolved_at LIMIT $2",
        before,
        limit,
    )
    return [r["id"] for r in rows]


async def reported_by(conn: asyncpg.Connection, account_id: str, limit: int) -> list[Case]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM cases WHERE id IN (
                SELECT case_id FROM case_reports WHERE account_id = $1)
             ORDER BY received_at DESC LIMIT $2""",  # noqa: S608
        account_id,
        limit,
    )
    return [_case(r) for r in rows]


async def reported_in_by(conn: asyncpg.Connection, case_id: str, account_id: str) -> bool:
    """Whether ``account_id`` reported in ``case_id`` (its first report or a merged one)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_reports WHERE case_id = $1 AND account_id = $2)",
            case_id,
            account_id,
        )
    )


# --------------------------------------------------------------------------- tasks


async def add_tasks(conn: asyncpg.Connection, case_id: str, holders: list[Holder]) -> None:
    await conn.executemany(
        "INSERT INTO case_tasks (case_id, holder, state) VALUES ($1, $2, 'dispatched') "
        "ON CONFLICT DO NOTHING",
        [(case_id, str(h)) for h in holders],
    )


async def tasks(conn: asyncpg.Connection, case_id: str) -> list[Task]:
    rows = await conn.fetch(
        "SELECT holder, state, accepted_at, done_at, note FROM case_tasks "
        "WHERE case_id = $1 ORDER BY holder",
        case_id,
    )
    return [Task(**dict(r)) for r in rows]


async def set_task(
    conn: asyncpg.Connection,
    case_id: str,
    holder: str,
    *,
    state: str,
    now: datetime,
    note: str | None,
    from_states: tuple[str, ...],
) -> bool:
    """Move one task; False when it is not in one of ``from_states`` (or not there)."""
    done = await conn.fetchval(
        """UPDATE case_tasks SET state = $3,
               accepted_at = coalesce(accepted_at, $4),
               done_at = CASE WHEN $3 = 'done' THEN $4 ELSE done_at END,
               note = coalesce($5, note)
             WHERE case_id = $1 AND holder = $2 AND state = ANY($6::text[])
           RETURNING true""",
        case_id,
        holder,
        state,
        now,
        note,
        list(from_states),
    )
    return bool(done)


# --------------------------------------------------------------------------- events


async def add_event(
    conn: asyncpg.Connection,
    case_id: str,
    *,
    at: datetime,
    actor: str,
    action: str,
    from_state: State | None,
    to_state: State,
    level: Level,
    holder: str,
    note: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO case_events (case_id, at, actor, action, from_state, to_state, level,
                                    holder, note)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        case_id,
        at,
        actor,
        action,
        None if from_state is None else from_state.value,
        to_state.value,
        level.value,
        holder,
        note,
    )


async def events(conn: asyncpg.Connection, case_id: str) -> list[CaseEvent]:
    rows = await conn.fetch(
        "SELECT at, actor, action, from_state, to_state, level, note FROM case_events "
        "WHERE case_id = $1 ORDER BY id",
        case_id,
    )
    return [msgspec.convert(dict(r), CaseEvent) for r in rows]


async def add_notification(
    conn: asyncpg.Connection,
    case_id: str,
    *,
    at: datetime,
    recipient: str,
    kind: str,
    message: str,
) -> None:
    await conn.execute(
        "INSERT INTO case_notifications (case_id, at, recipient, kind, message) "
        "VALUES ($1, $2, $3, $4, $5)",
        case_id,
        at,
        recipient,
        kind,
        message,
    )


# --------------------------------------------------------------------------- figures


async def responses(
    conn: asyncpg.Connection, *, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Cases received in [since, until): level, district, category, received and
    accepted times (accepted_at None: not yet)."""
    return await conn.fetch(
        """SELECT id, level, district_code, category, received_at, accepted_at
             FROM cases WHERE received_at >= $1 AND received_at < $2
            ORDER BY received_at""",
        since,
        until,
    )


async def breaches(conn: asyncpg.Connection, *, since: datetime, until: datetime) -> int:
    value = await conn.fetchval(
        """SELECT count(*) FROM case_events e JOIN cases c ON c.id = e.case_id
            WHERE e.action = 'breach' AND c.received_at >= $1 AND c.received_at < $2""",
        since,
        until,
    )
    return int(value)


async def waiting_now(conn: asyncpg.Connection, now: datetime) -> tuple[int, int]:
    """Cases waiting to be accepted now, and of those the ones past their accept clock."""
    row = await conn.fetchrow(
        """SELECT count(*) AS waiting, count(*) FILTER (WHERE accept_due_at <= $1) AS overdue
             FROM cases WHERE state IN ('received', 'dispatched', 'reopened')""",
        now,
    )
    assert row is not None
    return int(row["waiting"]), int(row["overdue"])


# --------------------------------------------------------------------------- photos


async def add_photo(
    conn: asyncpg.Connection,
    case_id: str,
    *,
    ref: str,
    content_type: str,
    size: int,
    kind: str,
    by: str,
    now: datetime,
) -> bool:
    """False when the case has this photo already."""
    added = await conn.fetchval(
        """INSERT INTO case_photos (case_id, ref, content_type, bytes, kind, added_by, at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING true""",
        case_id,
        ref,
        content_type,
        size,
        kind,
        by,
        now,
    )
    return bool(added)


async def photos_by(conn: asyncpg.Connection, case_id: str, by: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM case_photos WHERE case_id = $1 AND added_by = $2", case_id, by
        )
    )


async def photos(conn: asyncpg.Connection, case_id: str) -> list[PhotoView]:
    rows = await conn.fetch(
        "SELECT ref, content_type, bytes, kind, at FROM case_photos WHERE case_id = $1 "
        "ORDER BY at, ref",
        case_id,
    )
    return [PhotoView(**dict(r)) for r in rows]


async def photo(conn: asyncpg.Connection, case_id: str, ref: str) -> PhotoView | None:
    row = await conn.fetchrow(
        "SELECT ref, content_type, bytes, kind, at FROM case_photos "
        "WHERE case_id = $1 AND ref = $2",
        case_id,
        ref,
    )
    return None if row is None else PhotoView(**dict(row))


# --------------------------------------------------------------------------- plates


async def earlier_violation(
    conn: asyncpg.Connection, plate: str, *, before: datetime, case_id: str
) -> int | None:
    """The plate's latest counted violation (minor or serious) in the 12 calendar months
    before ``before``, other than this case's."""
    found: int | None = await conn.fetchval(
        """SELECT id FROM plate_violations
            WHERE plate = $1 AND found <> 'not_found' AND case_id <> $3
              AND at > $2::timestamptz - interval '12 months' AND at <= $2
            ORDER BY at DESC LIMIT 1""",
        plate,
        before,
        case_id,
    )
    return found


async def add_violation(
    conn: asyncpg.Connection,
    *,
    plate: str,
    case_id: str,
    lot_id: str,
    at: datetime,
    found: Found,
    outcome: Outcome,
    repeat_of: int | None,
    holder_account_id: str | None,
    by: str,
) -> None:
    await conn.execute(
        """INSERT INTO plate_violations (plate, case_id, lot_id, at, found, outcome, repeat_of,
               holder_account_id, by_actor)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        plate,
        case_id,
        lot_id,
        at,
        found.value,
        outcome.value,
        repeat_of,
        holder_account_id,
        by,
    )


async def violation(conn: asyncpg.Connection, case_id: str) -> Violation | None:
    row = await conn.fetchrow(
        """SELECT plate, found, outcome, at, repeat_of IS NOT NULL AS repeat,
                  holder_account_id IS NOT NULL AS holder_notified, by_actor AS by
             FROM plate_violations WHERE case_id = $1""",
        case_id,
    )
    return None if row is None else msgspec.convert(dict(row), Violation)


# --------------------------------------------------------------------------- full lots


async def full_lots(conn: asyncpg.Connection) -> dict[str, datetime]:
    """lot -> since when the clock job has seen it full."""
    return {r["lot_id"]: r["full_since"] for r in await conn.fetch(
        "SELECT lot_id, full_since FROM case_full_lots"
    )}  # fmt: skip


async def mark_full(conn: asyncpg.Connection, lot_ids: list[str], since: datetime) -> None:
    await conn.execute(
        "INSERT INTO case_full_lots (lot_id, full_since) SELECT unnest($1::text[]), $2 "
        "ON CONFLICT (lot_id) DO NOTHING",
        lot_ids,
        since,
    )


async def mark_not_full(conn: asyncpg.Connection, lot_ids: list[str]) -> None:
    await conn.execute("DELETE FROM case_full_lots WHERE lot_id = ANY($1::text[])", lot_ids)
