"""Signing and verifying QR tokens (pure: keys and time are passed in)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Annotated, Final

import msgspec

from parking.qr.model import (
    MAC_BYTES,
    MAC_CONTEXT,
    MAX_TOKEN_LENGTH,
    PATH,
    VERSION,
    ExpiredQr,
    ForgedQr,
    KeyId,
    Keyring,
    MalformedQr,
    PlaceId,
    QrKind,
    QrTarget,
    QrToken,
    UnknownQrKey,
)

_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]+")
_Seconds = Annotated[int, msgspec.Meta(ge=0, le=2**32)]


class _Body(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    key_id: KeyId
    kind: QrKind
    lot_id: PlaceId
    place: PlaceId | None
    issued_at: _Seconds
    expires_at: _Seconds | None


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(_Body)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, MAC_CONTEXT + body, hashlib.sha256).digest()[:MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def target(kind: QrKind, lot_id: str, place: str | None = None) -> QrTarget:
    """A target, checked for shape (lot ids and places as the database allows them)."""
    if (kind is QrKind.LOT) != (place is None):
        raise MalformedQr("a lot code has no lane or space; lane and space codes need one")
    for value in (lot_id, place):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise MalformedQr(f"{value!r} is not a lot, lane or space id")
    return QrTarget(
        kind=kind,
        lot_id=lot_id,
        lane_id=place if kind is QrKind.LANE else None,
        space_id=place if kind is QrKind.SPACE else None,
    )


def sign(
    place: QrTarget, *, keyring: Keyring, now: datetime, expires_at: datetime | None = None
) -> str:
    """The token for a place, signed with the keyring's signing key."""
    if expires_at is not None and expires_at <= now:
        raise ValueError("a code must expire after it is issued")
    body = _encoder.encode(
        _Body(
            version=VERSION,
            key_id=keyring.signing,
            kind=place.kind,
            lot_id=place.lot_id,
            place=place.place,
            issued_at=int(now.timestamp()),
            expires_at=None if expires_at is None else int(expires_at.timestamp()),
        )
    )
    return _b64(body + _mac(keyring.keys[keyring.signing], body))


def prefix_of(public_base_url: str) -> str:
    """What a printed code starts with: ``<public base URL>/q/``."""
    return public_base_url.rstrip("/") + PATH


def url_for(token: str, *, prefix: str) -> str:
    return prefix + token


def token_of(scanned: str, *, prefix: str | None = None) -> str:
    """The token in what a scanner read: a URL printed under ``prefix``, or the bare
    token (``prefix`` None: only a bare token)."""
    text = scanned.strip()
    if prefix is not None and text.startswith(prefix):
        text = text[len(prefix) :]
    elif "://" in text or "/" in text:
        raise MalformedQr("not a Changbo parking code")
    return text


def verify(scanned: str, *, keyring: Keyring, now: datetime, prefix: str | None = None) -> QrToken:
    """Decode and check a scanned code (a URL under ``prefix``, or the bare token):
    shape, key, signature, expiry, in that order.

    Raises MalformedQr, UnknownQrKey, ForgedQr or ExpiredQr (all 400s).
    """
    if len(scanned) > MAX_TOKEN_LENGTH + len(prefix or ""):
        raise MalformedQr("code too long")
    token = token_of(scanned, prefix=prefix)
    if not token or len(token) > MAX_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
        raise MalformedQr("not a Changbo parking code")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedQr("not a Changbo parking code") from exc
    # Only the canonical encoding is accepted, so one code has one spelling.
    if _b64(raw) != token or len(raw) <= MAC_BYTES:
        raise MalformedQr("not a Changbo parking code")
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    try:
        decoded = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec reports a string that is not UTF-8 as UnicodeDecodeError.
        # Decoding before the MAC check is safe: the decoder is typed and the
        # input is at most a few hundred bytes.
        raise MalformedQr("not a Changbo parking code") from exc
    if decoded.version != VERSION:
        raise MalformedQr(f"code version {decoded.version} is not supported")
    key = keyring.keys.get(decoded.key_id)
    if key is None:
        raise UnknownQrKey("this code was signed with a key the platform does not know")
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise ForgedQr("this code's signature does not match: it is forged or altered")
    if (decoded.kind is QrKind.LOT) != (decoded.place is None):
        # Signed by us, so this would be a bug in sign(); refuse rather than guess.
        raise MalformedQr("code names no place for its kind")
    issued_at = datetime.fromtimestamp(decoded.issued_at, tz=UTC)
    expires_at = (
        None if decoded.expires_at is None else datetime.fromtimestamp(decoded.expires_at, tz=UTC)
    )
    if expires_at is not None and now >= expires_at:
        raise ExpiredQr(f"this code expired at {expires_at.isoformat()}")
    return QrToken(
        target=target(decoded.kind, decoded.lot_id, decoded.place),
        key_id=decoded.key_id,
        issued_at=issued_at,
        expires_at=expires_at,
    )
