"""Use cases of the device registry, and keeping the broker's credentials in step with it.

The broker never asks the database: its password and ACL files are rendered
from the registry's live devices (plus the platform's own user) and reloaded
with SIGHUP, so adding or revoking a device takes effect without a restart.
Files are rendered only from committed rows, so the functions that change the
registry run their own transaction and must not be called inside one.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

import asyncpg

from parking.devices import broker as broker_files
from parking.devices import mqtt, store
from parking.devices.messages import Topics
from parking.devices.model import (
    BrokerReloadTimeout,
    BrokerSync,
    Device,
    DeviceIdTaken,
    DeviceKind,
    DeviceNotFound,
    FleetLot,
    PlacementNotFound,
    PlacementTaken,
    Provisioned,
    ProvisionReport,
    SerialTaken,
    Vendor,
    check_camera,
    check_id,
    device_patterns,
    grants,
    id_base,
    id_candidates,
    resolve_kind,
)
from parking.lots import service as lots

SECRETS_FILE: Final = "device-secrets.json"
#: The ISAPI credentials the platform signs its calls to Hikvision cameras with
#: (device id -> "user:password"); Digest needs the password itself, so it is kept
#: like the simulators' secrets: one 0600 file under the stack dir, never in the database.
CONTROL_SECRETS_FILE: Final = "camera-control.json"
#: The ISAPI user the platform asks an installer to create on a Hikvision camera.
CONTROL_USER: Final = "changbo"

#: 24 random bytes: not a human password, so PBKDF2 with Mosquitto's 101
#: iterations is enough (see broker.py) and brute force is out of reach.
_SECRET_BYTES: Final = 24

# Two processes rewriting the broker files at once would race on the temporary
# files; the lock also makes the last writer the one that read the newest rows.
_BROKER_SYNC_LOCK: Final = 0x6465_7669  # "devi"

#: A broker user with no grants whose secret changes with every sync: when the
#: broker accepts the new secret, it runs on the files just written. Not a
#: valid device id ('.'), so it never collides with a device.
CANARY_USER: Final = "registry.canary"
#: Reloading ~9k devices takes ~0.5 s and grows quadratically (Mosquitto's ACL
#: loader); two minutes covers ~100k.
RELOAD_TIMEOUT_S: Final = 120.0
# Mosquitto clears its reload flag after reloading, so a SIGHUP that arrives
# during a reload (or two syncs in quick succession) is lost: a sync whose
# canary is refused signals again, backing off so that a broker that cannot
# read the files is not kept reloading.
_RESIGNAL_FIRST_S: Final = 0.1
_RESIGNAL_MAX_S: Final = 5.0


class BrokerFiles(Protocol):
    """Where a Mosquitto-compatible broker reads its credentials (``stack.servers.Mosquitto``)."""

    @property
    def password_file(self) -> Path: ...

    @property
    def acl_file(self) -> Path: ...

    def running(self) -> bool: ...

    def reload(self) -> None:
        """Make the running broker re-read both files (SIGHUP); no-op when it is not running."""


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """A gate that is a camera pushing in its maker's protocol (``add_device``)."""

    vendor: Vendor
    serial: str
    #: the camera adapter's address as cameras reach it (PARKING_CAMERA_PUBLIC_URL)
    push_base_url: str
    #: where a Hikvision camera's credentials for the platform's ISAPI calls are kept
    control_secrets: Path
    #: a Hikvision camera's ISAPI base URL
    control_url: str | None = None
    control_user: str = CONTROL_USER


@dataclass(frozen=True, slots=True)
class Broker:
    files: BrokerFiles
    topics: Topics
    platform_username: str
    platform_password: str
    #: where the broker listens; with it, a sync waits until the broker has
    #: loaded the new files (see ``sync_broker``)
    host: str | None = None
    port: int = 0
    reload_timeout: float = RELOAD_TIMEOUT_S


def secrets_path(stack_dir: Path) -> Path:
    return stack_dir / SECRETS_FILE


def push_url(base_url: str, vendor: Vendor, device_id: str, secret: str) -> str:
    """Where a camera pushes: the camera adapter's address, its maker, the device and the
    device's secret (the identity both makers' HTTP push can carry: a URL is all either
    lets an installer configure)."""
    return f"{base_url.rstrip('/')}/cameras/{vendor.value}/{device_id}/{secret}"


def _new_secret() -> str:
    return secrets.token_urlsafe(_SECRET_BYTES)


def _require_no_transaction(conn: asyncpg.Connection) -> None:
    if conn.is_in_transaction():
        raise RuntimeError(
            "device registry changes commit before the broker files are rendered; "
            "call them outside a transaction"
        )


# ------------------------------------------------------------------- the broker


async def sync_broker(conn: asyncpg.Connection, broker: Broker) -> BrokerSync:
    """Rewrite the broker's password and ACL files from the live devices and reload it.

    Idempotent. When ``broker.host`` is set and the broker runs, returns only
    once the broker enforces the new files (a revoked device is refused, a new
    one accepted): it logs in as ``CANARY_USER`` with the secret just written,
    signalling again if a SIGHUP was lost; raises ``BrokerReloadTimeout`` after
    ``broker.reload_timeout``.
    Mosquitto 2.0.11 re-reads both files on SIGHUP and disconnects clients whose
    user is gone. The reload blocks the broker: ~0.5 s for the seeded city's
    9,146 devices, growing quadratically (Mosquitto's ACL loader), so beyond
    ~20k devices a broker with an auth plugin or a database-backed ACL
    (EMQX, HiveMQ, mosquitto-go-auth) should replace the files.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _BROKER_SYNC_LOCK)
        credentials = await store.live_credentials(conn)
        canary_secret = _new_secret()
        users = [
            broker_files.platform_user(
                broker.platform_username,
                broker_files.hash_password(broker.platform_password),
                broker.topics.prefix,
            ),
            broker_files.BrokerUser(
                username=CANARY_USER,
                password_hash=broker_files.hash_password(canary_secret),
                grants=(),
            ),
        ]
        users.extend(
            broker_files.BrokerUser(
                username=c.device_id,
                password_hash=c.password_hash,
                grants=grants(c, broker.topics),
            )
            for c in credentials
        )
        patterns = "".join(
            f"pattern {access} {topic}\n" for access, topic in device_patterns(broker.topics)
        )
        acl = (
            "# written by the device registry (parking devices); edits are overwritten\n"
            "# every device on its own devices/{device_id}/ topics (%u = its username):\n"
            f"{patterns}\n"
            f"{broker_files.render_acl_file(users)}"
        )
        broker.files.password_file.parent.mkdir(parents=True, exist_ok=True)
        broker_files.write_atomically(
            broker.files.password_file, broker_files.render_password_file(users)
        )
        broker_files.write_atomically(broker.files.acl_file, acl)
        broker.files.reload()
        if broker.host is None or not broker.files.running():
            return BrokerSync(devices=len(credentials), reload_seconds=None)
        # Still under the lock: a concurrent sync would replace the canary's
        # secret before this one could see the broker accept it.
        seconds = await asyncio.to_thread(
            _await_reload,
            broker.files,
            broker.host,
            broker.port,
            canary_secret,
            broker.reload_timeout,
        )
    return BrokerSync(devices=len(credentials), reload_seconds=round(seconds, 3))


def _await_reload(files: BrokerFiles, host: str, port: int, secret: str, timeout: float) -> float:
    started = time.monotonic()
    pause = _RESIGNAL_FIRST_S
    while True:
        left = started + timeout - time.monotonic()
        if left <= 0:
            raise BrokerReloadTimeout(
                f"the broker at {host}:{port} did not load the new credentials within "
                f"{timeout:.0f} s; run `parking devices sync-broker` again"
            )
        if mqtt.canary_accepted(host, port, CANARY_USER, secret, within=min(left, 30.0)):
            return time.monotonic() - started
        time.sleep(min(pause, max(0.0, left)))
        pause = min(pause * 2, _RESIGNAL_MAX_S)
        files.reload()


# ----------------------------------------------------------------- registry


async def add_device(
    conn: asyncpg.Connection,
    *,
    lot_id: str,
    lane_id: str | None = None,
    space_id: str | None = None,
    kind: DeviceKind | None = None,
    device_id: str | None = None,
    broker: Broker | None,
    camera: CameraSpec | None = None,
) -> Provisioned:
    """Register a device with a new random secret, then update the broker.

    The secret is returned once and stored only as a Mosquitto PBKDF2 hash.
    Without ``device_id`` the id is ``{lot}-{lane|space}`` lowercased (with a
    ``-2``... suffix when a revoked device had it). Must run outside a transaction.

    With ``camera`` the gate is a camera that pushes in its maker's protocol: it gets
    no broker account, and the answer carries its push URL (the secret in its path);
    a Hikvision camera also gets the ISAPI password the platform opens its barrier
    with, written to ``camera.control_secrets`` (0600) before the row commits.
    """
    _require_no_transaction(conn)
    resolved = resolve_kind(kind, lane_id=lane_id, space_id=space_id)
    check_camera(
        resolved,
        vendor=camera.vendor if camera else None,
        serial=camera.serial if camera else None,
        control_url=camera.control_url if camera else None,
    )
    if device_id is not None:
        check_id(device_id)
    if not await lots.lot_exists(conn, lot_id):
        raise PlacementNotFound(f"lot {lot_id!r} does not exist")
    if lane_id is not None and await lots.find_lane(conn, lot_id, lane_id) is None:
        raise PlacementNotFound(f"lane {lane_id!r} of lot {lot_id!r} does not exist")
    if space_id is not None and await lots.find_space(conn, lot_id, space_id) is None:
        raise PlacementNotFound(f"space {space_id!r} of lot {lot_id!r} does not exist")
    if device_id is None:
        candidates = id_candidates(
            id_base(lot_id, lane_id=lane_id, space_id=space_id, kind=resolved)
        )
        taken = await store.taken_ids(conn, candidates)
        free = [c for c in candidates if c not in taken]
        if not free:
            raise DeviceIdTaken(f"every id from {candidates[0]!r} on is taken; give one with --id")
        device_id = free[0]
    password = _new_secret()
    control_password = None
    if camera is not None and camera.vendor is Vendor.HIKVISION:
        control_password = _new_secret()
        known = read_secrets(camera.control_secrets)
        _write_secrets(
            camera.control_secrets,
            {**known, device_id: f"{camera.control_user}:{control_password}"},
        )
    try:
        async with conn.transaction():
            await store.insert(
                conn,
                device_id=device_id,
                kind=resolved,
                lot_id=lot_id,
                lane_id=lane_id,
                space_id=space_id,
                password_hash=broker_files.hash_password(password),
                vendor=camera.vendor if camera else None,
                serial=camera.serial if camera else None,
                control_url=camera.control_url if camera else None,
            )
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "devices_pkey":
            raise DeviceIdTaken(f"device id {device_id!r} is taken") from error
        if error.constraint_name == "devices_one_live_camera" and camera is not None:
            raise SerialTaken(
                f"{camera.vendor.value} camera {camera.serial!r} is registered already; "
                "revoke that device first"
            ) from error
        where = f"lane {lane_id!r}" if lane_id is not None else f"space {space_id!r}"
        raise PlacementTaken(
            f"{where} of lot {lot_id!r} has a live {resolved.value} already; revoke it first"
        ) from error
    if broker is not None and camera is None:
        await sync_broker(conn, broker)
    return Provisioned(
        device_id=device_id,
        password=password,
        kind=resolved,
        lot_id=lot_id,
        lane_id=lane_id,
        space_id=space_id,
        vendor=camera.vendor if camera else None,
        serial=camera.serial if camera else None,
        push_url=push_url(camera.push_base_url, camera.vendor, device_id, password)
        if camera
        else None,
        control_url=camera.control_url if camera else None,
        control_user=camera.control_user if camera and control_password else None,
        control_password=control_password,
    )


async def revoke_device(
    conn: asyncpg.Connection, device_id: str, *, at: datetime, broker: Broker | None
) -> Device:
    """Revoke a device and update the broker, which then refuses it and drops its connection.

    Idempotent: revoking a revoked device keeps its first revoked_at (and still
    re-syncs the broker). Must run outside a transaction.
    """
    _require_no_transaction(conn)
    async with conn.transaction():
        device = await store.revoke(conn, device_id, at)
    if device is None:
        raise DeviceNotFound(f"device {device_id!r} does not exist")
    if broker is not None:
        await sync_broker(conn, broker)
    return device


async def list_devices(
    conn: asyncpg.Connection,
    *,
    lot_id: str | None = None,
    live_only: bool = False,
    company_id: str | None = None,
) -> list[Device]:
    """The registry's devices (of one lot; of one operator company's lots)."""
    lot_ids = None if company_id is None else await lots.lot_ids_of(conn, company_id)
    return await store.list_devices(conn, lot_id=lot_id, live_only=live_only, lot_ids=lot_ids)


async def fleet(conn: asyncpg.Connection) -> list[FleetLot]:
    """Every lot with live devices, and those devices (what a simulator drives), by lot id."""
    directions = {
        (lane.lot_id, lane.lane_id): lane.direction for lane in await lots.every_lane(conn)
    }
    by_lot = await store.live_devices_by_lot(conn, directions)
    return [
        FleetLot(lot=lot, devices=tuple(by_lot[lot.id]))
        for lot in await lots.lots_by_id(conn, sorted(by_lot))
    ]


# --------------------------------------------------------- the seeded city


def read_secrets(path: Path) -> dict[str, str]:
    """device_id -> secret from a secrets file; empty when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path} is not a JSON object of device id -> secret")
    return data


def write_secrets(path: Path, entries: dict[str, str]) -> None:
    """Replace a secrets file (device id -> secret) atomically, mode 0600."""
    _write_secrets(path, entries)


def _write_secrets(path: Path, entries: dict[str, str]) -> None:
    """Replace the secrets file atomically; it is created 0600, never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dict(sorted(entries.items())), out, indent=0)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _hash_all(passwords: list[str]) -> list[str]:
    return [broker_files.hash_password(p) for p in passwords]


async def provision_city(
    conn: asyncpg.Connection,
    *,
    secrets_file: Path,
    broker: Broker | None,
    progress: Callable[[str], None] = lambda _: None,
) -> ProvisionReport:
    """Give every lane a gate and every on-street space a sensor, where none was ever installed.

    Idempotent: existing devices and their secrets-file entries are kept; a
    lane or space whose device was revoked is left alone (an operator replaces
    it with ``devices add``). The new secrets go only to ``secrets_file``
    (mode 0600), written before the rows commit so that no committed device
    is without its secret. Then the broker files are rewritten and reloaded.
    Must run outside a transaction.
    """
    _require_no_transaction(conn)
    known = read_secrets(secrets_file)
    async with conn.transaction():
        gated = await store.placements(conn, "gate")
        sensed = await store.placements(conn, "sensor")
        lanes = [
            (lane.lot_id, lane.lane_id)
            for lane in await lots.every_lane(conn)
            if (lane.lot_id, lane.lane_id) not in gated
        ]
        spaces = [
            (space.lot_id, space.space_id)
            for space in await lots.spaces_of(conn, await lots.street_lot_ids(conn))
            if (space.lot_id, space.space_id) not in sensed
        ]
        taken = await store.all_ids(conn)
        planned: list[tuple[DeviceKind, str, str | None, str | None]] = [
            (DeviceKind.GATE, lot_id, lane_id, None) for lot_id, lane_id in lanes
        ]
        planned.extend((DeviceKind.SENSOR, lot_id, None, space_id) for lot_id, space_id in spaces)
        rows: list[tuple[str, DeviceKind, str, str | None, str | None, str]] = []
        passwords: list[str] = []
        for kind, lot_id, lane_id, space_id in planned:
            base = id_base(lot_id, lane_id=lane_id, space_id=space_id, kind=kind)
            device_id = next(c for c in id_candidates(base) if c not in taken)
            taken.add(device_id)
            passwords.append(_new_secret())
            rows.append((device_id, kind, lot_id, lane_id, space_id, ""))
        progress(f"hashing {len(rows)} new secrets")
        # hashlib releases the GIL: ~10k PBKDF2 hashes take ~1 s off the event loop.
        hashes = await asyncio.to_thread(_hash_all, passwords)
        rows = [(*row[:5], h) for row, h in zip(rows, hashes, strict=True)]
        inserted = set(await store.insert_many(conn, rows))
        fresh = {
            row[0]: password
            for row, password in zip(rows, passwords, strict=True)
            if row[0] in inserted
        }
        if fresh:
            _write_secrets(secrets_file, {**known, **fresh})
        live = await store.live_ids(conn)
    known.update(fresh)
    kinds = {row[0]: row[1] for row in rows if row[0] in inserted}
    report = ProvisionReport(
        gates_created=sum(1 for k in kinds.values() if k is DeviceKind.GATE),
        sensors_created=sum(1 for k in kinds.values() if k is DeviceKind.SENSOR),
        live_devices=len(live),
        live_without_secret=sum(1 for d in live if d not in known),
        secrets_file=str(secrets_file),
    )
    progress(f"devices: {report.gates_created} gates, {report.sensors_created} sensors created")
    if broker is not None:
        synced = await sync_broker(conn, broker)
        progress(f"broker: {synced.devices} devices written, reloaded in {synced.reload_seconds} s")
    return report


async def gate_login(conn: asyncpg.Connection, device_id: str) -> asyncpg.Record | None:
    """The device's lot, lane, kind, password hash and revocation, for the HTTP gate
    fallback's Basic login (None: no such device)."""
    return await store.gate_login(conn, device_id)
