"""三事分流's pure decisions: the rules table, holders, clocks, moves, breaches, figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from parking.cases import logic
from parking.cases.model import (
    Case,
    Category,
    Level,
    Place,
    PlaceKind,
    Rule,
    RuleSet,
    Source,
    State,
    WrongState,
)

T0 = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
PLACE = Place(lot_id="GZ-DEMO-01", district_code="ZG", company_id="gz-urban")


def a_case(**changes: object) -> Case:
    case = Case(
        id="cs-01JEXAMPLE0000000000000000",
        source=Source.REPORT,
        source_ref=None,
        category=Category.GATE_FAULT,
        level=Level.SMALL,
        state=State.DISPATCHED,
        lot_id="GZ-DEMO-01",
        district_code="ZG",
        lane_id=None,
        space_id=None,
        text="道闸不抬杆",
        holder="lot_staff:GZ-DEMO-01",
        rule_version=1,
        reports=1,
        reporter_account_id="acc-1",
        received_at=T0,
        accept_due_at=T0 + timedelta(minutes=30),
        resolve_due_at=T0 + timedelta(hours=4),
        accepted_at=None,
        resolved_at=None,
        closed_at=None,
        updated_at=T0,
    )
    return msgspec.structs.replace(case, **changes)


@pytest.mark.parametrize(
    ("category", "kind", "text", "repeats", "level"),
    [
        (Category.SPACE_BLOCKED, PlaceKind.SPACE, "车位被占", 1, Level.SMALL),
        (Category.GATE_FAULT, PlaceKind.LANE, "道闸不抬杆", 1, Level.MIDDLE),
        (Category.SAFETY_HAZARD, PlaceKind.LOT, "地面塌陷", 1, Level.BIG),
        (Category.OTHER, PlaceKind.LOT, "车库里冒烟了", 1, Level.BIG),
        (Category.ILLEGAL_PARKING, PlaceKind.LOT, "占道", 1, Level.SMALL),
        (Category.ILLEGAL_PARKING, PlaceKind.LOT, "占道", 5, Level.BIG),
        (Category.FACILITY_DAMAGE, PlaceKind.LOT, "指示牌坏了", 3, Level.MIDDLE),
        (Category.OTHER, PlaceKind.LOT, "有点问题", 1, Level.SMALL),
    ],
)
def test_the_default_rules_triage_by_category_keyword_and_repeats(
    category: Category, kind: PlaceKind, text: str, repeats: int, level: Level
) -> None:
    assert logic.triage(logic.DEFAULT_RULES, category, kind, text, repeats) is level


def test_the_first_matching_rule_wins_and_none_falls_to_the_default() -> None:
    rules = RuleSet(
        rules=[
            Rule(level=Level.BIG, place_kind=PlaceKind.LANE, category=Category.GATE_FAULT),
            Rule(level=Level.SMALL, category=Category.GATE_FAULT),
        ],
        default_level=Level.MIDDLE,
    )
    assert logic.triage(rules, Category.GATE_FAULT, PlaceKind.LANE, "x", 1) is Level.BIG
    assert logic.triage(rules, Category.GATE_FAULT, PlaceKind.LOT, "x", 1) is Level.SMALL
    assert logic.triage(rules, Category.OTHER, PlaceKind.LOT, "x", 1) is Level.MIDDLE


def test_holders_by_level_and_the_whistle_calls_every_department_once() -> None:
    assert str(logic.holder_for(Level.SMALL, PLACE)) == "lot_staff:GZ-DEMO-01"
    assert str(logic.holder_for(Level.MIDDLE, PLACE)) == "district_team:ZG"
    assert str(logic.holder_for(Level.BIG, PLACE)) == "district_team:ZG"
    called = [str(h) for h in logic.departments_for(logic.DEFAULT_RULES, PLACE)]
    assert called == [
        "department:traffic_police",
        "department:urban_management",
        "operator:gz-urban",
        "district_team:ZG",
    ]
    unowned = msgspec.structs.replace(PLACE, company_id=None)
    assert "operator:gz-urban" not in [
        str(h) for h in logic.departments_for(logic.DEFAULT_RULES, unowned)
    ]


def test_clocks_come_from_the_rules_and_other_covers_categories_not_named() -> None:
    rules = RuleSet(
        rules=[Rule(level=Level.SMALL)],
        accept_minutes={Level.SMALL: 10, Level.MIDDLE: 20, Level.BIG: 5},
        resolve_minutes={Category.OTHER: 60, Category.GATE_FAULT: 15},
    )
    assert logic.accept_due(rules, Level.MIDDLE, T0) == T0 + timedelta(minutes=20)
    assert logic.resolve_due(rules, Category.GATE_FAULT, T0) == T0 + timedelta(minutes=15)
    assert logic.resolve_due(rules, Category.SENSOR_FAULT, T0) == T0 + timedelta(minutes=60)
    assert logic.check_rules(rules) == []
    broken = RuleSet(rules=[Rule(level=Level.SMALL)], accept_minutes={}, resolve_minutes={})
    assert len(logic.check_rules(broken)) == 2


def test_moves_follow_the_state_machine() -> None:
    case = a_case()
    assert logic.move(case, "accept") is State.ACCEPTED
    with pytest.raises(WrongState):
        logic.move(case, "resolve")
    with pytest.raises(WrongState):
        logic.move(case, "confirm")
    resolved = a_case(state=State.RESOLVED)
    assert logic.move(resolved, "confirm") is State.CLOSED
    assert logic.move(resolved, "reopen") is State.REOPENED
    with pytest.raises(WrongState):
        logic.move(a_case(state=State.CLOSED), "reassign")
    assert logic.move(a_case(state=State.REOPENED), "accept") is State.ACCEPTED


def test_a_clock_breaches_at_its_due_time_and_raises_one_level() -> None:
    case = a_case()
    assert logic.breach(case, T0 + timedelta(minutes=29)) is None
    late = logic.breach(case, T0 + timedelta(minutes=30))
    assert late is not None
    assert (late.clock, late.to_level) == ("accept", Level.MIDDLE)
    accepted = a_case(state=State.ACCEPTED, accepted_at=T0)
    assert logic.breach(accepted, T0 + timedelta(hours=3)) is None
    slow = logic.breach(accepted, T0 + timedelta(hours=4))
    assert slow is not None
    assert slow.clock == "resolve"
    big = logic.breach(a_case(level=Level.BIG), T0 + timedelta(hours=1))
    assert big is not None
    assert big.to_level is None  # nothing above big: remind, not raise
    assert logic.breach(a_case(state=State.RESOLVED), T0 + timedelta(days=9)) is None


def test_a_resolved_case_closes_by_itself_after_72_hours() -> None:
    resolved = a_case(state=State.RESOLVED, resolved_at=T0)
    rules = logic.DEFAULT_RULES
    assert not logic.closes_by_itself(resolved, rules, T0 + timedelta(hours=71, minutes=59))
    assert logic.closes_by_itself(resolved, rules, T0 + timedelta(hours=72))


def test_percentiles_are_nearest_rank_and_groups_count_the_share_within_target() -> None:
    assert logic.percentile([], 0.5) is None
    assert logic.percentile([10, 20, 30, 40], 0.5) == 20
    assert logic.percentile([10, 20, 30, 40], 0.9) == 40
    rows = [
        logic.Response(level="small", district="ZG", day="2026-12-04", category="x", minutes=m)
        for m in (5.0, 25.0, 45.0)
    ] + [logic.Response(level="big", district="ZG", day="2026-12-04", category="x", minutes=None)]
    overall = logic.group("city", rows, 30)
    assert (overall.cases, overall.accepted) == (4, 3)
    assert overall.within_target == pytest.approx(2 / 3)
    assert [g.key for g in logic.grouped(rows, "level", 30)] == ["big", "small"]
