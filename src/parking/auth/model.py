from __future__ import annotations

from enum import StrEnum

import msgspec

from parking.errors import ParkingError


class Role(StrEnum):
    DRIVER = "driver"
    OPERATOR = "operator"
    FINANCE = "finance"
    CITY = "city"
    DEVICE = "device"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: ``subject`` is an account id, a staff login or a device id.

    ``company`` is the operator company an operator works for (from the token's
    signed ``company`` claim); it is None for every other role."""

    subject: str
    role: Role
    token_id: str
    company: str | None = None


class NotAuthenticated(ParkingError):
    """No valid credentials (401)."""


class Forbidden(ParkingError):
    """Valid credentials, wrong role (403)."""
