"""Driver accounts: phone login, token pairs, bound plates and claims on plates."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

import msgspec

from parking.errors import Conflict, InvalidInput, NotFound, ParkingError

#: Audience of refresh tokens; access tokens use parking.auth.tokens.ACCESS_AUDIENCE,
#: so neither kind is accepted where the other is expected.
REFRESH_AUDIENCE: Final = "changbo-refresh"

# Access tokens are checked on every request without a database read, so they
# live briefly; a revoked one is also denylisted in Redis until it expires.
ACCESS_TTL: Final = timedelta(minutes=15)
# A refresh token is good for 30 days after it is issued, and rotation issues
# a new one; a login (token family) ends 90 days after the code was entered,
# however often it was refreshed, so a stolen phone's session cannot live on.
REFRESH_TTL: Final = timedelta(days=30)
SESSION_TTL: Final = timedelta(days=90)

# One-time codes: six digits, five minutes, five wrong tries. A guesser gets at
# most 5 tries per code and (with the login rate limits) a handful of codes an
# hour: about 1 in 10,000 per hour against a 10^6 code space.
CODE_DIGITS: Final = 6
CODE_TTL: Final = timedelta(minutes=5)
CODE_MAX_ATTEMPTS: Final = 5

MAX_VEHICLES: Final = 5


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    #: deleted by its driver: no phone, no login, the party of its financial records
    DELETED = "deleted"


class ClaimStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ClaimDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class PlateTrust(StrEnum):
    """How far the platform believes a binding's account is the vehicle's keeper."""

    UNVERIFIED = "unverified"  # typed in: proves nobody's car
    VERIFIED = "verified"  # an approved claim with the 行驶证 photo, or a provider's word


class ClassSource(StrEnum):
    """Where a vehicle's billing class comes from."""

    PLATE = "plate"  # the plate kind's default (parking.vehicles.default_class_for)
    DRIVER = "driver"  # the driver declared a higher class (e.g. a 9-seat van)
    OPERATOR = "operator"  # staff set it from the registration; only staff change it


# --------------------------------------------------------------------- errors


class AccountError(ParkingError):
    """Base of the accounts package's errors."""


class InvalidPhone(InvalidInput, AccountError):
    """Not a mainland mobile number."""


class CodeRejected(AccountError):
    """A login code that is wrong, expired, used up or never sent (401)."""


class RefreshRejected(AccountError):
    """A refresh token that is invalid, expired, revoked or already rotated (401)."""


class AccountSuspended(AccountError):
    """The account may not log in (403)."""


class AccountNotFound(NotFound, AccountError):
    """No such account (a token for an account that does not exist)."""


class VehicleNotFound(NotFound, AccountError):
    """The plate is not bound to the caller's account."""


class PlateHeld(Conflict, AccountError):
    """The plate is bound to another account; the detail names the claim route."""


class PlateAlreadyYours(Conflict, AccountError):
    """The plate is already bound to the caller."""


class TooManyVehicles(Conflict, AccountError):
    """The account already has the most plates it may bind."""


class ClassOverrideRefused(AccountError):
    """A driver may raise a plate's class, not lower it, and not replace staff's."""


class ClaimNotFound(NotFound, AccountError):
    """No such plate claim."""


class ClaimConflict(Conflict, AccountError):
    """The claim cannot be made or decided in the current state."""


# --------------------------------------------------------------------- values


class IssuedTokens(msgspec.Struct, frozen=True, kw_only=True):
    """A token pair as returned to the app (OAuth 2 field names)."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    refresh_expires_in: int
    account_id: str


class CodeSent(msgspec.Struct, frozen=True, kw_only=True):
    phone: str
    expires_in: int


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    #: None once the account is deleted
    phone: str | None
    status: AccountStatus
    created_at: datetime
    vehicles: int


class VehicleView(msgspec.Struct, frozen=True, kw_only=True):
    #: how a route names the binding (``/v1/me/vehicles/{id}``): a plate is personal
    #: data and never goes in a URL
    id: str
    plate: str
    kind: str
    colour: str
    is_new_energy: bool
    vehicle_class: int
    class_label: str
    class_source: ClassSource
    bound_at: datetime
    #: only a verified holder sees where the car is and was (from ``bound_at`` on)
    trust: PlateTrust = PlateTrust.UNVERIFIED
    verified_at: datetime | None = None


class Binding(msgspec.Struct, frozen=True, kw_only=True):
    """A live binding of a plate to an account, as the "is this plate mine" rule answers it."""

    plate: str
    bound_at: datetime
    verified_at: datetime | None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


class ClaimView(msgspec.Struct, frozen=True, kw_only=True):
    """A claim as its claimant sees it (the current holder is not disclosed)."""

    id: str
    plate: str
    claimant_account_id: str
    status: ClaimStatus
    evidence: str
    #: the reference of the uploaded 行驶证 photo (None on claims made before it was required)
    photo_ref: str | None
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_note: str | None = None


class OperatorClaimView(ClaimView, frozen=True, kw_only=True):
    """A claim as staff review it: with the account that held the plate when it was made."""

    holder_account_id: str | None = None


class ClassOverride(msgspec.Struct, frozen=True, kw_only=True):
    """A stored vehicle_class_overrides row."""

    vehicle_class: int
    set_by: str


#: ``vehicles.verified_by`` of a binding verified by an approved claim, or by a provider.
def verified_by_claim(claim_id: str) -> str:
    return f"claim:{claim_id}"


def verified_by_provider(provider: str) -> str:
    return f"provider:{provider}"


#: Account ids look like ``acc-<ULID>``; an override whose set_by is one was a driver's.
ACCOUNT_ID_PREFIX: Final = "acc"
