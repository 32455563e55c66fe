from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Final

import msgspec

from parking.errors import ParkingError


class Role(StrEnum):
    DRIVER = "driver"
    OPERATOR = "operator"
    FINANCE = "finance"
    CITY = "city"
    DEVICE = "device"
    #: 码上反映's field teams (issue 15): a lot's own staff (scope: the lot), a
    #: district's parking team (scope: the district) and a city department
    #: (scope: its name, e.g. traffic_police)
    LOT_STAFF = "lot_staff"
    DISTRICT_TEAM = "district_team"
    DEPARTMENT = "department"


#: Roles that act within a scope named by the token's ``scope`` claim.
FIELD_ROLES: Final = frozenset({Role.LOT_STAFF, Role.DISTRICT_TEAM, Role.DEPARTMENT})


#: Roles of people who work for the platform (not drivers, not devices).
STAFF_ROLES: Final = frozenset({Role.OPERATOR, Role.FINANCE, Role.CITY, *FIELD_ROLES})
#: Longest lifetime of a staff token: one shift with its handover. A staff
#: token opens every lot's sessions or the books, and it has no refresh
#: token to rotate: a longer one is a standing key for whoever copies it.
#: Tokens are issued and verified against this bound (exp - iat).
STAFF_TOKEN_MAX_TTL: Final = timedelta(hours=12)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: ``subject`` is an account id, a staff login or a device id.

    ``company`` is the operator company an operator works for (from the token's
    signed ``company`` claim); it is None for every other role. ``scope`` is where a
    field role acts (a lot, a district, a department: the signed ``scope`` claim);
    None for every other role."""

    subject: str
    role: Role
    token_id: str
    company: str | None = None
    scope: str | None = None


class NotAuthenticated(ParkingError):
    """No valid credentials (401)."""


class Forbidden(ParkingError):
    """Valid credentials, wrong role (403)."""
