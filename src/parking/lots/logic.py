"""The tenancy rule, pure: which lots and tariffs a caller may read or change.

- an operator reads and changes the lots of its own company, and nothing else
  (a lot no company owns included);
- the city (and finance) read every lot and change none;
- the blacklist is one list for the city, but an entry is the company's that
  made it: only that company changes or lifts it;
- tariffs: a company's own tariffs are its to read and change; the city's
  tariffs (no owner) are read by everyone and assigned by any company to its
  own lots, but versioned by none, since a version reprices every lot using it.
"""

from __future__ import annotations

from typing import Final

from parking.auth.model import Principal, Role
from parking.lots.model import Access

#: roles that read every company's lots and change none
READ_EVERYTHING: Final = frozenset({Role.CITY, Role.FINANCE})
#: a company id no lot has: the filter for a role that sees no lot
_NO_COMPANY: Final = ""


def lot_filter(who: Principal) -> str | None:
    """The company whose lots ``who`` lists, or None for every lot of the city."""
    if who.role in READ_EVERYTHING:
        return None
    if who.role is Role.OPERATOR and who.company:
        return who.company
    return _NO_COMPANY


def may_act_on_lot(who: Principal, owner: str | None, access: Access) -> bool:
    if who.role in READ_EVERYTHING:
        return access is Access.READ
    return who.role is Role.OPERATOR and owner is not None and owner == who.company


def may_change_list_entry(who: Principal, owner: str | None) -> bool:
    """An entry of a city-wide list (the blacklist) is changed or lifted by the company
    that made it; one made before companies existed (no owner) by any operator."""
    if who.role is not Role.OPERATOR:
        return False
    return owner is None or owner == who.company


def may_act_on_tariff(who: Principal, owner: str | None, access: Access) -> bool:
    if owner is None and access is Access.READ:
        return who.role in READ_EVERYTHING or who.role is Role.OPERATOR
    return may_act_on_lot(who, owner, access)
