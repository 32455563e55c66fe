"""Pure decisions of driver accounts: phones, codes, token lifetimes, plates, claims."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Final

from parking.accounts.model import (
    ACCOUNT_ID_PREFIX,
    CODE_DIGITS,
    MAX_VEHICLES,
    REFRESH_TTL,
    ClaimConflict,
    ClaimDecision,
    ClaimStatus,
    ClassOverride,
    ClassOverrideRefused,
    ClassSource,
    InvalidPhone,
    TooManyVehicles,
)
from parking.plates import Plate
from parking.vehicles import VehicleClass, default_class_for

_MAX_PHONE_INPUT: Final = 32
# Mainland mobile numbers: 11 digits, 13x to 19x. Only these receive SMS from
# the platform's gateway; landlines and foreign numbers cannot log in.
_MOBILE: Final = re.compile(r"1[3-9][0-9]{9}")
_PHONE_SEPARATORS: Final = frozenset(" -().")


def normalise_phone(raw: str) -> str:
    """A mainland mobile number as E.164 (``+8613812345678``).

    Accepts the forms people type: ``138 1234 5678``, ``+86 138-1234-5678``,
    ``008613812345678``, full-width digits. Raises `InvalidPhone` otherwise.
    """
    if len(raw) > _MAX_PHONE_INPUT:
        raise InvalidPhone(f"a phone number has at most {_MAX_PHONE_INPUT} characters")
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(c for c in text if c not in _PHONE_SEPARATORS)
    for prefix in ("+86", "0086"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    else:
        if len(text) == 13 and text.startswith("86"):
            text = text[2:]
    # isascii: NFKC leaves other scripts' digits (e.g. Arabic-Indic) as they are.
    if not (text.isascii() and _MOBILE.fullmatch(text)):
        raise InvalidPhone("not a mainland mobile number (11 digits starting 13 to 19)")
    return "+86" + text


def format_code(number: int) -> str:
    """A drawn number as the code the driver types (leading zeros kept)."""
    if not 0 <= number < 10**CODE_DIGITS:
        raise ValueError(f"a code is {CODE_DIGITS} digits")
    return f"{number:0{CODE_DIGITS}d}"


def code_pepper(jwt_key: str) -> bytes:
    """The key codes are hashed with, derived from the token key (no new secret to keep)."""
    return hmac.new(jwt_key.encode(), b"changbo/otp/v1", hashlib.sha256).digest()


def code_digest(pepper: bytes, phone: str, code: str) -> str:
    """What Redis keeps of a code: a keyed hash bound to the phone, never the code itself."""
    return hmac.new(pepper, f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


def refresh_expiry(now: datetime, session_expires_at: datetime) -> datetime:
    """A new refresh token lives REFRESH_TTL, never past the end of its login."""
    return min(now + REFRESH_TTL, session_expires_at)


class RefreshVerdict(StrEnum):
    OK = "ok"
    REUSED = "reused"  # rotated before: the token was copied; revoke the family
    REVOKED = "revoked"
    EXPIRED = "expired"


def refresh_verdict(
    *,
    rotated: bool,
    session_revoked: bool,
    expires_at: datetime,
    session_expires_at: datetime,
    now: datetime,
) -> RefreshVerdict:
    """What to do with a presented refresh token, from its stored state."""
    if session_revoked:
        return RefreshVerdict.REVOKED
    if rotated:
        return RefreshVerdict.REUSED
    if now >= expires_at or now >= session_expires_at:
        return RefreshVerdict.EXPIRED
    return RefreshVerdict.OK


def check_room_for_vehicle(live: int) -> None:
    if live >= MAX_VEHICLES:
        raise TooManyVehicles(f"an account binds at most {MAX_VEHICLES} plates; unbind one first")


def is_driver(set_by: str) -> bool:
    return set_by.startswith(ACCOUNT_ID_PREFIX + "-")


def billing_class(plate: Plate, override: ClassOverride | None) -> tuple[VehicleClass, ClassSource]:
    """The class a plate is billed as, and who decided it."""
    if override is None:
        return default_class_for(plate), ClassSource.PLATE
    source = ClassSource.DRIVER if is_driver(override.set_by) else ClassSource.OPERATOR
    return VehicleClass(override.vehicle_class), source


def check_driver_override(
    plate: Plate, requested: VehicleClass, existing: ClassOverride | None
) -> None:
    """A driver may declare a class at or above the plate's default, unless staff set one.

    The plate's default errs low (parking.vehicles), so an honest declaration
    only raises it: a 9-seat van on blue plates is 二类. Lowering it would let
    a driver pay less by saying so; that takes staff looking at the registration.
    """
    if existing is not None and not is_driver(existing.set_by):
        raise ClassOverrideRefused(
            f"staff set {plate.text}'s class to {existing.vehicle_class}; "
            "ask an operator to change it"
        )
    default = default_class_for(plate)
    if requested < default:
        raise ClassOverrideRefused(
            f"{plate.text} is billed at least as class {int(default)} ({default.label}); "
            "a lower class needs an operator to check the registration"
        )


def decide_claim(status: ClaimStatus, decision: ClaimDecision) -> ClaimStatus:
    """pending -> approved | rejected; a decided claim stays decided."""
    if status is not ClaimStatus.PENDING:
        raise ClaimConflict(f"the claim was {status.value} already")
    return ClaimStatus.APPROVED if decision is ClaimDecision.APPROVE else ClaimStatus.REJECTED
