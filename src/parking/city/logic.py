"""The city's figures, pure: lots with their live counts summed per district and city."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from parking.city.model import DistrictNow, LotNow, LotOrder, Overview
from parking.lots.model import District, Lot
from parking.occupancy.model import LiveCount


def percent(occupied: int, capacity: int) -> float:
    return round(100.0 * occupied / capacity, 1) if capacity > 0 else 0.0


def lot_now(lot: Lot, count: LiveCount | None) -> LotNow:
    """The lot now; the core's capacity when it has the lot (it follows changes at once)."""
    capacity = count.capacity if count is not None else lot.capacity
    occupied = min(count.occupied, capacity) if count is not None else 0
    free = capacity - occupied
    return LotNow(
        lot_id=lot.id,
        name=lot.name,
        district_code=lot.district_code,
        kind=lot.kind,
        capacity=capacity,
        occupied=occupied,
        free=free,
        occupancy_pct=percent(occupied, capacity),
        full=free == 0,
        live=count is not None,
        latitude=lot.latitude,
        longitude=lot.longitude,
    )


def districts_now(lots: Iterable[LotNow], districts: Sequence[District]) -> list[DistrictNow]:
    """Every district that has one of ``lots``, by code."""
    names = {d.code: d.name for d in districts}
    grouped: dict[str, list[LotNow]] = {}
    for lot in lots:
        grouped.setdefault(lot.district_code, []).append(lot)
    out = []
    for code in sorted(grouped):
        members = grouped[code]
        capacity = sum(m.capacity for m in members)
        occupied = sum(m.occupied for m in members)
        out.append(
            DistrictNow(
                code=code,
                name=names.get(code, code),
                lots=len(members),
                capacity=capacity,
                occupied=occupied,
                free=capacity - occupied,
                occupancy_pct=percent(occupied, capacity),
                full_lots=sum(1 for m in members if m.full),
            )
        )
    return out


def overview(
    lots: Sequence[LotNow], counts: Mapping[str, LiveCount], districts: int, at: datetime
) -> Overview:
    capacity = sum(lot.capacity for lot in lots)
    occupied = sum(lot.occupied for lot in lots)
    return Overview(
        at=at,
        lots=len(lots),
        districts=districts,
        capacity=capacity,
        occupied=occupied,
        free=capacity - occupied,
        occupancy_pct=percent(occupied, capacity),
        full_lots=sum(1 for lot in lots if lot.full),
        open_sessions=sum(counts[lot.lot_id].sessions for lot in lots if lot.lot_id in counts),
        lots_not_live=sum(1 for lot in lots if not lot.live),
    )


def ordered(lots: Iterable[LotNow], order: LotOrder) -> list[LotNow]:
    if order is LotOrder.FULLEST:
        return sorted(lots, key=lambda x: (-x.occupancy_pct, -x.occupied, x.lot_id))
    if order is LotOrder.EMPTIEST:
        return sorted(lots, key=lambda x: (x.occupancy_pct, x.occupied, x.lot_id))
    if order is LotOrder.FREE:
        return sorted(lots, key=lambda x: (-x.free, x.lot_id))
    return sorted(lots, key=lambda x: x.lot_id)


def changed(previous: Mapping[str, LotNow], current: Iterable[LotNow]) -> list[LotNow]:
    """The lots whose count or size differs from ``previous`` (new ones included)."""
    out = []
    for lot in current:
        before = previous.get(lot.lot_id)
        if before is None or (before.occupied, before.capacity, before.live) != (
            lot.occupied,
            lot.capacity,
            lot.live,
        ):
            out.append(lot)
    return out
