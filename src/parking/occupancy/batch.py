"""What a batch of device messages is made of: the inbound messages, the items they
decode to, what a batch publishes and reports, and the core's tuning."""

from __future__ import annotations

import functools
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

import msgspec

from parking.devices.messages import (
    CommandAck,
    DeviceStatus,
    Passage,
    SpaceState,
)
from parking.occupancy import keys, logic, store
from parking.occupancy.model import (
    GoneExit,
    LotInfo,
    OpenSession,
    PassageRecord,
    PlateFlags,
    Prepaid,
)
from parking.plates import Plate, PlateError, parse_plate
from parking.pricing import PricedStay
from parking.pricing.logic import DayCount


class PricerLike(Protocol):
    def price(
        self,
        *,
        lot_id: str,
        plate: str | None,
        entry: datetime,
        exit: datetime,
        vehicle_class: int | None = None,
        stay_of_day: int = 1,
    ) -> PricedStay: ...

    def daily_grace_count(
        self,
        *,
        lot_id: str,
        plate: str | None,
        entry: datetime,
        vehicle_class: int | None = None,
    ) -> DayCount | None: ...


#: counts the plate's stays entered at the lots since a time, before another (the
#: earlier stays of a day, for ``nev.daily_grace``)
StayCounter = Callable[[str, DayCount, datetime], Awaitable[int]]


class CoreBusy(Exception):
    """An exit kept racing other events of its plate; the batch is retried."""


@dataclass(frozen=True, slots=True)
class Tuning:
    #: A gate that has not acked a command within this is re-sent it. Gates ack
    #: within ~100 ms on a healthy lane; 3 s leaves room for a congested 4G link
    #: without making the driver wait long after a lost command.
    command_resend_after: timedelta = timedelta(seconds=3)
    #: Each re-send waits twice as long as the one before (3, 6, 12, 24 s ...: offsets
    #: 3, 9, 21, 45 s), up to this: a gate that missed a few commands is probably
    #: offline or its broker connection is saturated, and re-sending at a constant
    #: rate fed an overload four re-sends to one command (issue 20).
    command_resend_cap: timedelta = timedelta(seconds=30)
    #: At most this many re-sends of one command; then it is dropped (and recorded).
    command_resends: int = 5
    #: No re-send once the command's passage (its corrected event time) is older than
    #: this: by then the car has reversed, been let through by hand or its driver has
    #: called for help, and a barrier opening now would let the next car through.
    #: Shorter than ``command_ttl``, which counts from when the core applied it.
    command_stale_after: timedelta = timedelta(seconds=30)
    #: After this an unacked command is dropped (and recorded): the car has
    #: long gone or the driver called for help; opening later would let the
    #: next car through. For the same reason a passage observed longer ago
    #: than this (a backlog drained after an outage) gets no command at all.
    #: "Observed" is the event's corrected time (logic.read_clock), so a v1.1
    #: gate whose clock runs behind still gets its commands; a v1 gate (no
    #: sent_at) whose clock runs this far behind does not.
    command_ttl: timedelta = timedelta(seconds=60)
    #: A space that changes state this many times within the window (device
    #: time) is reported as flapping. Real turnover is at most a few changes
    #: an hour; a failing geomagnetic sensor toggles every few seconds.
    flap_changes: int = 6
    flap_window: timedelta = timedelta(minutes=10)
    #: Re-price rounds for an exit whose plate changed under it within a batch.
    stale_rounds: int = 5
    #: An entry that reaches the platform after its car's exit (the entry camera's
    #: connection dropped and its outbox kept the entry while the exit lane's went
    #: through) completes that exit-without-entry session, priced from its entry,
    #: when the exit is at most this long after the entry (the lots' default review
    #: limit of a stay): the car is gone, so it opens nothing and counts nothing.
    late_entry_within: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    #: when the message reached the platform (the gateway's clock when paho handed
    #: it over, not when its batch was applied: a wait in our own inbox is no part
    #: of the device's delay)
    received_at: datetime
    #: whether it may have waited in the broker's queue for the gateway (it came
    #: with a reconnect or a full receive window): then ``sent_at - received_at``
    #: includes that wait, which reads exactly like a clock running behind, so it
    #: is no sample of the device's clock unless it shows the clock ahead
    #: (``logic.counts_as_sample``; contracts/mqtt.md "Clocks")
    held: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Resends:
    """What ``Ingest.resend_due`` found: the commands due again, and how many pending
    ones it stopped re-sending (``superseded`` | ``stale`` | ``attempts`` | ``expired``)."""

    publishes: list[Publish]
    dropped: Counter[str]


@dataclass
class BatchReport:
    publishes: list[Publish] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    gaps: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    unknown_devices: int = 0
    #: lots with an applied passage or space state (their free count may have moved)
    lots: set[str] = field(default_factory=set)
    #: pending commands no longer re-sent because a newer passage of their lane has one
    commands_superseded: int = 0


@dataclass
class Dead:
    inbound: Inbound
    tag: str
    reason: str
    device_id: str | None = None
    seq: int | None = None


@dataclass
class Gate:
    inbound: Inbound
    msg: Passage
    lot: LotInfo
    lane_id: str
    plate: Plate | None
    _candidate: str | None = None
    flags: PlateFlags | None = None
    current: OpenSession | None = None
    #: an entry: the lot's exit without entry of the plate (``keys.gone``), which
    #: this entry completes when it is at or after it and within late_entry_within
    gone: GoneExit | None = None
    #: what the plate's session paid in the lot (matches ``current`` or is stale)
    prepaid: Prepaid | None = None
    call: store.PassageCall | None = None
    record: PassageRecord | None = None
    open_payload: bytes = b""
    hold_payload: bytes = b""
    clock: logic.ClockReading | None = None
    #: the stay's index of the day (an exit under ``nev.daily_grace``)
    stay_of_day: int = 1

    @property
    def at(self) -> datetime:
        """The event's time for decisions and fees (corrected for the device's clock)."""
        return self.clock.at if self.clock is not None else self.msg.observed_at

    @property
    def candidate(self) -> str:
        """The id a session opened by this event gets (computed when first needed)."""
        if self._candidate is None:
            m = self.msg
            self._candidate = logic.session_id_for(m.device_id, m.seq, m.observed_at)
        return self._candidate


@dataclass
class Sensor:
    inbound: Inbound
    msg: SpaceState
    lot: LotInfo
    space_id: str
    clock: logic.ClockReading | None = None

    @property
    def at(self) -> datetime:
        return self.clock.at if self.clock is not None else self.msg.observed_at


@dataclass
class Status:
    inbound: Inbound
    msg: DeviceStatus
    lot_id: str


@dataclass
class Ack:
    inbound: Inbound
    msg: CommandAck
    lot_id: str
    lane_id: str


Item = Dead | Gate | Sensor | Status | Ack


@dataclass(frozen=True, slots=True)
class Decoded:
    """A batch decoded ahead of its application (``Ingest.decode``). Its items are for
    one ``Ingest.handle`` of the same batch, which fills them in."""

    items: list[Item]
    unknown_devices: int = 0


#: the records of the applied-event streams (passages and space readings as
#: ``PassageWire``/``SpaceWire``: JSON arrays, fields by position)
record_encoder: Final = msgspec.json.Encoder()


@functools.lru_cache(maxsize=65536)
def plate_of(raw: str) -> Plate | None:
    """A camera read as a plate, or None when it is none (cached: an exit repeats its
    entry's read, and Plate is immutable)."""
    try:
        return parse_plate(raw)
    except PlateError:
        return None


def fallback_tag(topic: str) -> str:
    return keys.shard_tag(zlib.crc32(topic.encode("utf-8", "replace")) % keys.LOT_SHARDS)


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


class CoreUnavailable(Exception):
    """The recovery ladder gave up on a batch (a caller that bounds its attempts):
    ``loading`` while the core was still not loaded after a rebuild, ``busy`` when the
    core answered busy or not at all."""

    def __init__(self, reason: Literal["loading", "busy"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Recovery:
    """How a caller of ``Ingest.handle_recovering`` wants a failing batch retried.

    The gateway retries until the batch is in (nothing it holds is acknowledged
    before), backing off; the HTTP gate fallback tries twice and then answers 503,
    because its device retries with the same seq anyway.
    """

    #: rebuild the core from PostgreSQL (the caller knows where its connection comes from)
    rebuild: Callable[[], Awaitable[None]]
    #: at most this many calls of ``handle``; None: until one succeeds
    attempts: int | None = None
    first_delay: float = 0.0
    max_delay: float = 0.0
    #: a busy or unreachable core ends the ladder at once (``CoreUnavailable("busy")``)
    #: instead of being retried; also lets a failed function load propagate
    busy_gives_up: bool = False
    #: told of every retry: (``not_ready`` | ``library`` | ``busy``, the error, the delay)
    on_retry: Callable[[str, BaseException, float], None] | None = None
    #: told how long the successful attempt took (seconds)
    on_done: Callable[[float], None] | None = None
