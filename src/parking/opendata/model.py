"""The public feed's shapes: ParkAPI v3's parking site fields, by their published names
(``parkapi-sources`` ``StaticParkingSiteInput`` / ``RealtimeParkingSiteInput``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec


class SiteType(StrEnum):
    ON_STREET = "ON_STREET"
    OFF_STREET_PARKING_GROUND = "OFF_STREET_PARKING_GROUND"
    UNDERGROUND = "UNDERGROUND"
    CAR_PARK = "CAR_PARK"
    OTHER = "OTHER"


class OpeningStatus(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"
    UNKNOWN = "UNKNOWN"


class StaticSite(msgspec.Struct, frozen=True, kw_only=True):
    uid: str
    name: str
    #: WGS84
    lat: float
    lon: float
    capacity: int
    purpose: str
    type: SiteType
    operator_name: str | None
    #: the street address (ParkAPI v3 ``address``), when the operator gave one
    address: str | None
    has_fee: bool
    has_realtime_data: bool


class RealtimeSite(msgspec.Struct, frozen=True, kw_only=True):
    uid: str
    realtime_data_updated_at: datetime
    realtime_opening_status: OpeningStatus
    realtime_capacity: int | None
    realtime_free_capacity: int | None


class StaticSites(msgspec.Struct, frozen=True, kw_only=True):
    items: list[StaticSite]
    total_count: int


class RealtimeSites(msgspec.Struct, frozen=True, kw_only=True):
    items: list[RealtimeSite]
    total_count: int
