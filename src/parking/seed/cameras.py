"""Two lots of the seeded city run on real cameras' protocols (issue 18): under
``make run`` the camera simulators drive them through the camera adapter.

- ``GZ-ZG-0001`` (章贡区广场停车场1号): Vzenith/臻识 units at ``in1`` and ``out1``;
- ``GZ-ZG-0007`` (章贡区广场停车场7号): Hikvision units, their ISAPI simulated on the
  camera adapter's port + 1 (``parking cameras simulate``).

Idempotent: a lane whose live gate is already its camera is left alone; an MQTT gate
there (a stack seeded before cameras existed) is revoked and replaced. The push
secrets join the simulators' secrets file, the Hikvision ISAPI credentials the
camera control file (both 0600 under the stack dir).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

import asyncpg

from parking.devices import cameras
from parking.devices import service as devices
from parking.devices.model import Vendor
from parking.lots import service as lots

#: lot -> vendor of its cameras
CAMERA_LOTS: Final = {"GZ-ZG-0001": Vendor.VZENITH, "GZ-ZG-0007": Vendor.HIKVISION}


def serial_for(vendor: Vendor, lot_id: str, lane_id: str) -> str:
    """A serial shaped like the vendor's (Vzenith ``fe71e106-57263272``, Hikvision's
    ``<date>AAJ<digits>`` serial), fixed by lot and lane."""
    digest = hashlib.sha256(f"{lot_id}/{lane_id}".encode()).hexdigest()
    if vendor is Vendor.VZENITH:
        return f"{digest[:8]}-{digest[8:16]}"
    return f"20250301AAJ{int(digest[:12], 16) % 10**8:08d}"


async def provision(
    conn: asyncpg.Connection,
    *,
    stack_dir: Path,
    push_base_url: str,
    isapi_base_url: str,
    broker: devices.Broker | None,
    now: datetime,
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Give the camera lots' lanes their cameras; returns the devices added."""
    added: list[str] = []
    secrets_file = devices.secrets_path(stack_dir)
    for lot_id, vendor in CAMERA_LOTS.items():
        if not await lots.lot_exists(conn, lot_id):
            continue
        for lane in await lots.list_lanes(conn, lot_id):
            serial = serial_for(vendor, lot_id, lane.lane_id)
            live = await cameras.live_gate(conn, lot_id, lane.lane_id)
            if live is not None and live["vendor"] == vendor.value:
                continue
            if live is not None:
                await devices.revoke_device(conn, live["device_id"], at=now, broker=broker)
            made = await devices.add_device(
                conn,
                lot_id=lot_id,
                lane_id=lane.lane_id,
                broker=None,
                camera=devices.CameraSpec(
                    vendor=vendor,
                    serial=serial,
                    push_base_url=push_base_url,
                    control_secrets=stack_dir / devices.CONTROL_SECRETS_FILE,
                    control_url=(
                        f"{isapi_base_url.rstrip('/')}/cam/{lot_id.lower()}-{lane.lane_id}"
                        if vendor is Vendor.HIKVISION
                        else None
                    ),
                ),
            )
            known = devices.read_secrets(secrets_file)
            devices.write_secrets(secrets_file, {**known, made.device_id: made.password})
            added.append(made.device_id)
    if added:
        progress(f"cameras: {len(added)} added ({', '.join(added)})")
    return added
