"""Use cases of QR codes: issue one for a place that exists, resolve a scanned one."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from parking.errors import InvalidInput
from parking.lots import service as lots
from parking.qr import logic, signs
from parking.qr.model import Keyring, QrKind, QrTarget, QrTargetNotFound


class Place(msgspec.Struct, frozen=True, kw_only=True):
    """What a code points at, as the database has it now."""

    kind: str  # lot, lane or space
    lot_id: str
    lot_name: str
    lot_kind: str  # gated or on_street
    #: when the lot is full: hold the barrier, or open it anyway
    full_policy: str = "hold"
    lane_id: str | None = None
    direction: str | None = None  # lanes: in (entry) or out (exit)
    space_id: str | None = None
    space_kind: str | None = None


class Resolved(msgspec.Struct, frozen=True, kw_only=True):
    place: Place
    key_id: str
    issued_at: datetime
    expires_at: datetime | None


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    place: Place
    token: str
    url: str


async def place_of(conn: asyncpg.Connection, target: QrTarget) -> Place:
    """The place as it is now; QrTargetNotFound if the lot, lane or space is gone."""
    lot = await lots.find_lot(conn, target.lot_id)
    if lot is None:
        raise QrTargetNotFound(f"no lot {target.lot_id}")
    place = Place(
        kind=target.kind.label,
        lot_id=lot.id,
        lot_name=lot.name,
        lot_kind=lot.kind,
        full_policy=lot.full_policy,
    )
    if target.kind is QrKind.LANE:
        assert target.lane_id is not None
        lane = await lots.find_lane(conn, target.lot_id, target.lane_id)
        if lane is None:
            raise QrTargetNotFound(f"lot {target.lot_id} has no lane {target.lane_id}")
        return msgspec.structs.replace(place, lane_id=lane.lane_id, direction=lane.direction)
    if target.kind is QrKind.SPACE:
        assert target.space_id is not None
        space = await lots.find_space(conn, target.lot_id, target.space_id)
        if space is None:
            raise QrTargetNotFound(f"lot {target.lot_id} has no space {target.space_id}")
        return msgspec.structs.replace(place, space_id=space.space_id, space_kind=space.kind)
    return place


def target_for(lot_id: str, *, lane_id: str | None = None, space_id: str | None = None) -> QrTarget:
    if lane_id is not None and space_id is not None:
        raise InvalidInput("a code points at a lane or a space, not both")
    if lane_id is not None:
        return logic.target(QrKind.LANE, lot_id, lane_id)
    if space_id is not None:
        return logic.target(QrKind.SPACE, lot_id, space_id)
    return logic.target(QrKind.LOT, lot_id)


async def issue(
    conn: asyncpg.Connection,
    *,
    keyring: Keyring,
    target: QrTarget,
    now: datetime,
    prefix: str,
    expires_at: datetime | None = None,
) -> Issued:
    """Sign a code for a place that exists (QrTargetNotFound otherwise); its URL is
    ``prefix`` (``logic.prefix_of(PARKING_PUBLIC_BASE_URL)``) and the token."""
    place = await place_of(conn, target)
    token = logic.sign(target, keyring=keyring, now=now, expires_at=expires_at)
    return Issued(place=place, token=token, url=logic.url_for(token, prefix=prefix))


async def resolve(
    conn: asyncpg.Connection,
    *,
    keyring: Keyring,
    scanned: str,
    now: datetime,
    prefix: str | None = None,
) -> Resolved:
    """What a scanned code points at. A forged, altered, unknown-key, expired or
    malformed code is a QrError (400); a genuine code for a place that is gone, a 404."""
    token = logic.verify(scanned, keyring=keyring, now=now, prefix=prefix)
    return Resolved(
        place=await place_of(conn, token.target),
        key_id=token.key_id,
        issued_at=token.issued_at,
        expires_at=token.expires_at,
    )


def sign_of(issued: Issued) -> signs.Sign:
    """What is printed for an issued code: the lot's name and the place under it."""
    place = issued.place
    return signs.Sign(
        url=issued.url,
        title=place.lot_name,
        place=signs.caption(
            place.lot_name,
            place.kind,
            lane_id=place.lane_id,
            direction=place.direction,
            space_id=place.space_id,
        ),
    )


async def issue_spaces(
    conn: asyncpg.Connection,
    *,
    keyring: Keyring,
    lot_id: str,
    now: datetime,
    prefix: str,
    expires_at: datetime | None = None,
) -> list[Issued]:
    """A code for every space of a lot, in space order (a sheet to print)."""
    if await lots.find_lot(conn, lot_id) is None:
        raise QrTargetNotFound(f"no lot {lot_id}")
    out: list[Issued] = []
    after: str | None = None
    while True:
        page = await lots.list_spaces(conn, lot_id, after=after, limit=500)
        out.extend(
            [
                await issue(
                    conn,
                    keyring=keyring,
                    target=logic.target(QrKind.SPACE, lot_id, space.space_id),
                    now=now,
                    prefix=prefix,
                    expires_at=expires_at,
                )
                for space in page
            ]
        )
        if len(page) < 500:
            return out
        after = page[-1].space_id
