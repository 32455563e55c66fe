"""The pure decisions of 三事分流: which level, whose work, which clocks, which move is
allowed, when a clock is breached, and the response-time figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

import msgspec

from parking.cases.model import (
    LEVELS,
    OPEN_STATES,
    Case,
    Category,
    Found,
    Holder,
    Level,
    Outcome,
    Place,
    PlaceKind,
    ResponseGroup,
    Rule,
    RuleSet,
    State,
    WrongState,
)

#: The rules a fresh platform starts with (version 1), from the field notes' tiers:
#: a blocked space or a broken sign is the lot's own staff's; a gate or sensor fault,
#: a wrong charge or payment trouble is the district team's; illegal occupation that
#: keeps coming back and any safety hazard is whistled to every department.
DEFAULT_RULES: Final = RuleSet(
    rules=[
        Rule(level=Level.BIG, category=Category.SAFETY_HAZARD),
        Rule(level=Level.BIG, keywords=["火", "起火", "冒烟", "坍塌", "受伤", "漏电"]),
        Rule(level=Level.BIG, category=Category.ILLEGAL_PARKING, min_repeats=5),
        Rule(level=Level.MIDDLE, category=Category.GATE_FAULT),
        Rule(level=Level.MIDDLE, category=Category.SENSOR_FAULT),
        Rule(level=Level.MIDDLE, category=Category.WRONG_CHARGE),
        Rule(level=Level.MIDDLE, category=Category.PAYMENT_PROBLEM),
        Rule(level=Level.MIDDLE, min_repeats=3),
        Rule(level=Level.SMALL, category=Category.SPACE_BLOCKED),
        Rule(level=Level.SMALL, category=Category.ILLEGAL_PARKING),
        Rule(level=Level.SMALL, category=Category.FACILITY_DAMAGE),
    ],
    default_level=Level.SMALL,
    accept_minutes={Level.SMALL: 30, Level.MIDDLE: 30, Level.BIG: 30},
    resolve_minutes={
        Category.SPACE_BLOCKED: 120,
        Category.ILLEGAL_PARKING: 120,
        Category.FACILITY_DAMAGE: 24 * 60,
        Category.GATE_FAULT: 4 * 60,
        Category.SENSOR_FAULT: 24 * 60,
        Category.WRONG_CHARGE: 3 * 24 * 60,
        Category.PAYMENT_PROBLEM: 3 * 24 * 60,
        Category.SAFETY_HAZARD: 24 * 60,
        Category.OTHER: 24 * 60,
    },
)


def check_rules(rules: RuleSet) -> list[str]:
    """What is wrong with a rules document a person wrote (empty: nothing)."""
    problems = []
    missing = [lv.value for lv in LEVELS if lv not in rules.accept_minutes]
    if missing:
        problems.append(f"accept_minutes has no target for {', '.join(missing)}")
    if Category.OTHER not in rules.resolve_minutes:
        problems.append("resolve_minutes needs a target for 'other' (any category not named)")
    return problems


def _matches(rule: Rule, category: Category, kind: PlaceKind, text: str, repeats: int) -> bool:
    if rule.category is not None and rule.category is not category:
        return False
    if rule.place_kind is not None and rule.place_kind is not kind:
        return False
    if rule.keywords and not any(word in text for word in rule.keywords):
        return False
    return repeats >= rule.min_repeats


def triage(rules: RuleSet, category: Category, kind: PlaceKind, text: str, repeats: int) -> Level:
    """The level of the first rule that matches, else the default."""
    for rule in rules.rules:
        if _matches(rule, category, kind, text, repeats):
            return rule.level
    return rules.default_level


def holder_for(level: Level, place: Place) -> Holder:
    """Whose work: small the lot's staff, middle the district's team; a big case is
    coordinated by the district's team while each department works its own task."""
    if level is Level.SMALL:
        return Holder(role="lot_staff", scope=place.lot_id)
    return Holder(role="district_team", scope=place.district_code)


def departments_for(rules: RuleSet, place: Place) -> list[Holder]:
    """Who a whistle calls (吹哨报到): the departments named in the rules, the lot's
    operator company and the district's team, each once."""
    called = [Holder(role="department", scope=d) for d in rules.big_departments]
    if place.company_id is not None:
        called.append(Holder(role="operator", scope=place.company_id))
    called.append(Holder(role="district_team", scope=place.district_code))
    seen: dict[str, Holder] = {}
    for holder in called:
        seen.setdefault(str(holder), holder)
    return list(seen.values())


def accept_due(rules: RuleSet, level: Level, at: datetime) -> datetime:
    return at + timedelta(minutes=rules.accept_minutes[level])


def resolve_due(rules: RuleSet, category: Category, at: datetime) -> datetime:
    minutes = rules.resolve_minutes.get(category, rules.resolve_minutes[Category.OTHER])
    return at + timedelta(minutes=minutes)


def raised(level: Level) -> Level | None:
    """One level up, or None for a big case (nothing is above it)."""
    index = LEVELS.index(level)
    return LEVELS[index + 1] if index + 1 < len(LEVELS) else None


# --------------------------------------------------------------------------- moves

#: action -> (states it is allowed from, state it leads to)
MOVES: Final[dict[str, tuple[frozenset[State], State]]] = {
    "accept": (frozenset({State.DISPATCHED, State.REOPENED}), State.ACCEPTED),
    "start": (frozenset({State.ACCEPTED}), State.IN_PROGRESS),
    "resolve": (frozenset({State.ACCEPTED, State.IN_PROGRESS}), State.RESOLVED),
    "confirm": (frozenset({State.RESOLVED}), State.CLOSED),
    "auto_close": (frozenset({State.RESOLVED}), State.CLOSED),
    "reopen": (frozenset({State.RESOLVED}), State.REOPENED),
    "reassign": (OPEN_STATES, State.DISPATCHED),
    "raise": (OPEN_STATES, State.DISPATCHED),
    "whistle": (OPEN_STATES, State.DISPATCHED),
}


def move(case: Case, action: str) -> State:
    """The state ``action`` leads ``case`` to; WrongState when it is not allowed now."""
    allowed, to = MOVES[action]
    if case.state not in allowed:
        raise WrongState(f"case {case.id} is {case.state.value}: cannot {action.replace('_', ' ')}")
    return to


class Breach(msgspec.Struct, frozen=True, kw_only=True):
    """A clock ran out: which, and what happens (the level it goes to; None: it was
    big already, the holders are reminded and the clock set again)."""

    clock: str
    due_at: datetime
    to_level: Level | None


def breach(case: Case, now: datetime) -> Breach | None:
    """The first clock of ``case`` that has run out at ``now``, if any."""
    waiting = case.state in (State.RECEIVED, State.DISPATCHED, State.REOPENED)
    if waiting and now >= case.accept_due_at:
        return Breach(clock="accept", due_at=case.accept_due_at, to_level=raised(case.level))
    if case.state in OPEN_STATES and now >= case.resolve_due_at:
        return Breach(clock="resolve", due_at=case.resolve_due_at, to_level=raised(case.level))
    return None


def closes_by_itself(case: Case, rules: RuleSet, now: datetime) -> bool:
    """A resolved case the reporter never answered closes after ``close_after_minutes``."""
    return (
        case.state is State.RESOLVED
        and case.resolved_at is not None
        and now >= case.resolved_at + timedelta(minutes=rules.close_after_minutes)
    )


# --------------------------------------------------------------------------- plates


def violation_outcome(found: Found, *, repeat: bool) -> Outcome:
    """轻微首违不罚: a minor violation is a reminder unless the plate had one counted in
    the 12 months before; a serious one, or a repeat, is referred for a penalty."""
    if found is Found.NOT_FOUND:
        return Outcome.NONE
    if found is Found.SERIOUS or repeat:
        return Outcome.REFERRED
    return Outcome.REMINDER


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (the value below which ``q`` of them lie); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def response_minutes(received_at: datetime, accepted_at: datetime) -> float:
    return (accepted_at - received_at).total_seconds() / 60


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """One case's part in the figures."""

    level: str
    district: str
    day: str
    category: str
    minutes: float | None


def group(key: str, rows: Sequence[Response], target_minutes: int) -> ResponseGroup:
    times = [r.minutes for r in rows if r.minutes is not None]
    return ResponseGroup(
        key=key,
        cases=len(rows),
        accepted=len(times),
        p50_minutes=percentile(times, 0.5),
        p90_minutes=percentile(times, 0.9),
        within_target=(sum(1 for t in times if t <= target_minutes) / len(times))
        if times
        else None,
    )


def grouped(rows: Sequence[Response], attribute: str, target_minutes: int) -> list[ResponseGroup]:
    keys = sorted({getattr(r, attribute) for r in rows})
    return [group(k, [r for r in rows if getattr(r, attribute) == k], target_minutes) for k in keys]
