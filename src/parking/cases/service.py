"""码上反映's use cases: a report becomes a case (or joins one), the platform opens and
closes its own, staff move a case along, the reporter confirms or reopens, the clock
job escalates what ran out. The caller owns the transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

import asyncpg
import structlog

from parking.cases import logic, photos, store, violations
from parking.cases.model import (
    BadRules,
    Case,
    CaseNotFound,
    CaseView,
    Category,
    Found,
    Holder,
    Level,
    NotYours,
    PhotoView,
    Place,
    ReportView,
    RuleSet,
    RuleSetView,
    Source,
    State,
    WrongState,
)
from parking.errors import InvalidInput
from parking.ids import new_id

log = structlog.get_logger("parking.cases")
SYSTEM: Final = "system"
#: a place's reports over this span count as repeats for triage
REPEAT_WINDOW: Final = timedelta(hours=24)


class Notifier(Protocol):
    """Tells a holder (or a reporter) about a case: the port SMS and WeChat template
    messages plug into; ``LocalNotifier`` is the one a local stack runs."""

    async def notify(
        self,
        conn: asyncpg.Connection,
        case: Case,
        *,
        recipient: str,
        kind: str,
        message: str,
        now: datetime,
    ) -> None: ...


class LocalNotifier:
    """Writes every notification to ``case_notifications`` and the log."""

    async def notify(
        self,
        conn: asyncpg.Connection,
        case: Case,
        *,
        recipient: str,
        kind: str,
        message: str,
        now: datetime,
    ) -> None:
        await store.add_notification(
            conn, case.id, at=now, recipient=recipient, kind=kind, message=message
        )
        log.info("case_notified", case_id=case.id, recipient=recipient, kind=kind)


# --------------------------------------------------------------------------- rules


async def rules_in_force(conn: asyncpg.Connection, now: datetime) -> RuleSetView:
    """The rules in force; a platform without any starts with ``logic.DEFAULT_RULES``."""
    current = await store.rules(conn)
    if current is not None:
        return current
    try:
        async with conn.transaction():
            return await store.add_rules(
                conn,
                logic.DEFAULT_RULES,
                by=SYSTEM,
                remark="the rules a platform starts with",
                now=now,
            )
    except asyncpg.UniqueViolationError:
        current = await store.rules(conn)
        assert current is not None
        return current


async def change_rules(
    conn: asyncpg.Connection, rules: RuleSet, *, by: str, remark: str, now: datetime
) -> RuleSetView:
    problems = logic.check_rules(rules)
    if problems:
        raise BadRules("; ".join(problems))
    await rules_in_force(conn, now)
    return await store.add_rules(conn, rules, by=by, remark=remark, now=now)


# --------------------------------------------------------------------------- opening


async def _dispatch_new(
    conn: asyncpg.Connection,
    notifier: Notifier,
    *,
    rules: RuleSetView,
    source: Source,
    source_ref: str | None,
    place: Place,
    category: Category,
    text: str,
    level: Level,
    reporter: str | None,
    now: datetime,
    plate: str | None = None,
) -> Case:
    holder = logic.holder_for(level, place)
    case = await store.insert_case(
        conn,
        Case(
            id=new_id("cs", now),
            source=source,
            source_ref=source_ref,
            category=category,
            level=level,
            state=State.DISPATCHED,
            lot_id=place.lot_id,
            district_code=place.district_code,
            lane_id=place.lane_id,
            space_id=place.space_id,
            text=text,
            holder=str(holder),
            rule_version=rules.version,
            reports=1,
            reporter_account_id=reporter,
            received_at=now,
            accept_due_at=logic.accept_due(rules.rules, level, now),
            resolve_due_at=logic.resolve_due(rules.rules, category, now),
            accepted_at=None,
            resolved_at=None,
            closed_at=None,
            updated_at=now,
            plate=plate,
        ),
    )
    actor = reporter or SYSTEM
    await store.add_event(
        conn, case.id, at=now, actor=actor, action="received", from_state=None,
        to_state=State.RECEIVED, level=level, holder=str(holder), note=None,
    )  # fmt: skip
    await store.add_event(
        conn, case.id, at=now, actor=SYSTEM, action="dispatched", from_state=State.RECEIVED,
        to_state=State.DISPATCHED, level=level, holder=str(holder),
        note=f"rules v{rules.version}: {level.value}",
    )  # fmt: skip
    await call_in(conn, notifier, rules.rules, case, place, now)
    return case


async def call_in(
    conn: asyncpg.Connection,
    notifier: Notifier,
    rules: RuleSet,
    case: Case,
    place: Place,
    now: datetime,
) -> None:
    """Tell the holder; for a big case, give every department called its task (吹哨)."""
    recipients = [case.holder]
    if case.level is Level.BIG:
        called = logic.departments_for(rules, place)
        await store.add_tasks(conn, case.id, called)
        recipients = [str(h) for h in called]
    for recipient in dict.fromkeys(recipients):
        await notifier.notify(
            conn,
            case,
            recipient=recipient,
            kind="dispatched",
            message=f"{case.level.value} case {case.id} at {case.lot_id}: accept by "
            f"{case.accept_due_at.isoformat()}",
            now=now,
        )


async def report(
    conn: asyncpg.Connection,
    notifier: Notifier,
    *,
    place: Place,
    category: Category,
    text: str,
    account_id: str,
    now: datetime,
    plate: str | None = None,
) -> Case:
    """A driver's (or a confirmed phone's) report: merged into an open case of the same
    place, category and plate received within ``merge_minutes``, else a new case,
    triaged."""
    rules = await rules_in_force(conn, now)
    since = now - timedelta(minutes=rules.rules.merge_minutes)
    target = await store.merge_target(
        conn,
        lot_id=place.lot_id,
        lane_id=place.lane_id,
        space_id=place.space_id,
        category=category,
        since=since,
        plate=plate,
    )
    if target is not None:
        await store.add_report(
            conn, target.id, account_id=account_id, text=text, now=now, plate=plate
        )
        merged = await store.count_merged(conn, target.id, now)
        await store.add_event(
            conn, target.id, at=now, actor=account_id, action="merged", from_state=target.state,
            to_state=target.state, level=target.level, holder=target.holder, note=None,
        )  # fmt: skip
        return merged
    repeats = 1 + await store.recent_reports(
        conn,
        lot_id=place.lot_id,
        lane_id=place.lane_id,
        space_id=place.space_id,
        category=category,
        since=now - REPEAT_WINDOW,
    )
    level = logic.triage(rules.rules, category, place.kind, text, repeats)
    case = await _dispatch_new(
        conn,
        notifier,
        rules=rules,
        source=Source.REPORT,
        source_ref=None,
        place=place,
        category=category,
        text=text,
        level=level,
        reporter=account_id,
        now=now,
        plate=plate,
    )
    await store.add_report(conn, case.id, account_id=account_id, text=text, now=now, plate=plate)
    return case


async def open_by_platform(
    conn: asyncpg.Connection,
    notifier: Notifier,
    *,
    source: Source,
    source_ref: str,
    place: Place,
    category: Category,
    text: str,
    now: datetime,
) -> Case | None:
    """A case the platform opens about what it watches; None when one is open already."""
    if await store.open_case_of_source(conn, source.value, source_ref) is not None:
        return None
    rules = await rules_in_force(conn, now)
    level = logic.triage(rules.rules, category, place.kind, text, 1)
    try:
        async with conn.transaction():
            return await _dispatch_new(
                conn,
                notifier,
                rules=rules,
                source=source,
                source_ref=source_ref,
                place=place,
                category=category,
                text=text,
                level=level,
                reporter=None,
                now=now,
            )
    except asyncpg.UniqueViolationError:
        return None  # opened concurrently


async def close_by_platform(
    conn: asyncpg.Connection, *, source: Source, source_ref: str, note: str, now: datetime
) -> Case | None:
    """What the platform watched is well again: its open case closes (None: none open)."""
    case = await store.open_case_of_source(conn, source.value, source_ref)
    if case is None:
        return None
    closed = await store.update_case(
        conn, case.id, state=State.CLOSED, level=case.level, holder=case.holder, now=now,
        resolved_at=now, closed_at=now,
    )  # fmt: skip
    await store.add_event(
        conn, case.id, at=now, actor=SYSTEM, action="closed_by_platform", from_state=case.state,
        to_state=State.CLOSED, level=case.level, holder=case.holder, note=note,
    )  # fmt: skip
    return closed


# --------------------------------------------------------------------------- staff


async def locked(conn: asyncpg.Connection, case_id: str) -> Case:
    case = await store.case(conn, case_id, lock=True)
    if case is None:
        raise CaseNotFound(f"no case {case_id}")
    return case


def _holds(case: Case, holder: str) -> None:
    if case.holder != holder:
        raise NotYours(f"case {case.id} is held by {case.holder}, not {holder}")


async def view(conn: asyncpg.Connection, case_id: str) -> CaseView:
    case = await store.case(conn, case_id)
    if case is None:
        raise CaseNotFound(f"no case {case_id}")
    return CaseView(
        case=case,
        tasks=await store.tasks(conn, case_id),
        events=await store.events(conn, case_id),
        photos=await store.photos(conn, case_id),
        violation=await store.violation(conn, case_id),
    )


async def find(conn: asyncpg.Connection, case_id: str) -> Case | None:
    return await store.case(conn, case_id)


async def sees(conn: asyncpg.Connection, case: Case, holders: list[str]) -> bool:
    """Whether a member of ``holders`` may see the case: it holds it or has a task in it."""
    if case.holder in holders:
        return True
    return any(t.holder in holders for t in await store.tasks(conn, case.id))


async def queue(
    conn: asyncpg.Connection, holders: list[str] | None, *, open_only: bool, limit: int
) -> list[Case]:
    """``holders`` None: every case (city management)."""
    if holders is None:
        return await store.every_case(conn, open_only=open_only, limit=limit)
    return await store.queue(conn, holders, open_only=open_only, limit=limit)


async def act(
    conn: asyncpg.Connection,
    notifier: Notifier,
    case_id: str,
    *,
    action: str,
    actor: str,
    holder: str | None,
    note: str | None,
    now: datetime,
    place: Place | None = None,
    to: Holder | None = None,
    found: Found | None = None,
) -> Case:
    """A staff move. ``holder``: the team the actor acts for (None: city management,
    who may reassign, raise and whistle any case). accept / start / resolve are the
    holder's; a big case resolves only when every task is done. Resolving a case about a
    plate says what was ``found`` (轻微首违不罚: see ``_record_violation``)."""
    case = await locked(conn, case_id)
    to_state = logic.move(case, action)
    if action == "resolve" and case.plate is not None and found is None:
        raise InvalidInput(
            f"case {case.id} is about a plate: say what was found on the spot "
            "(violation: minor, serious or not_found)"
        )
    if found is not None and (action != "resolve" or case.plate is None):
        raise InvalidInput("a violation is said only when resolving a case about a plate")
    level, new_holder = case.level, case.holder
    changes: dict[str, datetime | None] = {}
    rules = (await rules_in_force(conn, now)).rules
    if action in ("accept", "start", "resolve"):
        if holder is not None:
            _holds(case, holder)
        if action == "accept":
            changes["accepted_at"] = case.accepted_at or now
        if action == "resolve":
            pending = [t.holder for t in await store.tasks(conn, case.id) if t.state != "done"]
            if pending:
                raise WrongState(
                    f"case {case.id} waits for {', '.join(pending)} to report done first"
                )
            changes["resolved_at"] = now
    elif action == "reassign":
        if to is None:
            raise WrongState("reassign names the team that takes the case")
        if holder is not None:
            _holds(case, holder)
        new_holder = str(to)
        changes["accept_due_at"] = logic.accept_due(rules, level, now)
    elif action in ("raise", "whistle"):
        if holder is not None:
            _holds(case, holder)
        assert place is not None
        level = Level.BIG if action == "whistle" else (logic.raised(case.level) or Level.BIG)
        if level is case.level and action == "raise":
            raise WrongState(f"case {case.id} is big already: nothing is above it")
        new_holder = str(logic.holder_for(level, place))
        changes["accept_due_at"] = logic.accept_due(rules, level, now)
    updated = await store.update_case(
        conn, case.id, state=to_state, level=level, holder=new_holder, now=now,
        accept_due_at=changes.get("accept_due_at"), accepted_at=changes.get("accepted_at"),
        resolved_at=changes.get("resolved_at"),
    )  # fmt: skip
    await store.add_event(
        conn, case.id, at=now, actor=actor, action=action, from_state=case.state,
        to_state=to_state, level=level, holder=new_holder, note=note,
    )  # fmt: skip
    if action in ("reassign", "raise", "whistle"):
        assert place is not None or action == "reassign"
        if place is not None:
            await call_in(conn, notifier, rules, updated, place, now)
        else:
            await notifier.notify(
                conn, updated, recipient=new_holder, kind="dispatched",
                message=f"case {case.id} reassigned to you", now=now,
            )  # fmt: skip
    if action == "resolve" and found is not None:
        await violations.record(conn, notifier, updated, found, actor=actor, now=now)
    if action == "resolve" and updated.reporter_account_id is not None:
        await notifier.notify(
            conn, updated, recipient=f"account:{updated.reporter_account_id}", kind="resolved",
            message=f"your report {case.id} was resolved: confirm or reopen", now=now,
        )  # fmt: skip
    return updated


async def task(
    conn: asyncpg.Connection,
    case_id: str,
    *,
    holder: str,
    action: str,
    actor: str,
    note: str | None,
    now: datetime,
) -> Case:
    """A department called to a big case reports in (``accept``: 报到) or reports its
    share done (``done``)."""
    case = await locked(conn, case_id)
    if case.state not in (State.DISPATCHED, State.ACCEPTED, State.IN_PROGRESS, State.REOPENED):
        raise WrongState(f"case {case.id} is {case.state.value}")
    to, before = ("accepted", ("dispatched",)) if action == "accept" else ("done", ("accepted",))
    if not await store.set_task(
        conn, case.id, holder, state=to, now=now, note=note, from_states=before
    ):
        raise WrongState(f"{holder} has no {' or '.join(before)} task in case {case.id}")
    await store.add_event(
        conn, case.id, at=now, actor=actor, action=f"task_{action}", from_state=case.state,
        to_state=case.state, level=case.level, holder=holder, note=note,
    )  # fmt: skip
    return case


# --------------------------------------------------------------------------- reporters


def report_view(case: Case, resolution: str | None) -> ReportView:
    return ReportView(
        id=case.id,
        category=case.category,
        level=case.level,
        state=case.state,
        lot_id=case.lot_id,
        received_at=case.received_at,
        accepted_at=case.accepted_at,
        resolved_at=case.resolved_at,
        closed_at=case.closed_at,
        resolution=resolution,
    )


async def my_reports(conn: asyncpg.Connection, account_id: str, *, limit: int) -> list[ReportView]:
    return [report_view(c, None) for c in await store.reported_by(conn, account_id, limit)]


async def my_report(conn: asyncpg.Connection, case_id: str, account_id: str) -> ReportView:
    """The case as one of its reporters follows it; CaseNotFound for anyone else."""
    case = await store.case(conn, case_id)
    if case is None or not await store.reported_in_by(conn, case_id, account_id):
        raise CaseNotFound(f"no report {case_id}")
    resolution = next(
        (e.note for e in reversed(await store.events(conn, case_id)) if e.action == "resolve"),
        None,
    )
    return report_view(case, resolution)


async def reporter_says(
    conn: asyncpg.Connection,
    notifier: Notifier,
    case_id: str,
    *,
    account_id: str,
    action: str,
    note: str | None,
    now: datetime,
) -> ReportView:
    """The reporter confirms the resolution (the case closes) or reopens it (back to its
    holder with a fresh accept clock)."""
    if not await store.reported_in_by(conn, case_id, account_id):
        raise CaseNotFound(f"no report {case_id}")
    case = await locked(conn, case_id)
    to_state = logic.move(case, action)
    if action == "confirm":
        updated = await store.update_case(
            conn, case.id, state=to_state, level=case.level, holder=case.holder, now=now,
            closed_at=now,
        )  # fmt: skip
    else:
        rules = (await rules_in_force(conn, now)).rules
        updated = await store.update_case(
            conn, case.id, state=to_state, level=case.level, holder=case.holder, now=now,
            accept_due_at=logic.accept_due(rules, case.level, now),
            resolve_due_at=logic.resolve_due(rules, case.category, now), clear_resolution=True,
        )  # fmt: skip
        await notifier.notify(
            conn, updated, recipient=case.holder, kind="reopened",
            message=f"case {case.id} was reopened by its reporter", now=now,
        )  # fmt: skip
    await store.add_event(
        conn, case.id, at=now, actor=account_id, action=action, from_state=case.state,
        to_state=to_state, level=case.level, holder=case.holder, note=note,
    )  # fmt: skip
    return await my_report(conn, case_id, account_id)


# --------------------------------------------------------------------------- photos


async def add_photo(
    conn: asyncpg.Connection,
    root: Path,
    case_id: str,
    data: bytes,
    *,
    kind: str,
    by: str,
    now: datetime,
) -> PhotoView:
    """Check and clean the photo, store the file, then its row (in the caller's
    transaction); a refused photo stores nothing, a file this call wrote is removed
    when its row is refused."""
    cleaned = photos.clean(data)
    if kind == "report" and await store.photos_by(conn, case_id, by) >= photos.MAX_PER_REPORT:
        raise photos.TooManyPhotos(f"a report carries at most {photos.MAX_PER_REPORT} photos")
    wrote = photos.store(root, cleaned)
    try:
        await store.add_photo(
            conn,
            case_id,
            ref=cleaned.ref,
            content_type=cleaned.content_type,
            size=len(cleaned.content),
            kind=kind,
            by=by,
            now=now,
        )
    except BaseException:
        if wrote:
            photos.forget(root, cleaned)
        raise
    found = await store.photo(conn, case_id, cleaned.ref)
    assert found is not None
    return found


async def photo_file(
    conn: asyncpg.Connection, root: Path, case_id: str, ref: str
) -> tuple[PhotoView, bytes]:
    found = await store.photo(conn, case_id, ref)
    if found is None:
        raise CaseNotFound(f"case {case_id} has no photo {ref}")
    return found, (root / found.ref).read_bytes()
