"""The city's figures as city management (and an operator, for its own lots) reads them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec


class LotNow(msgspec.Struct, frozen=True, kw_only=True):
    lot_id: str
    name: str
    district_code: str
    kind: str
    capacity: int
    #: cars in the lot now: a gated lot's open sessions, an on-street lot's occupied spaces
    occupied: int
    free: int
    #: occupied / capacity, in percent (one decimal)
    occupancy_pct: float
    full: bool
    #: false when the live core does not have the lot (not loaded): counted as empty
    live: bool
    latitude: float
    longitude: float


class DistrictNow(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    name: str
    lots: int
    capacity: int
    occupied: int
    free: int
    occupancy_pct: float
    full_lots: int


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    lots: int
    districts: int
    capacity: int
    occupied: int
    free: int
    occupancy_pct: float
    full_lots: int
    #: open sessions in the core (gated cars and claimed on-street stays)
    open_sessions: int
    #: lots the live core does not have (not loaded yet): counted as empty
    lots_not_live: int


class LotOrder(StrEnum):
    """How ``/v1/city/lots`` sorts: fullest first, emptiest first, most free, by id."""

    FULLEST = "fullest"
    EMPTIEST = "emptiest"
    FREE = "free"
    ID = "id"
