"""The device registry in PostgreSQL (SQL only). Every function runs in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from parking.devices.model import (
    Credential,
    Device,
    DeviceClock,
    DeviceKind,
    FleetDevice,
    Vendor,
)

_DEVICE_COLUMNS = (
    "device_id, kind, lot_id, lane_id, space_id, created_at, revoked_at, vendor, serial"
)


def _device(row: asyncpg.Record) -> Device:
    return Device(
        device_id=row["device_id"],
        kind=DeviceKind(row["kind"]),
        lot_id=row["lot_id"],
        lane_id=row["lane_id"],
        space_id=row["space_id"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        vendor=Vendor(row["vendor"]) if row["vendor"] is not None else None,
        serial=row["serial"],
    )


def _with_clock(row: asyncpg.Record) -> Device:
    clock = None
    if row["clock_checked_at"] is not None:
        clock = DeviceClock(
            offset_ms=row["clock_offset_ms"],
            skewed=row["clock_skewed"],
            checked_at=row["clock_checked_at"],
            open_anomaly=row["clock_anomaly"],
        )
    return msgspec.structs.replace(_device(row), clock=clock)


async def taken_ids(conn: asyncpg.Connection, candidates: Sequence[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT device_id FROM devices WHERE device_id = ANY($1::text[])", list(candidates)
    )
    return {row["device_id"] for row in rows}


async def all_ids(conn: asyncpg.Connection) -> set[str]:
    return {row["device_id"] for row in await conn.fetch("SELECT device_id FROM devices")}


async def insert(
    conn: asyncpg.Connection,
    *,
    device_id: str,
    kind: DeviceKind,
    lot_id: str,
    lane_id: str | None,
    space_id: str | None,
    password_hash: str,
    vendor: Vendor | None = None,
    serial: str | None = None,
    control_url: str | None = None,
) -> Device:
    """Raises asyncpg.UniqueViolationError (naming the index) when id, placement or a
    camera's serial is taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO devices (device_id, kind, lot_id, lane_id, space_id, password_hash,
                                 vendor, serial, control_url)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {_DEVICE_COLUMNS}""",  # noqa: S608 (a constant column list)
        device_id,
        kind.value,
        lot_id,
        lane_id,
        space_id,
        password_hash,
        vendor.value if vendor is not None else None,
        serial,
        control_url,
    )
    assert row is not None
    return _device(row)


async def insert_many(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[str, DeviceKind, str, str | None, str | None, str]],
) -> list[str]:
    """Insert (device_id, kind, lot_id, lane_id, space_id, password_hash) rows in one statement.

    A row whose id or placement became taken meanwhile is skipped (ON CONFLICT
    covers the partial unique indexes too); returns the ids actually inserted.
    """
    if not rows:
        return []
    result = await conn.fetch(
        """INSERT INTO devices (device_id, kind, lot_id, lane_id, space_id, password_hash)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[])
           ON CONFLICT DO NOTHING
           RETURNING device_id""",
        [r[0] for r in rows],
        [r[1].value for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
    )
    return [row["device_id"] for row in result]


async def get(conn: asyncpg.Connection, device_id: str) -> Device | None:
    row = await conn.fetchrow(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = $1",  # noqa: S608
        device_id,
    )
    return None if row is None else _device(row)


async def revoke(conn: asyncpg.Connection, device_id: str, at: datetime) -> Device | None:
    """Set revoked_at unless already set; None when the device does not exist."""
    row = await conn.fetchrow(
        f"""UPDATE devices SET revoked_at = coalesce(revoked_at, $2)
            WHERE device_id = $1
            RETURNING {_DEVICE_COLUMNS}""",  # noqa: S608
        device_id,
        at,
    )
    return None if row is None else _device(row)


async def list_devices(
    conn: asyncpg.Connection, *, lot_id: str | None, live_only: bool, lot_ids: list[str] | None
) -> list[Device]:
    """Devices of ``lot_id`` (every lot if None), among ``lot_ids`` unless None."""
    # device_clocks and anomalies belong to the occupancy core; read-only here.
    rows = await conn.fetch(
        f"""SELECT {_DEVICE_COLUMNS},
                   c.offset_ms AS clock_offset_ms, c.skewed AS clock_skewed,
                   c.checked_at AS clock_checked_at,
                   (SELECT a.id FROM anomalies a
                     WHERE a.device_id = d.device_id AND a.kind = 'device_clock_skew'
                       AND a.status = 'open' LIMIT 1) AS clock_anomaly
            FROM devices d LEFT JOIN device_clocks c USING (device_id)
            WHERE ($1::text IS NULL OR lot_id = $1)
              AND (NOT $2 OR revoked_at IS NULL)
              AND ($3::text[] IS NULL OR lot_id = ANY($3::text[]))
            ORDER BY lot_id, device_id""",  # noqa: S608
        lot_id,
        live_only,
        lot_ids,
    )
    return [_with_clock(row) for row in rows]


async def live_credentials(conn: asyncpg.Connection) -> list[Credential]:
    """Live devices that speak MQTT. A camera (vendor set) has no broker account: its
    secret travels in the URL it pushes to, so it must open nothing else."""
    rows = await conn.fetch(
        """SELECT device_id, kind, lot_id, lane_id, space_id, password_hash
           FROM devices WHERE revoked_at IS NULL AND vendor IS NULL ORDER BY device_id"""
    )
    return [
        Credential(
            device_id=row["device_id"],
            kind=DeviceKind(row["kind"]),
            lot_id=row["lot_id"],
            lane_id=row["lane_id"],
            space_id=row["space_id"],
            password_hash=row["password_hash"],
        )
        for row in rows
    ]


async def live_ids(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT device_id FROM devices WHERE revoked_at IS NULL")
    return [row["device_id"] for row in rows]


async def placements(conn: asyncpg.Connection, kind: str) -> set[tuple[str, str]]:
    """(lot_id, lane or space id) of every place that ever had a device of ``kind``
    (a revoked one counts)."""
    column = "lane_id" if kind == "gate" else "space_id"
    rows = await conn.fetch(
        f"SELECT DISTINCT lot_id, {column} AS place FROM devices "  # noqa: S608
        f"WHERE kind = $1 AND {column} IS NOT NULL",
        kind,
    )
    return {(row["lot_id"], row["place"]) for row in rows}


async def live_devices_by_lot(
    conn: asyncpg.Connection, directions: dict[tuple[str, str], str]
) -> dict[str, list[FleetDevice]]:
    """lot id -> its live MQTT devices, by lot and device id (``directions``: (lot, lane) ->
    the lane's direction, from ``parking.lots``). Cameras that push in their maker's
    protocol are left out: an MQTT simulator cannot drive them."""
    rows = await conn.fetch(
        """SELECT device_id, kind, lot_id, lane_id, space_id FROM devices
           WHERE revoked_at IS NULL AND vendor IS NULL ORDER BY lot_id, device_id"""
    )
    by_lot: dict[str, list[FleetDevice]] = {}
    for row in rows:
        by_lot.setdefault(row["lot_id"], []).append(
            FleetDevice(
                device_id=row["device_id"],
                kind=DeviceKind(row["kind"]),
                lot_id=row["lot_id"],
                lane_id=row["lane_id"],
                space_id=row["space_id"],
                direction=directions.get((row["lot_id"], row["lane_id"]))
                if row["lane_id"] is not None
                else None,
            )
        )
    return by_lot


async def gate_login(conn: asyncpg.Connection, device_id: str) -> asyncpg.Record | None:
    """What a device's HTTP login is checked against: lot_id, lane_id, kind, password_hash,
    revoked_at. A camera is not found here: its events get their seq from the camera
    adapter, never from a contract payload."""
    return await conn.fetchrow(
        "SELECT lot_id, lane_id, kind, password_hash, revoked_at FROM devices "
        "WHERE device_id = $1 AND vendor IS NULL",
        device_id,
    )
