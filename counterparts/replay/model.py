"""What a planned day is made of: device events, faults, stays and drivers.

Plain data, shared by the planner, the device processes (which receive their
share of the events as msgpack), the truth model and the checker. Times are
epoch milliseconds (UTC) of the replayed day: the devices publish them as
``observed_at``; ``sent_at`` is the real clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import msgspec


class Kind(enum.IntEnum):
    PASSAGE = 0
    SPACE = 1
    #: a payload that breaks the contract, published as is (no seq of the device's)
    BAD_RAW = 2
    #: an event that takes the device's next seq but breaks the contract (a firmware
    #: bug): dead-lettered with its (device, seq), covered by the watermark
    BAD_IN_SEQUENCE = 3


class Fault(enum.IntFlag):
    NONE = 0
    #: the same copy published twice (same seq, same payload)
    DUPLICATE = 1
    #: published after the device's next event (out of order by seq)
    HOLD_BACK = 2
    #: a second read of the same car by the entry camera (two passages, two seqs)
    DOUBLE_READ = 4


class Event(msgspec.Struct, array_like=True, frozen=True):
    """One thing a device publishes, at ``at_ms`` of the replayed day."""

    at_ms: int
    device: str
    kind: Kind
    direction: str | None = None
    plate: str | None = None
    color: str | None = None
    confidence: float | None = None
    image_ref: str | None = None
    occupied: bool | None = None
    battery: int | None = None
    fault: Fault = Fault.NONE
    #: BAD_RAW and BAD_IN_SEQUENCE: the payload (``{seq}`` is filled in for the latter)
    payload: bytes | None = None
    #: BAD_* only: the topic it goes to
    topic: str | None = None


class Outage(msgspec.Struct, array_like=True, frozen=True):
    """A device off the network from ``start_ms`` to ``end_ms`` (day time); it keeps
    observing into its outbox and delivers the backlog when it is back."""

    device: str
    start_ms: int
    end_ms: int


class Payer(enum.StrEnum):
    #: pays the plate's bills through the app some time after leaving (先离后缴)
    APP = "app"
    #: a mandate at the provider: the platform deducts at the exit (无感支付)
    CONTACTLESS = "contactless"
    #: never pays
    NEVER = "never"


class Stay(msgspec.Struct, array_like=True, frozen=True):
    """A car's visit to a gated lot, as it happened (the reads are in the events)."""

    lot: str
    plate: str | None
    entry_ms: int
    exit_ms: int | None
    payer: Payer
    #: when the driver pays (APP), day time; None: after the replay or never
    pay_ms: int | None = None
    #: regular driver (an account) whose car this is, or None
    driver: int | None = None


class Driver(msgspec.Struct, array_like=True, frozen=True):
    """A regular driver with an account: a phone, one plate, maybe a mandate."""

    index: int
    phone: str
    plate: str
    contactless: bool


@dataclass(slots=True)
class LotDevices:
    """A lot of the replay and its devices."""

    lot_id: str
    kind: str
    capacity: int
    full_policy: str
    gates_in: list[str]
    gates_out: list[str]
    #: space id -> sensor device
    sensors: dict[str, str]
    #: device -> (lane or space) for topics
    places: dict[str, str]


class Partition(msgspec.Struct, frozen=True):
    """What one device process plays: its lots' devices and their events in day order."""

    index: int
    devices: list[str]
    events: list[Event]
    outages: list[Outage]


#: Shares of the day, named in one place (the report lists them).
SHARES: Final[dict[str, float]] = {
    "turnover_per_space": 4.0,
    "peak_fill": 0.86,
    "unplated_vehicles": 0.01,
    "missed_read": 0.005,
    "misread": 0.005,
    "low_confidence": 0.05,
    "double_read": 0.002,
    "new_energy_small": 0.15,
    "new_energy_large": 0.01,
    "duplicate": 0.005,
    "hold_back": 0.003,
    "flap": 0.003,
    "never_pay": 0.05,
    "regular_driver": 0.08,
    "contactless_driver": 0.5,
    "outage_devices": 0.01,
    "bad_input_per_10k": 2.0,
}
#: share of a lot's spaces taken at night, drawn per lot between these
NIGHT_FILL: Final[dict[str, tuple[float, float]]] = {
    "gated": (0.10, 0.35),
    "on_street": (0.05, 0.15),
}
