"""The lane's decisions (occupancy/lane.py), pure: what an entry or exit lane does and shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from parking.lots.model import Lot
from parking.occupancy import lane
from parking.occupancy.model import (
    NO_FLAGS,
    AnomalyKind,
    EntryDecision,
    ExitDecision,
    HoldReason,
    LotInfo,
    PassWindow,
    PlateFlags,
)
from parking.plates import parse_plate

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
PLATE = parse_plate("赣B12345")


def lot_info(*, kind: str = "garage", capacity: int = 100, full_policy: str = "hold") -> LotInfo:
    return LotInfo(
        Lot(
            id="GZ-DEMO-01",
            name="演示",
            district_code="360702",
            kind=kind,
            capacity=capacity,
            latitude=25.8,
            longitude=114.9,
            full_policy=full_policy,
            arrears_hold_after_minutes=int(timedelta(days=3).total_seconds()) // 60,
        ),
        groups=frozenset({"G-CENTRE"}),
    )


LOT = lot_info()


def entry(
    *,
    plate: object = PLATE,
    raw: str | None = "赣B12345",
    confidence: float | None = 0.95,
    flags: PlateFlags = NO_FLAGS,
    lot: LotInfo = LOT,
) -> EntryDecision:
    return lane.decide_entry(
        plate=plate,  # type: ignore[arg-type]
        raw_plate=raw,
        confidence=confidence,
        flags=flags,
        lot=lot,
        lane_id="IN-1",
        now=NOW,
    )


def leave(
    *, plate: object = PLATE, raw: str | None = "赣B12345", confidence: float | None = 0.95
) -> ExitDecision:
    return lane.decide_exit(
        plate=plate,  # type: ignore[arg-type]
        raw_plate=raw,
        confidence=confidence,
        lot_id=LOT.lot_id,
        lane_id="OUT-1",
    )


def window(scope_from: datetime, scope_until: datetime) -> PassWindow:
    return PassWindow(pass_id="P-1", valid_from=scope_from, valid_until=scope_until)


# ------------------------------------------------------------------ entry


def test_an_entry_without_any_read_holds_and_asks_for_the_lane_code() -> None:
    for raw in (None, "", "   "):
        decision = entry(plate=None, raw=raw)
        assert decision.mode == "hold"
        assert decision.hold_reason == HoldReason.UNPLATED
        assert decision.display_hold == "无牌车 请扫描车道二维码入场 LANE:GZ-DEMO-01/IN-1"
        assert decision.anomalies == (AnomalyKind.UNPLATED,)


def test_an_entry_read_that_is_no_plate_holds_as_unreadable() -> None:
    decision = entry(plate=None, raw="XX??")
    assert decision.mode == "hold"
    assert decision.hold_reason == HoldReason.UNREADABLE
    assert decision.display_open == decision.display_hold
    assert decision.display_hold == "车牌无法识别 请扫描车道二维码入场 LANE:GZ-DEMO-01/IN-1"
    assert decision.anomalies == (AnomalyKind.INVALID_PLATE,)


def test_a_blacklisted_plate_is_held_before_anything_else_is_considered() -> None:
    flags = PlateFlags(
        blacklisted="stolen",
        arrears_since=NOW - timedelta(days=30),
        passes={LOT.lot_id: window(NOW - timedelta(days=1), NOW + timedelta(days=1))},
    )
    decision = entry(flags=flags)
    assert decision.mode == "hold"
    assert decision.hold_reason == HoldReason.BLACKLISTED
    assert decision.display_hold == "赣B12345 禁止入场 请联系管理员"


def test_arrears_older_than_the_lots_limit_hold_with_a_pay_reference() -> None:
    decision = entry(flags=PlateFlags(arrears_since=NOW - timedelta(days=3, seconds=1)))
    assert decision.mode == "hold"
    assert decision.hold_reason == HoldReason.ARREARS
    assert decision.display_hold == "赣B12345 有欠费未缴 请扫码缴费后入场 PAY:赣B12345"


def test_arrears_within_the_lots_limit_do_not_hold() -> None:
    for age in (timedelta(0), timedelta(days=3)):
        decision = entry(flags=PlateFlags(arrears_since=NOW - age))
        assert decision.mode == "open"
        assert decision.hold_reason is None


def test_a_plain_entry_opens_only_if_the_core_finds_a_free_space() -> None:
    decision = entry()
    assert decision.mode == "open"
    assert decision.display_open == "赣B12345 欢迎光临"
    assert decision.display_hold == "赣B12345 车位已满 请稍候"
    assert decision.anomalies == ()


def test_a_pass_for_the_lot_or_one_of_its_groups_opens_even_when_full() -> None:
    valid = window(NOW - timedelta(days=1), NOW + timedelta(days=1))
    for scope in (LOT.lot_id, "G-CENTRE"):
        decision = entry(flags=PlateFlags(passes={scope: valid}))
        assert decision.mode == "open_any"
        assert decision.display_open == "赣B12345 月卡车 欢迎光临"


def test_a_pass_that_has_not_started_ended_or_is_for_another_lot_is_no_pass() -> None:
    for scope, valid in (
        (LOT.lot_id, window(NOW + timedelta(seconds=1), NOW + timedelta(days=30))),
        (LOT.lot_id, window(NOW - timedelta(days=30), NOW)),
        ("GZ-OTHER-02", window(NOW - timedelta(days=1), NOW + timedelta(days=1))),
    ):
        assert entry(flags=PlateFlags(passes={scope: valid})).mode == "open"


def test_a_lot_whose_full_policy_is_open_lets_every_plate_in() -> None:
    lot = lot_info(kind="street", capacity=10, full_policy="open")
    decision = entry(lot=lot)
    assert decision.mode == "open_any"
    assert decision.display_open == "赣B12345 欢迎光临"


def test_a_low_confidence_read_opens_as_usual_and_is_flagged_for_review() -> None:
    decision = entry(confidence=0.79)
    assert decision.mode == "open"
    assert decision.anomalies == (AnomalyKind.LOW_CONFIDENCE,)
    assert entry(confidence=lane.LOW_CONFIDENCE).anomalies == ()
    assert entry(confidence=None).anomalies == ()


def test_a_low_confidence_read_of_a_held_plate_keeps_the_flag() -> None:
    decision = entry(confidence=0.5, flags=PlateFlags(blacklisted="x"))
    assert decision.hold_reason == HoldReason.BLACKLISTED
    assert decision.anomalies == (AnomalyKind.LOW_CONFIDENCE,)


# ------------------------------------------------------------------- exit


def test_every_read_plate_leaves_first_and_pays_later() -> None:
    decision = leave()
    assert decision.mode == "exit"
    assert decision.hold_reason is None
    assert decision.anomalies == ()


def test_an_exit_without_a_plate_holds_and_asks_for_the_lane_code() -> None:
    decision = leave(plate=None, raw=None)
    assert decision.mode == "hold"
    assert decision.hold_reason == HoldReason.UNPLATED
    assert decision.display_hold == "无牌车 请扫描车道二维码缴费离场 LANE:GZ-DEMO-01/OUT-1"
    unreadable = leave(plate=None, raw="??")
    assert unreadable.hold_reason == HoldReason.UNREADABLE
    assert unreadable.display_hold == "车牌无法识别 请扫描车道二维码离场 LANE:GZ-DEMO-01/OUT-1"
    assert unreadable.anomalies == (AnomalyKind.INVALID_PLATE,)


def test_a_low_confidence_exit_still_opens_and_is_flagged() -> None:
    decision = leave(confidence=0.3)
    assert decision.mode == "exit"
    assert decision.anomalies == (AnomalyKind.LOW_CONFIDENCE,)


# ---------------------------------------------------------------- displays


def test_a_stay_is_shown_in_whole_minutes_rounded_down() -> None:
    assert lane.duration_text(NOW, NOW + timedelta(minutes=65, seconds=59)) == "1小时05分"
    assert lane.duration_text(NOW, NOW + timedelta(hours=200)) == "200小时00分"


@given(st.integers(-(10**9), 10**9))
def test_a_stay_is_never_shown_negative(seconds: int) -> None:
    text = lane.duration_text(NOW, NOW + timedelta(seconds=seconds))
    hours, minutes = text.removesuffix("分").split("小时")
    assert int(hours) >= 0
    assert 0 <= int(minutes) < 60
    assert int(hours) * 3600 + int(minutes) * 60 <= max(0, seconds)


def test_the_exit_board_shows_the_fee_or_free() -> None:
    out = NOW + timedelta(minutes=65)
    assert lane.exit_display("赣B12345", NOW, out, 300) == (
        "赣B12345 停车1小时05分 应缴3.00元 已离场后付"
    )
    assert lane.exit_display("赣B12345", NOW, out, 0) == "赣B12345 停车1小时05分 免费 一路顺风"


def test_a_stay_waiting_for_review_announces_no_amount() -> None:
    text = lane.review_exit_display("赣B12345", NOW, NOW + timedelta(hours=200))
    assert text == "赣B12345 停车200小时00分 费用待核实 一路顺风"
    assert "应缴" not in text


def test_a_prepaid_stay_shows_what_was_paid_and_any_overtime_due() -> None:
    out = NOW + timedelta(minutes=65)
    assert lane.prepaid_exit_display("赣B12345", NOW, out, due_fen=0, prepaid_fen=300) == (
        "赣B12345 停车1小时05分 已缴3.00元 一路顺风"
    )
    assert lane.prepaid_exit_display("赣B12345", NOW, out, due_fen=100, prepaid_fen=300) == (
        "赣B12345 停车1小时05分 已缴3.00元 超时应缴1.00元 已离场后付"
    )


def test_an_exit_without_entry_shows_the_lots_flat_fee_or_nothing() -> None:
    assert lane.no_entry_display("赣B12345", 0) == "赣B12345 无入场记录 一路顺风"
    assert lane.no_entry_display("赣B12345", 500) == "赣B12345 无入场记录 应缴5.00元 已离场后付"
    assert lane.NO_ENTRY_FEE_FEN == 0


def test_references_name_the_plate_or_the_lane() -> None:
    assert lane.pay_reference("赣B12345") == "PAY:赣B12345"
    assert lane.lane_reference("GZ-DEMO-01", "IN-1") == "LANE:GZ-DEMO-01/IN-1"
