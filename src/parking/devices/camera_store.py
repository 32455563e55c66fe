"""Cameras in PostgreSQL (SQL only): their logins, the seqs the adapter gives their events,
the vendor records already turned into events, and each lot's allowed source networks.

Every function runs in the caller's transaction unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network

import asyncpg

from parking.devices.model import (
    CameraLogin,
    DeviceKind,
    FleetCamera,
    FleetDevice,
    GrantedSeq,
    UnconfirmedPush,
    Vendor,
)


async def camera_login(conn: asyncpg.Connection, device_id: str) -> CameraLogin | None:
    """What a camera's push is checked against (None: no such device, or not a camera)."""
    row = await conn.fetchrow(
        """SELECT device_id, lot_id, lane_id, vendor, serial, control_url, password_hash,
                  revoked_at
           FROM devices WHERE device_id = $1 AND vendor IS NOT NULL""",
        device_id,
    )
    if row is None:
        return None
    return CameraLogin(
        device_id=row["device_id"],
        lot_id=row["lot_id"],
        lane_id=row["lane_id"],
        vendor=Vendor(row["vendor"]),
        serial=row["serial"],
        control_url=row["control_url"],
        password_hash=row["password_hash"],
        revoked=row["revoked_at"] is not None,
    )


async def grant_seq(
    conn: asyncpg.Connection,
    *,
    device_id: str,
    push_key: str,
    received_at: datetime,
    passage_for: Callable[[int], bytes],
    vendor_record: bytes,
    images: Sequence[str],
) -> GrantedSeq:
    """The seq of the vendor record ``push_key`` of the camera: the one it got before, or
    the next one (``passage_for(seq)`` builds the passage stored with it). Runs its own
    transaction: the camera's row in ``camera_seqs`` is locked first, so concurrent pushes
    of one camera take seqs one after the other and a retry racing its original can
    never burn a seq (a gap the core would report and nothing would fill)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO camera_seqs (device_id) VALUES ($1) ON CONFLICT DO NOTHING", device_id
        )
        last = await conn.fetchval(
            "SELECT last_seq FROM camera_seqs WHERE device_id = $1 FOR UPDATE", device_id
        )
        known = await conn.fetchrow(
            "SELECT seq, passage FROM camera_pushes WHERE device_id = $1 AND push_key = $2",
            device_id,
            push_key,
        )
        if known is not None:
            return GrantedSeq(seq=known["seq"], passage=bytes(known["passage"]), fresh=False)
        seq = int(last) + 1
        passage = passage_for(seq)
        await conn.execute(
            "UPDATE camera_seqs SET last_seq = $2 WHERE device_id = $1", device_id, seq
        )
        await conn.execute(
            """INSERT INTO camera_pushes (device_id, push_key, seq, received_at, passage,
                                          vendor_record, images)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            device_id,
            push_key,
            seq,
            received_at,
            passage,
            vendor_record,
            list(images),
        )
    return GrantedSeq(seq=seq, passage=passage, fresh=True)


async def unconfirmed(
    conn: asyncpg.Connection, *, received_before: datetime, received_after: datetime, limit: int
) -> list[UnconfirmedPush]:
    """Pushes that became events which the system of record does not hold yet: above their
    device's watermark (``device_watermarks``, the persister's; read-only here)."""
    rows = await conn.fetch(
        """SELECT p.device_id, d.lot_id, d.lane_id, p.seq, p.received_at, p.passage
           FROM camera_pushes p
           JOIN devices d USING (device_id)
           LEFT JOIN device_watermarks w USING (device_id)
           WHERE p.received_at < $1 AND p.received_at > $2
             AND p.seq > coalesce(w.seq, 0)
             AND d.revoked_at IS NULL
           ORDER BY p.received_at
           LIMIT $3""",
        received_before,
        received_after,
        limit,
    )
    return [
        UnconfirmedPush(
            device_id=row["device_id"],
            lot_id=row["lot_id"],
            lane_id=row["lane_id"],
            seq=row["seq"],
            received_at=row["received_at"],
            passage=bytes(row["passage"]),
        )
        for row in rows
    ]


async def forget_pushes(conn: asyncpg.Connection, *, received_before: datetime) -> int:
    """Drop the records of pushes received before this (their retries are long over)."""
    status = await conn.execute("DELETE FROM camera_pushes WHERE received_at < $1", received_before)
    return int(status.split()[-1])


async def push_of(conn: asyncpg.Connection, device_id: str, seq: int) -> asyncpg.Record | None:
    """The record a camera's event came from: key, received_at, vendor record, images."""
    return await conn.fetchrow(
        """SELECT push_key, received_at, vendor_record, images
           FROM camera_pushes WHERE device_id = $1 AND seq = $2""",
        device_id,
        seq,
    )


async def allowed_sources(conn: asyncpg.Connection, lot_id: str) -> list[IPv4Network | IPv6Network]:
    rows = await conn.fetch(
        "SELECT network FROM lot_camera_sources WHERE lot_id = $1 ORDER BY network", lot_id
    )
    return [row["network"] for row in rows]


async def replace_sources(
    conn: asyncpg.Connection, lot_id: str, networks: Sequence[IPv4Network | IPv6Network]
) -> None:
    await conn.execute("DELETE FROM lot_camera_sources WHERE lot_id = $1", lot_id)
    await conn.executemany(
        "INSERT INTO lot_camera_sources (lot_id, network) VALUES ($1, $2)",
        [(lot_id, network) for network in networks],
    )


async def live_cameras(
    conn: asyncpg.Connection, directions: dict[tuple[str, str], str], lot_ids: Sequence[str]
) -> list[FleetCamera]:
    """Every live camera of these lots, by lot and device id."""
    rows = await conn.fetch(
        """SELECT device_id, kind, lot_id, lane_id, vendor, serial, control_url FROM devices
           WHERE revoked_at IS NULL AND vendor IS NOT NULL AND lot_id = ANY($1::text[])
           ORDER BY lot_id, device_id""",
        list(lot_ids),
    )
    return [
        FleetCamera(
            device=FleetDevice(
                device_id=row["device_id"],
                kind=DeviceKind(row["kind"]),
                lot_id=row["lot_id"],
                lane_id=row["lane_id"],
                space_id=None,
                direction=directions.get((row["lot_id"], row["lane_id"])),
            ),
            vendor=Vendor(row["vendor"]),
            serial=row["serial"],
            control_url=row["control_url"],
        )
        for row in rows
    ]


async def camera_lots(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT lot_id FROM devices WHERE revoked_at IS NULL AND vendor IS NOT NULL "
        "ORDER BY lot_id"
    )
    return [row["lot_id"] for row in rows]


async def live_gate_at(
    conn: asyncpg.Connection, lot_id: str, lane_id: str
) -> asyncpg.Record | None:
    """The live gate of a lane: its id, vendor and serial (None: the lane has none)."""
    return await conn.fetchrow(
        """SELECT device_id, vendor, serial FROM devices
           WHERE lot_id = $1 AND lane_id = $2 AND kind = 'gate' AND revoked_at IS NULL""",
        lot_id,
        lane_id,
    )
