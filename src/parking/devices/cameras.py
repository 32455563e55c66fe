"""Use cases of cameras that push in their maker's protocol (issue 18; ``gateways/cameras``).

A camera is a gate of the registry with its vendor and serial (``add_device`` with a
``CameraSpec``). It proves who it is with the secret in the URL it pushes to (or in
an ``Authorization: Basic`` header where it can send one), from an address its lot
allows; it has no seq of its own, so each vendor record it pushes gets the camera's
next seq here, once: a retry of the record gets the same seq again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

import asyncpg

from parking.devices import broker as broker_files
from parking.devices import camera_store
from parking.devices.model import (
    CameraLogin,
    DeviceError,
    FleetCamera,
    GrantedSeq,
    UnconfirmedPush,
    Vendor,
)
from parking.devices.service import CONTROL_SECRETS_FILE, read_secrets
from parking.errors import ParkingError
from parking.lots import service as lots

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Reasons a push is refused before it is read (each a dead letter's reason code).
UNKNOWN: Final = "unknown_camera"
REVOKED: Final = "revoked_camera"
WRONG_SECRET: Final = "wrong_secret"  # noqa: S105 (a reason code, not a secret)
WRONG_VENDOR: Final = "wrong_vendor"
SOURCE_NOT_ALLOWED: Final = "source_not_allowed"


class CameraRefused(ParkingError):
    """A push that does not come from a live camera of this vendor, with its secret, from
    an address its lot allows. ``reason`` is one of the codes above; the camera is told
    the same thing whatever it is (nothing to probe for)."""

    def __init__(self, reason: str, device_id: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.device_id = device_id


def control_secrets_path(stack_dir: Path) -> Path:
    return stack_dir / CONTROL_SECRETS_FILE


def control_credentials(path: Path) -> dict[str, tuple[str, str]]:
    """device id -> (ISAPI user, password) the platform calls a Hikvision camera with."""
    found: dict[str, tuple[str, str]] = {}
    for device_id, value in read_secrets(path).items():
        user, sep, password = value.partition(":")
        if sep and user and password:
            found[device_id] = (user, password)
    return found


async def login(
    conn: asyncpg.Connection,
    *,
    vendor: Vendor,
    device_id: str,
    secret: str,
    source: str | None,
) -> CameraLogin:
    """The camera a push comes from; raises CameraRefused otherwise.

    ``source`` is the client address (None when unknown: a lot with an allow-list then
    refuses the push)."""
    camera = await camera_store.camera_login(conn, device_id)
    if camera is None:
        raise CameraRefused(UNKNOWN, None)
    if camera.vendor is not vendor:
        raise CameraRefused(WRONG_VENDOR, device_id)
    if not broker_files.verify_password(secret, camera.password_hash):
        raise CameraRefused(WRONG_SECRET, None)
    if camera.revoked:
        raise CameraRefused(REVOKED, device_id)
    allowed = await camera_store.allowed_sources(conn, camera.lot_id)
    if allowed and not _allowed(source, allowed):
        raise CameraRefused(SOURCE_NOT_ALLOWED, device_id)
    return camera


def _allowed(source: str | None, networks: Sequence[Network]) -> bool:
    if source is None:
        return False
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


async def grant_seq(
    conn: asyncpg.Connection,
    *,
    camera: CameraLogin,
    push_key: str,
    received_at: datetime,
    passage_for: Callable[[int], bytes],
    vendor_record: bytes,
    images: Sequence[str],
) -> GrantedSeq:
    """The seq of a camera's vendor record: the next one the first time, the same one for
    every retry (``push_key`` is what the vendor repeats). Idempotent; runs its own
    transaction, which commits before the event is applied anywhere."""
    return await camera_store.grant_seq(
        conn,
        device_id=camera.device_id,
        push_key=push_key,
        received_at=received_at,
        passage_for=passage_for,
        vendor_record=vendor_record,
        images=images,
    )


async def unconfirmed(
    conn: asyncpg.Connection, *, received_before: datetime, received_after: datetime, limit: int
) -> list[UnconfirmedPush]:
    """Camera events given a seq that the system of record does not hold yet (an adapter
    died between the seq and the core): the caller applies them again."""
    return await camera_store.unconfirmed(
        conn, received_before=received_before, received_after=received_after, limit=limit
    )


async def forget_pushes(conn: asyncpg.Connection, *, received_before: datetime) -> int:
    return await camera_store.forget_pushes(conn, received_before=received_before)


def parse_networks(texts: Sequence[str]) -> list[Network]:
    networks: list[Network] = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as error:
            raise DeviceError(f"{text!r} is not a network (e.g. 10.20.0.0/24)") from error
    return networks


async def set_sources(conn: asyncpg.Connection, lot_id: str, networks: Sequence[Network]) -> None:
    """The networks a lot's cameras may push from (none: any address). Runs its own
    transaction."""
    if not await lots.lot_exists(conn, lot_id):
        raise DeviceError(f"lot {lot_id!r} does not exist")
    async with conn.transaction():
        await camera_store.replace_sources(conn, lot_id, networks)


async def sources(conn: asyncpg.Connection, lot_id: str) -> list[Network]:
    return await camera_store.allowed_sources(conn, lot_id)


async def fleet(
    conn: asyncpg.Connection, lot_ids: Sequence[str] | None = None
) -> list[FleetCamera]:
    """Every live camera (of these lots), with its lane's direction: what a simulator drives."""
    directions = {
        (lane.lot_id, lane.lane_id): lane.direction for lane in await lots.every_lane(conn)
    }
    wanted = list(lot_ids) if lot_ids is not None else await camera_store.camera_lots(conn)
    return await camera_store.live_cameras(conn, directions, wanted)


async def live_gate(conn: asyncpg.Connection, lot_id: str, lane_id: str) -> asyncpg.Record | None:
    """The live gate of a lane (``device_id``, ``vendor``, ``serial``), or None."""
    return await camera_store.live_gate_at(conn, lot_id, lane_id)
