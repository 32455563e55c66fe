"""Signed QR codes on lots, lanes and on-street spaces (一次扫码).

Wire format, version 1 (what the QR code's URL carries after ``/q/``):

    token = base64url_nopad(body || mac)
    body  = msgpack [1, key_id, kind, lot_id, lane_or_space_id | nil, issued_at, expires_at | nil]
    mac   = HMAC-SHA256(keys[key_id], "changbo-qr/v1\\0" || body)[:16]

``kind`` is 1 (lot), 2 (lane) or 3 (space); times are Unix seconds. The MAC
is truncated to 128 bits: forging one takes 2^128 guesses, and each guess is
an online request, so a shorter code (a smaller, easier-to-scan QR symbol)
costs no real security. A lane's direction is not in the code: it is read
from the database when the code is resolved, so re-purposing a lane needs no
reprinting. A typical lane code is ~50 bytes, ~70 base64 characters, and the
whole URL fits a version-5 symbol at error correction M.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Annotated, Final

import msgspec

from parking.errors import InvalidInput, NotFound, ParkingError

#: Printed codes are ``<PARKING_PUBLIC_BASE_URL>/q/<token>``: a phone's camera opens
#: the platform's own page for the code there (``GET /q/<token>``); a driver app
#: that scans one sends the whole URL (or the bare token) to the API.
PATH: Final = "/q/"
#: Longest token accepted before any decoding (a version-1 code is < 200).
MAX_TOKEN_LENGTH: Final = 512
MAC_BYTES: Final = 16
VERSION: Final = 1
MAC_CONTEXT: Final = b"changbo-qr/v1\x00"

PlaceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
KeyId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]{1,16}$")]


class QrKind(IntEnum):
    LOT = 1
    LANE = 2
    SPACE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class QrTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What a code points at: a lot, one of its lanes, or one of its spaces."""

    kind: QrKind
    lot_id: str
    lane_id: str | None = None
    space_id: str | None = None

    @property
    def place(self) -> str | None:
        return self.lane_id if self.kind is QrKind.LANE else self.space_id


class QrToken(msgspec.Struct, frozen=True, kw_only=True):
    """A verified code."""

    target: QrTarget
    key_id: str
    issued_at: datetime
    expires_at: datetime | None


class Keyring(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """HMAC keys by id; ``signing`` signs new codes, every key verifies.

    Rotation adds a key and makes it the signing key; codes printed under
    older keys keep working until their key is retired.
    """

    signing: KeyId
    keys: dict[KeyId, Annotated[bytes, msgspec.Meta(min_length=32)]]

    def __post_init__(self) -> None:
        if self.signing not in self.keys:
            raise ValueError(f"signing key {self.signing!r} is not among the keys")


# --------------------------------------------------------------------- errors


class QrError(InvalidInput):
    """A scanned code that is not a valid Changbo code (400)."""


class MalformedQr(QrError):
    """Not a Changbo code at all, or not decodable."""


class UnknownQrKey(QrError):
    """Signed with a key this platform does not have (never had, or retired)."""


class ForgedQr(QrError):
    """The signature does not match: forged or altered."""


class ExpiredQr(QrError):
    """A genuine code past its expiry."""


class QrTargetNotFound(NotFound, ParkingError):
    """A genuine code whose lot, lane or space no longer exists."""
