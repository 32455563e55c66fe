"""Lots as ParkAPI parking sites, pure. A site is a lot: its id, name, place and size,
and now how many spaces are free; never a plate, a session or a person."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from parking.lots.model import Company, Lot
from parking.occupancy.model import LiveCount
from parking.opendata.model import (
    OpeningStatus,
    RealtimeSite,
    RealtimeSites,
    SiteType,
    StaticSite,
    StaticSites,
)

_TYPES = {"gated": SiteType.CAR_PARK, "on_street": SiteType.ON_STREET}


def static_sites(lots: Sequence[Lot], companies: Sequence[Company]) -> StaticSites:
    names = {c.id: c.name for c in companies}
    items = [
        StaticSite(
            uid=lot.id,
            name=lot.name,
            lat=lot.latitude,
            lon=lot.longitude,
            capacity=lot.capacity,
            purpose="CAR",
            type=_TYPES.get(lot.kind, SiteType.OTHER),
            operator_name=names.get(lot.company_id) if lot.company_id else None,
            address=lot.address,
            has_fee=True,
            has_realtime_data=True,
        )
        for lot in lots
    ]
    return StaticSites(items=items, total_count=len(items))


def realtime_sites(
    lots: Sequence[Lot], counts: Mapping[str, LiveCount], at: datetime
) -> RealtimeSites:
    """A lot the live core does not have (not loaded) is UNKNOWN with no counts."""
    items = []
    for lot in lots:
        count = counts.get(lot.id)
        items.append(
            RealtimeSite(
                uid=lot.id,
                realtime_data_updated_at=at,
                realtime_opening_status=OpeningStatus.OPEN if count else OpeningStatus.UNKNOWN,
                realtime_capacity=count.capacity if count else None,
                realtime_free_capacity=count.free if count else None,
            )
        )
    return RealtimeSites(items=items, total_count=len(items))
