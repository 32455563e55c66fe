from __future__ import annotations

from enum import StrEnum

import msgspec

from parking.errors import InvalidInput, NotFound


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
