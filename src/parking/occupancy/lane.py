"""Decisions at the lane, pure: (plate, what the city knows, the lot, now) -> what the gate does.

The occupancy core applies the decision atomically; the one input only it can
check atomically, the lot's free count, it checks itself (``mode="open"``).

Display texts are what the lane's LED board shows and its voice reads out, so
they are short and in Chinese; the pay-now reference of an arrears hold is a
code the driver types or the board renders as a QR code (``PAY:<plate>``), the
lane's own QR code starts unplated entries (``LANE:<lot>/<lane>``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from parking.money import format_yuan
from parking.occupancy.model import (
    AnomalyKind,
    EntryDecision,
    ExitDecision,
    HoldReason,
    LotInfo,
    PlateFlags,
)
from parking.plates import Plate

#: ANPR confidence below which a read goes to the review queue (with its image).
#: Lower lets misreads bill the wrong car unnoticed; higher floods reviewers:
#: vendors' units report 0.9+ for clean daytime reads and 0.6-0.8 at night or
#: in rain, when a second look is worth it.
LOW_CONFIDENCE: Final = 0.8

#: What an exit with no matching entry costs (lot policy for now: one city-wide
#: value). 0 and an anomaly for review: charging a flat fee to a car whose
#: entry the camera missed bills drivers for our blind spots, and the reviewer
#: can still bill the stay from the images.
NO_ENTRY_FEE_FEN: Final = 0


def pay_reference(plate: str) -> str:
    return f"PAY:{plate}"


def lane_reference(lot_id: str, lane_id: str) -> str:
    return f"LANE:{lot_id}/{lane_id}"


def duration_text(entry: datetime, exit: datetime) -> str:
    """``1小时05分``: whole minutes, rounded down; never negative."""
    minutes = max(0, int((exit - entry).total_seconds() // 60))
    hours, rest = divmod(minutes, 60)
    return f"{hours}小时{rest:02d}分"


def decide_entry(
    *,
    plate: Plate | None,
    raw_plate: str | None,
    confidence: float | None,
    flags: PlateFlags,
    lot: LotInfo,
    lane_id: str,
    now: datetime,
) -> EntryDecision:
    """The entry lane's decision for one car.

    Holds, in this order: no plate read (scan the lane QR code), a read that is
    not a plate, a blacklisted plate, arrears older than the lot's
    ``arrears_hold_after``. Otherwise opens; when the lot is full it holds,
    unless the lot's full_policy is ``open`` or the plate has a monthly pass
    for this lot (or one of its groups).
    """
    anomalies: list[str] = []
    lane_qr = lane_reference(lot.lot_id, lane_id)
    if plate is None:
        if raw_plate is None or not raw_plate.strip():
            anomalies.append(AnomalyKind.UNPLATED)
            display = f"无牌车 请扫描车道二维码入场 {lane_qr}"
            return EntryDecision("hold", HoldReason.UNPLATED, display, display, tuple(anomalies))
        anomalies.append(AnomalyKind.INVALID_PLATE)
        display = f"车牌无法识别 请扫描车道二维码入场 {lane_qr}"
        return EntryDecision("hold", HoldReason.UNREADABLE, display, display, tuple(anomalies))
    text = plate.text
    if confidence is not None and confidence < LOW_CONFIDENCE:
        anomalies.append(AnomalyKind.LOW_CONFIDENCE)
    if flags.blacklisted is not None:
        display = f"{text} 禁止入场 请联系管理员"
        return EntryDecision("hold", HoldReason.BLACKLISTED, display, display, tuple(anomalies))
    if flags.arrears_since is not None and now - flags.arrears_since > lot.arrears_hold_after:
        display = f"{text} 有欠费未缴 请扫码缴费后入场 {pay_reference(text)}"
        return EntryDecision("hold", HoldReason.ARREARS, display, display, tuple(anomalies))
    full = f"{text} 车位已满 请稍候"
    welcome = f"{text} 欢迎光临"
    if flags.pass_for(lot, now) is not None:
        return EntryDecision("open_any", None, f"{text} 月卡车 欢迎光临", full, tuple(anomalies))
    if lot.full_policy == "open":
        return EntryDecision("open_any", None, welcome, full, tuple(anomalies))
    return EntryDecision("open", None, welcome, full, tuple(anomalies))


def decide_exit(
    *,
    plate: Plate | None,
    raw_plate: str | None,
    confidence: float | None,
    lot_id: str,
    lane_id: str,
) -> ExitDecision:
    """Exit lanes open for every plate (leave first, pay later); without a plate, hold.

    An unplated car entered by scanning the lane's QR code and leaves the same
    way, so the barrier stays closed until its session is paid or closed there.
    """
    anomalies: list[str] = []
    lane_qr = lane_reference(lot_id, lane_id)
    if plate is None:
        if raw_plate is None or not raw_plate.strip():
            anomalies.append(AnomalyKind.UNPLATED)
            display = f"无牌车 请扫描车道二维码缴费离场 {lane_qr}"
            return ExitDecision("hold", HoldReason.UNPLATED, display, tuple(anomalies))
        anomalies.append(AnomalyKind.INVALID_PLATE)
        display = f"车牌无法识别 请扫描车道二维码离场 {lane_qr}"
        return ExitDecision("hold", HoldReason.UNREADABLE, display, tuple(anomalies))
    if confidence is not None and confidence < LOW_CONFIDENCE:
        anomalies.append(AnomalyKind.LOW_CONFIDENCE)
    return ExitDecision("exit", None, "", tuple(anomalies))


def exit_display(plate: str, entry: datetime, exit: datetime, fee_fen: int) -> str:
    """``赣B12345 停车1小时05分 应缴3.00元 已离场后付``."""
    stay = duration_text(entry, exit)
    if fee_fen == 0:
        return f"{plate} 停车{stay} 免费 一路顺风"
    return f"{plate} 停车{stay} 应缴{format_yuan(fee_fen)}元 已离场后付"


def review_exit_display(plate: str, entry: datetime, exit: datetime) -> str:
    """The exit of a stay past the lot's review limits (mqtt.md "Clocks" 4):
    ``赣B12345 停车200小时00分 费用待核实 一路顺风``. The bill exists, but no amount
    is announced as owed before an operator confirmed it."""
    return f"{plate} 停车{duration_text(entry, exit)} 费用待核实 一路顺风"


def prepaid_exit_display(
    plate: str, entry: datetime, exit: datetime, *, due_fen: int, prepaid_fen: int
) -> str:
    """The exit of a stay paid in the lot: ``赣B12345 停车1小时05分 已缴3.00元 一路顺风``
    within the exit window, ``... 已缴3.00元 超时应缴1.00元 已离场后付`` after it."""
    stay = duration_text(entry, exit)
    if due_fen == 0:
        return f"{plate} 停车{stay} 已缴{format_yuan(prepaid_fen)}元 一路顺风"
    return (
        f"{plate} 停车{stay} 已缴{format_yuan(prepaid_fen)}元 "
        f"超时应缴{format_yuan(due_fen)}元 已离场后付"
    )


def no_entry_display(plate: str, fee_fen: int) -> str:
    if fee_fen == 0:
        return f"{plate} 无入场记录 一路顺风"
    return f"{plate} 无入场记录 应缴{format_yuan(fee_fen)}元 已离场后付"
