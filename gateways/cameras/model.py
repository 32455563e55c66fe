"""What a camera push is, whatever its maker: a recognition, a heartbeat, or nothing for us.

Each vendor module decodes its wire format into these (or raises ``BadPush`` with the
reason a dead letter keeps); the adapter turns a ``Recognition`` into the contract's
``Passage`` and never looks at the vendor's format again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from parking.devices.messages import PlateColor


class BadPush(Exception):
    """A push that is not what its vendor sends. ``reason`` starts with a code
    (``bad_json: ...``), as every dead letter's does."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Picture:
    kind: Literal["scene", "plate"]
    data: bytes


@dataclass(frozen=True, slots=True)
class Recognition:
    """One read of a car at the camera's lane."""

    #: what names the camera in the push (Vzenith ``serialno``; Hikvision's
    #: ``deviceUUID``/``deviceID``/``macAddress``: any of them may be its serial)
    serials: tuple[str, ...]
    #: what the vendor repeats when it sends this record again (its retries and backlog)
    push_key: str
    #: the camera's clock when it saw the car (input, never truth: contracts/mqtt.md "Clocks")
    observed_at: datetime
    #: sent when it was seen (False: a record from the camera's backlog after an outage:
    #: its barrier is never opened by the reply, and its time is not a clock sample)
    live: bool
    #: as read; None when the camera saw no plate (无牌车)
    plate: str | None
    plate_color: PlateColor | None
    #: 0..1
    confidence: float | None
    #: the vendor's record as it came, without its pictures (kept with the event)
    record: bytes
    pictures: tuple[Picture, ...] = ()
    #: pictures the push carried that are not pictures (kept out, the read is not)
    refused_pictures: tuple[str, ...] = ()
    #: the vendor's own id of the record (Vzenith ``plateid``), echoed in its reply
    record_id: int | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The camera is alive (nothing happened at the lane)."""

    serials: tuple[str, ...]
    firmware: str | None = None


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A push the vendor sends that the platform does not act on (IO input changes, RS-485
    data, snapshots): answered so the camera does not resend it, and counted."""

    kind: str
    serials: tuple[str, ...] = field(default=())


Push = Recognition | Heartbeat | Unmapped
