"""The device registry's nouns, its errors, and each device's broker grants (pure, no I/O).

A device is a gate (one per lane: barrier + ANPR camera), a sensor (one per
on-street space) or a sign (lot availability display). Its MQTT username and
client id are its ``device_id``; what it may publish and subscribe to follows
from where it is installed (contracts/mqtt.md, "Identity and access").
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

from parking.devices.messages import Topics
from parking.errors import Conflict, InvalidInput, NotFound, ParkingError
from parking.lots.model import Lot

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: A derived id that is taken (by a revoked device: ids are never reused, since
#: a device's seq stream starts again at 1) gets the first free suffix -2, -3, ...
MAX_ID_SUFFIX: Final = 99


class DeviceKind(StrEnum):
    GATE = "gate"
    SENSOR = "sensor"
    SIGN = "sign"


class Vendor(StrEnum):
    """Makers whose ANPR cameras push to the platform in their own protocol
    (``gateways/cameras``): a gate that is such a camera has no MQTT account."""

    VZENITH = "vzenith"
    HIKVISION = "hikvision"


class DeviceClock(msgspec.Struct, frozen=True, kw_only=True):
    """The device's clock as of its latest event (contracts/mqtt.md "Clocks")."""

    #: median of ``sent_at - received_at`` (ms); None for a v1 device (no ``sent_at``)
    offset_ms: int | None
    #: its latest event's time had to be corrected
    skewed: bool
    checked_at: datetime
    #: the open ``device_clock_skew`` anomaly, until the clock is right again
    open_anomaly: str | None = None


class Device(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    kind: DeviceKind
    lot_id: str
    lane_id: str | None = None
    space_id: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None
    #: device health: its clock (in lists of devices; None before its first event)
    clock: DeviceClock | None = None
    #: a camera that pushes in its maker's protocol: the maker and its serial number
    vendor: Vendor | None = None
    serial: str | None = None


class Provisioned(msgspec.Struct, frozen=True, kw_only=True):
    """A new device and its secret. The secret exists only here: the registry keeps its hash."""

    device_id: str
    password: str
    kind: DeviceKind
    lot_id: str
    lane_id: str | None = None
    space_id: str | None = None
    #: a camera: its maker, serial, and the URL to configure in it (the secret is in
    #: its path)
    vendor: Vendor | None = None
    serial: str | None = None
    push_url: str | None = None
    #: a Hikvision camera: where the platform opens the barrier (ISAPI), as whom
    control_url: str | None = None
    control_user: str | None = None
    #: the ISAPI password to give that user on the camera (shown once; the platform
    #: keeps it in its camera control secrets file, it needs it to sign each call)
    control_password: str | None = None


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """What the broker needs of a live device: its hash and where it is installed."""

    device_id: str
    kind: DeviceKind
    lot_id: str
    lane_id: str | None
    space_id: str | None
    password_hash: str


class FleetDevice(msgspec.Struct, frozen=True, kw_only=True):
    """A live device with what a simulator needs to drive it."""

    device_id: str
    kind: DeviceKind
    lot_id: str
    lane_id: str | None
    space_id: str | None
    #: the lane's direction (gates only): "in" or "out"
    direction: str | None


class CameraLogin(msgspec.Struct, frozen=True, kw_only=True):
    """What a camera's push is checked against, and where the camera is installed."""

    device_id: str
    lot_id: str
    lane_id: str
    vendor: Vendor
    serial: str
    control_url: str | None
    password_hash: str
    revoked: bool


class GrantedSeq(msgspec.Struct, frozen=True, kw_only=True):
    """The seq a camera's vendor record got, and the contract passage it became.

    ``fresh`` is False for a record seen before (a vendor's retry): the same seq and
    passage as then, so the occupancy core recognises it as a duplicate."""

    seq: int
    passage: bytes
    fresh: bool


class UnconfirmedPush(msgspec.Struct, frozen=True, kw_only=True):
    """A camera's event the system of record does not hold yet (to be applied again)."""

    device_id: str
    lot_id: str
    lane_id: str
    seq: int
    received_at: datetime
    passage: bytes


class FleetCamera(msgspec.Struct, frozen=True, kw_only=True):
    """A live camera with what its simulator needs: where it is, its maker and serial,
    and (Hikvision) where the platform calls it back."""

    device: FleetDevice
    vendor: Vendor
    serial: str
    control_url: str | None


class FleetLot(msgspec.Struct, frozen=True, kw_only=True):
    """A lot (``parking.lots``) and its live devices."""

    lot: Lot
    devices: tuple[FleetDevice, ...]


class ProvisionReport(msgspec.Struct, frozen=True, kw_only=True):
    gates_created: int
    sensors_created: int
    live_devices: int
    #: live devices whose secret is not in the secrets file (added with
    #: ``devices add``, or the file was lost): simulators cannot log them in
    live_without_secret: int
    secrets_file: str


class BrokerSync(msgspec.Struct, frozen=True, kw_only=True):
    #: live devices in the broker's files (besides the platform user)
    devices: int
    #: seconds from SIGHUP until the broker enforced the new files; None when
    #: not waited for (no broker address, or the broker is not running)
    reload_seconds: float | None


# ---------------------------------------------------------------------- errors


class DeviceError(InvalidInput):
    """A device request that makes no sense (bad id, kind and placement that do not fit)."""


class PlacementNotFound(NotFound):
    """The lot, lane or space a device is to be installed at does not exist."""


class DeviceNotFound(NotFound):
    pass


class DeviceIdTaken(Conflict):
    """Device ids are never reused, also not those of revoked devices."""


class BrokerReloadTimeout(ParkingError):
    """The broker did not take up rewritten credentials in time (it may be down or overloaded)."""


class PlacementTaken(Conflict):
    """A lane has one live gate and a space one live sensor; revoke the old device first."""


class SerialTaken(Conflict):
    """A camera's serial belongs to one live device: its pushes name one lane."""


# ------------------------------------------------------------------ decisions


def check_id(device_id: str) -> str:
    if ID_PATTERN.fullmatch(device_id) is None:
        raise DeviceError(f"device id {device_id!r} must match [A-Za-z0-9_-]{{1,64}}")
    return device_id


#: A serial as cameras print it: visible ASCII with inner spaces (migration 0023).
SERIAL_PATTERN: Final = re.compile(r"[!-~]([ -~]{0,126}[!-~])?")
#: Where a Hikvision camera's ISAPI is reached (no credentials in it: those are secret).
CONTROL_URL_PATTERN: Final = re.compile(r"https?://[^\s@/]{1,200}(/[^\s]{0,300})?")


def check_camera(
    kind: DeviceKind,
    *,
    vendor: Vendor | None,
    serial: str | None,
    control_url: str | None,
) -> None:
    """A camera is a gate with its maker and serial; only a Hikvision one has a control URL
    (its push's reply opens nothing: the platform calls the camera), and it must have one."""
    if vendor is None:
        if serial is not None or control_url is not None:
            raise DeviceError("--serial and --control-url describe a camera: give --vendor too")
        return
    if kind is not DeviceKind.GATE:
        raise DeviceError("a camera is installed at a lane (--lane)")
    if serial is None or SERIAL_PATTERN.fullmatch(serial) is None:
        raise DeviceError(
            "a camera needs its serial number (--serial): 1-128 visible ASCII characters"
        )
    if vendor is Vendor.HIKVISION:
        if control_url is None or CONTROL_URL_PATTERN.fullmatch(control_url) is None:
            raise DeviceError(
                "a Hikvision camera needs --control-url http(s)://<camera address>[:port], "
                "where the platform opens its barrier (ISAPI)"
            )
    elif control_url is not None:
        raise DeviceError("only a Hikvision camera is called back (--control-url)")


def resolve_kind(
    kind: DeviceKind | None, *, lane_id: str | None, space_id: str | None
) -> DeviceKind:
    """The kind a device at this placement is: gate at a lane, sensor at a space by default."""
    if lane_id is not None and space_id is not None:
        raise DeviceError("a device is installed at a lane or at a space, not both")
    if kind is None:
        if lane_id is not None:
            return DeviceKind.GATE
        if space_id is not None:
            return DeviceKind.SENSOR
        raise DeviceError("give --lane for a gate or --space for a sensor")
    if kind is DeviceKind.GATE and lane_id is None:
        raise DeviceError("a gate is installed at a lane (--lane)")
    if kind is DeviceKind.SENSOR and space_id is None:
        raise DeviceError("a sensor is installed at a space (--space)")
    if kind is DeviceKind.SIGN and space_id is not None:
        raise DeviceError("a sign is installed at a lot or a lane, not at a space")
    return kind


def id_base(lot_id: str, *, lane_id: str | None, space_id: str | None, kind: DeviceKind) -> str:
    """``GZ-DEMO-01`` + ``in1`` -> ``gz-demo-01-in1``; a lot-wide sign -> ``gz-demo-01-sign``."""
    where = lane_id or space_id
    base = f"{lot_id}-{where}" if where is not None else f"{lot_id}-{kind.value}"
    if kind is DeviceKind.SIGN and where is not None:
        base = f"{base}-sign"
    return base.lower()


def id_candidates(base: str) -> list[str]:
    """``base``, then ``base-2`` ... ``base-99``, each within the 64-character limit."""
    out = [base] + [f"{base}-{n}" for n in range(2, MAX_ID_SUFFIX + 1)]
    fitting = [c for c in out if ID_PATTERN.fullmatch(c)]
    if not fitting:
        raise DeviceError(f"derived device id {base!r} is too long; give one with --id")
    return fitting


def grants(device: Credential, topics: Topics) -> tuple[tuple[str, str], ...]:
    """The ``user`` block of a device in Mosquitto's ACL file: its lot/lane/space topics.

    The device's own ``devices/{id}/...`` topics are not here: they are the
    same for every device, so ``DEVICE_PATTERNS`` grants them once with
    Mosquitto's ``%u`` (the authenticated username). That keeps the ACL file
    at 1 line per sensor and 3 per gate, which matters because Mosquitto
    2.0's ACL loader is quadratic (each line searches the user list).
    ``read`` is what lets a client subscribe *and* receive: Mosquitto checks
    read access again on every delivery, retained messages included.
    """
    match device.kind:
        case DeviceKind.GATE:
            assert device.lane_id is not None
            return (
                ("write", topics.passages(device.lot_id, device.lane_id)),
                ("write", topics.command_ack(device.lot_id, device.lane_id)),
                ("read", topics.commands(device.lot_id, device.lane_id)),
            )
        case DeviceKind.SENSOR:
            assert device.space_id is not None
            return (("write", topics.space_state(device.lot_id, device.space_id)),)
        case DeviceKind.SIGN:
            return (("read", topics.availability(device.lot_id)),)


def device_patterns(topics: Topics) -> tuple[tuple[str, str], ...]:
    """Grants every authenticated user has on its own ``devices/{username}/`` topics.

    Write its status (and its Last Will, which the broker checks at CONNECT),
    read (never write: that would let it forge the platform's word) its
    watermark. The platform user's own grants cover these topics anyway.
    """
    return (
        ("write", topics.status("%u")),
        ("read", topics.watermark("%u")),
    )
