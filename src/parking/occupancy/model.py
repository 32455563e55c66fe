"""Types of the occupancy core: what the gateway records, what the core answers.

Records are what the gateway hands the core with each event, verbatim into the
applied-events stream (field ``ev``); the persister decodes them. They carry
everything the system of record needs, so the persister never asks Redis or the
gateway anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

import msgspec

from parking.bills.logic import Standing
from parking.errors import ParkingError
from parking.lots.model import Lot


class CoreNotReady(ParkingError):
    """A shard of the core has not been loaded (Redis lost its state): rebuild from PostgreSQL."""


class CoreUnreachable(ParkingError):
    """The occupancy core (Redis) did not answer: a decision that would change it saved
    nothing; a figure read from it cannot be given now (503)."""


class Outcome(StrEnum):
    """What a passage did at the lane."""

    OPENED = "opened"  # entry: a session was opened, barrier opens
    FULL = "full"  # entry: held because the lot is full
    HELD = "held"  # entry or exit held for a reason decided before the core
    CLOSED = "closed"  # exit: the open session was closed and priced
    NO_ENTRY = "no_entry"  # exit: no open session here (anomaly; lot policy prices it)
    #: entry that arrived after its car's exit without entry here: it completes that
    #: session (priced from this entry), opens nothing
    LATE_ENTRY = "late_entry"
    #: entry observed before the plate's open session in this lot (two reads of one car
    #: delivered out of order): superseded by that session at once, nothing opens
    OLDER_ENTRY = "older_entry"


class AnomalyKind(StrEnum):
    PLATE_ELSEWHERE = "plate_elsewhere"  # entry while parked at another lot
    REENTRY_SAME_LOT = "reentry_same_lot"  # entry while already parked here
    EXIT_WITHOUT_ENTRY = "exit_without_entry"
    LOW_CONFIDENCE = "low_confidence"
    UNPLATED = "unplated"
    INVALID_PLATE = "invalid_plate"
    PRICING_FAILED = "pricing_failed"
    SENSOR_FLAPPING = "sensor_flapping"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_SILENT = "device_silent"
    SEQ_GAP = "seq_gap"
    COMMAND_FAILED = "command_failed"
    COMMAND_EXPIRED = "command_expired"
    OLDER_ENTRY = "older_entry"  # an entry that arrived after a later one of the plate
    #: a device's clock is off by more than the tolerance (one open per device)
    DEVICE_CLOCK_SKEW = "device_clock_skew"
    #: an event observed before the same device's previous event by seq
    CLOCK_WENT_BACK = "clock_went_back"
    #: a stay past the lot's review limits: billed, never deducted nor shown as owed
    #: until an operator confirms it
    FEE_REVIEW = "fee_review"


class PricedExit(msgspec.Struct, frozen=True, kw_only=True):
    """The open session an exit closes, as the gateway priced it."""

    session_id: str
    entry_at: datetime
    fee_fen: int
    tariff_id: str | None
    tariff_version: int | None
    vehicle_class: int | None
    reason: str
    #: parking.tariffs Quote as JSON; ``null`` when free (exempt, pass) or not priceable
    #: (msgspec.Raw cannot be part of a union, hence no ``| None``)
    quote: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))

    @property
    def quote_json(self) -> bytes | None:
        raw = bytes(self.quote)
        return None if raw in (b"", b"null") else raw

    error: str | None = None


class PassageRecord(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    seq: int
    lot_id: str
    lane_id: str
    direction: Literal["in", "out"]
    #: normalised plate, None when none was read or it is not a valid plate
    plate: str | None
    plate_raw: str | None
    plate_color: str | None
    confidence: float | None
    image_ref: str | None
    #: as the device's clock said it (contract field)
    observed_at: datetime
    received_at: datetime
    #: open | open_any | hold | exit | late (an entry completing an exit without entry)
    mode: str
    hold_reason: str | None = None
    #: new session id of an entry, or of an exit without entry
    session_candidate: str | None = None
    anomalies: tuple[str, ...] = ()
    priced: PricedExit | None = None
    no_entry_fee_fen: int = 0
    #: the event's time the platform used (``observed_at`` corrected for the device's
    #: clock, logic.read_clock); None in entries written before clocks were read
    event_at: datetime | None = None
    sent_at: datetime | None = None
    clock_offset_ms: int | None = None
    #: why the time was corrected (``offset``/``ahead``), None when the clock is right
    clock_skew: str | None = None
    #: why the bill waits for an operator (logic.needs_review), None when it does not
    review: str | None = None

    @property
    def at(self) -> datetime:
        return self.event_at or self.observed_at


class SpaceRecord(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    seq: int
    lot_id: str
    space_id: str
    occupied: bool
    battery_pct: int | None
    observed_at: datetime
    received_at: datetime
    event_at: datetime | None = None
    sent_at: datetime | None = None
    clock_offset_ms: int | None = None
    clock_skew: str | None = None

    @property
    def at(self) -> datetime:
        return self.event_at or self.observed_at


class PassageWire(PassageRecord, frozen=True, kw_only=True, array_like=True):
    """A ``PassageRecord`` as the core's stream carries it to the persister: a JSON
    array, the fields by position, half the bytes of the JSON object (the applied-event
    streams are most of Redis's memory while a burst is in flight). New fields go at
    the end, with a default, so a record written before them still reads."""


class SpaceWire(SpaceRecord, frozen=True, kw_only=True, array_like=True):
    """A ``SpaceRecord`` as the core's stream carries it (see ``PassageWire``)."""


class StatusRecord(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    lot_id: str
    online: bool
    at: datetime
    firmware: str | None
    received_at: datetime


class AckRecord(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    lot_id: str
    lane_id: str
    result: str
    at: datetime
    received_at: datetime


# ------------------------------------------------------------- directory


@dataclass(frozen=True, slots=True)
class ReviewLimits:
    """A lot's bounds past which a stay's bill waits for an operator (mqtt.md "Clocks" 4):
    billed as usual, never deducted contactlessly nor shown on the lane as owed."""

    stay: timedelta = timedelta(days=7)
    fee_fen: int = 20_000


@dataclass(frozen=True, slots=True)
class LotInfo:
    """A lot as the core decides with it: the lot's record (``parking.lots``) and the
    lot groups it belongs to (a monthly pass's scope)."""

    lot: Lot
    groups: frozenset[str] = frozenset()

    @property
    def lot_id(self) -> str:
        return self.lot.id

    @property
    def kind(self) -> str:
        return self.lot.kind

    @property
    def capacity(self) -> int:
        return self.lot.capacity

    @property
    def full_policy(self) -> str:
        return self.lot.full_policy

    @property
    def district_code(self) -> str:
        return self.lot.district_code

    @property
    def arrears_hold_after(self) -> timedelta:
        return timedelta(minutes=self.lot.arrears_hold_after_minutes)

    @property
    def review(self) -> ReviewLimits:
        return ReviewLimits(
            timedelta(minutes=self.lot.review_stay_limit_minutes), self.lot.review_fee_ceiling_fen
        )


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    lot_id: str
    kind: str
    lane_id: str | None
    space_id: str | None


@dataclass(slots=True)
class Directory:
    """Lots and live devices, as of one load from PostgreSQL."""

    lots: dict[str, LotInfo] = field(default_factory=dict)
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    gates: dict[tuple[str, str], str] = field(default_factory=dict)
    sensors: dict[tuple[str, str], str] = field(default_factory=dict)

    def add_device(self, device: DeviceInfo) -> None:
        self.devices[device.device_id] = device
        if device.lane_id is not None and device.kind == "gate":
            self.gates[(device.lot_id, device.lane_id)] = device.device_id
        if device.space_id is not None and device.kind == "sensor":
            self.sensors[(device.lot_id, device.space_id)] = device.device_id


# ------------------------------------------------------------- plate flags


@dataclass(frozen=True, slots=True)
class LiveCount:
    """A lot as the core counts it now."""

    capacity: int
    kind: str
    #: open sessions (a gated lot's cars; an on-street lot's claimed stays)
    sessions: int
    #: occupied spaces (on-street lots' sensors)
    occupied_spaces: int

    @property
    def occupied(self) -> int:
        """Cars in the lot: open sessions of a gated lot, occupied spaces on the street."""
        return self.sessions if self.kind == "gated" else self.occupied_spaces

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.occupied)


@dataclass(frozen=True, slots=True)
class PassWindow:
    pass_id: str
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class PlateFlags:
    """What the city knows about a plate when it arrives at an entry lane."""

    blacklisted: str | None = None
    arrears_since: datetime | None = None
    #: scope (lot id or lot group id) -> pass
    passes: dict[str, PassWindow] = field(default_factory=dict)

    def pass_for(self, lot: LotInfo, at: datetime) -> PassWindow | None:
        for scope in (lot.lot_id, *sorted(lot.groups)):
            window = self.passes.get(scope)
            if window is not None and window.valid_from <= at < window.valid_until:
                return window
        return None


NO_FLAGS: Final = PlateFlags()


@dataclass(frozen=True, slots=True)
class OpenSession:
    """An open session as the lot's key holds it."""

    session_id: str
    entry_ms: int
    device_id: str
    seq: int

    @classmethod
    def parse(cls, value: str) -> OpenSession:
        sid, entry_ms, device, seq = value.split("|")
        return cls(sid, int(entry_ms), device, int(seq))


@dataclass(frozen=True, slots=True)
class GoneExit:
    """An exit without an entry read, as the lot's ``gone`` key remembers it."""

    session_id: str
    exit_ms: int
    device_id: str
    seq: int

    @classmethod
    def parse(cls, value: str) -> GoneExit:
        sid, exit_ms, device, seq = value.split("|")
        return cls(sid, int(exit_ms), device, int(seq))


@dataclass(frozen=True, slots=True)
class Prepaid:
    """What a plate's session paid in the lot, as the exit lane reads it (a hint for
    the display: the bill at the close is computed from PostgreSQL)."""

    session_id: str
    #: what the prepayments paid or are paying (``Standing.settled_fen``): an
    #: unpaid offer is not subtracted at the exit
    billed_fen: int
    leave_by_ms: int

    @classmethod
    def parse(cls, value: str) -> Prepaid:
        sid, billed, leave_by = value.split("|")
        return cls(sid, int(billed), int(leave_by))

    def due_fen(self, stay_fen: int, exit_at: datetime) -> int:
        """What the exit still bills (the rule of ``bills.logic.Standing.due``)."""
        leave_by = (
            datetime.fromtimestamp(self.leave_by_ms / 1000, UTC) if self.leave_by_ms else None
        )
        return Standing(self.billed_fen, leave_by, settled_fen=self.billed_fen).due(
            stay_fen, exit_at
        )


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Work an applied gate event still owes other slots (plate index, another lot)."""

    kind: Literal["claim", "release"]
    plate: str
    session_id: str
    at_ms: int
    lot_id: str
    made_ms: int

    @classmethod
    def parse(cls, value: str) -> FollowUp:
        kind, plate, sid, at_ms, lot_id, made = value.split("|")
        if kind not in ("claim", "release"):
            raise ValueError(f"unknown follow-up {kind!r}")
        return cls(kind, plate, sid, int(at_ms), lot_id, int(made))  # type: ignore[arg-type]


# The lane decisions (occupancy/lane.py) and what they return.


class HoldReason(StrEnum):
    UNPLATED = "unplated"  # no plate read: the driver scans the lane QR code
    UNREADABLE = "unreadable_plate"  # a read that is not a valid plate
    BLACKLISTED = "blacklisted"
    ARREARS = "arrears"  # unpaid bills older than the lot allows
    FULL = "full"


EntryMode = Literal["open", "open_any", "hold"]


@dataclass(frozen=True, slots=True)
class EntryDecision:
    """What an entry lane does, before the core checks capacity.

    ``open`` opens only if the lot has a free space (else the core holds the car
    with ``display_hold``); ``open_any`` opens even when full (the lot's
    full_policy is open, or a monthly-pass holder); ``hold`` holds for
    ``hold_reason``.
    """

    mode: EntryMode
    hold_reason: HoldReason | None
    display_open: str
    display_hold: str
    anomalies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """``exit`` closes the open session and opens the barrier; ``hold`` keeps it closed."""

    mode: Literal["exit", "hold"]
    hold_reason: HoldReason | None
    display_hold: str
    anomalies: tuple[str, ...]


# ------------------------------------------------------------------ a driver's open stays


class CurrentSession(msgspec.Struct, frozen=True, kw_only=True):
    """An open session with what it would cost to leave now.

    ``fee_fen`` is None when the lot cannot price the stay (no tariff in force):
    ``pricing_reason`` then says why. ``source`` is ``live`` (the lanes' state
    in Redis) or ``record`` (PostgreSQL, when the live state is unavailable).
    """

    session_id: str
    #: None for an unplated car let in by my scan of an entry lane code
    plate: str | None
    lot_id: str
    entry_at: datetime
    quoted_at: datetime
    fee_fen: int | None
    tariff_id: str | None
    tariff_version: int | None
    pricing_reason: str
    source: str


class CurrentSessions(msgspec.Struct, frozen=True, kw_only=True):
    items: list[CurrentSession]
