from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

import msgspec

from parking.errors import InvalidInput, NotFound

_PRINTABLE: Final = r"^[^\x00-\x1f\x7f]+$"
#: ids of lots, lanes, spaces and devices
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=_PRINTABLE)]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
Minutes = Annotated[int, msgspec.Meta(ge=0, le=525_600)]
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]


class District(msgspec.Struct, frozen=True, kw_only=True):
    """A district, development zone, county or county-level city of Ganzhou."""

    code: str
    name: str
    kind: str
    latitude: float
    longitude: float


class Company(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str


class Access(StrEnum):
    READ = "read"
    CHANGE = "change"


class Verdict(StrEnum):
    """What the caller may do with a lot (or a thing in one): ``foreign`` is another
    company's, answered like ``missing`` (404) but written to the audit log."""

    ALLOWED = "allowed"
    MISSING = "missing"
    FOREIGN = "foreign"


class LotNotFound(NotFound):
    """The lot does not exist, or is not the caller's company's (the same 404 for both)."""


class TariffNotFound(NotFound):
    """The tariff does not exist, or the caller's company may not touch it (404)."""


class BlacklistEntryNotFound(NotFound):
    """The plate's blacklist entry is another company's to change (404)."""


class UnknownCompany(InvalidInput):
    """No operator company has this id."""


class GroupNotFound(NotFound):
    """The lot group does not exist, or holds another company's lots (404)."""


class PassNotFound(NotFound):
    """The monthly pass does not exist, or is good for another company's lots (404)."""


class InvalidLot(InvalidInput):
    """A lot that the database's rules refuse (unknown district, bad values)."""


# ------------------------------------------------------------------ lots, lanes, spaces


class Lot(msgspec.Struct, frozen=True, kw_only=True):
    """A lot as stored: the one shape every package uses (the API's answer, the
    occupancy core's directory, the device fleet, the seeded city). The policies
    default to the database's defaults."""

    id: str
    name: str
    district_code: str
    kind: str
    capacity: int
    latitude: float
    longitude: float
    full_policy: str = "hold"
    arrears_hold_after_minutes: int = 7 * 24 * 60
    exit_window_minutes: int = 15
    #: past these a stay's bill waits for an operator (mqtt.md "Clocks" 4)
    review_stay_limit_minutes: int = 7 * 24 * 60
    review_fee_ceiling_fen: int = 20_000
    #: the operator company that owns the lot (None: none yet)
    company_id: str | None = None
    #: the street address a driver reads (None: not given yet)
    address: str | None = None


class NewLot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Ident
    name: Name
    district_code: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2,4}$")]
    kind: Literal["gated", "on_street"]
    capacity: Capacity
    latitude: Latitude
    longitude: Longitude
    full_policy: Literal["hold", "open"] = "hold"
    arrears_hold_after_minutes: Minutes = 7 * 24 * 60
    exit_window_minutes: Minutes = 15
    address: Address | None = None


class LotChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Only the fields given change."""

    full_policy: Literal["hold", "open"] | None = None
    arrears_hold_after_minutes: Minutes | None = None
    exit_window_minutes: Minutes | None = None
    capacity: Capacity | None = None
    address: Address | None = None


class LaneView(msgspec.Struct, frozen=True, kw_only=True):
    lot_id: str
    lane_id: str
    direction: str


class NewLane(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    lane_id: Ident
    direction: Literal["in", "out"]


class SpaceView(msgspec.Struct, frozen=True, kw_only=True):
    lot_id: str
    space_id: str
    kind: str


class NewSpace(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    space_id: Ident
    kind: Literal["standard", "accessible", "charging", "large"] = "standard"
