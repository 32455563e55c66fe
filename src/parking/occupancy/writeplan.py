"""What one persister transaction writes (``WritePlan``) and what it reads from the
applied-events streams (``StreamEntry``); ``plan`` fills the one from the others."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from parking.sessions.model import SessionChange


@dataclass(frozen=True, slots=True)
class StreamEntry:
    stream: str
    entry_id: str
    fields: Mapping[bytes, bytes]

    @property
    def source(self) -> str:
        return f"{self.stream}/{self.entry_id}"

    def get(self, name: str) -> str:
        return self.fields.get(name.encode(), b"").decode("utf-8")

    def raw(self, name: str) -> bytes:
        return self.fields.get(name.encode(), b"")


@dataclass
class WritePlan:
    """Rows for one persister transaction. Rows keyed by (device, seq) are written only
    for pairs that `device_events` did not hold yet."""

    #: (device, seq, kind, observed_at, received_at, event_at, sent_at, clock_offset_ms)
    device_events: list[
        tuple[
            str, int, str, datetime | None, datetime, datetime | None, datetime | None, int | None
        ]
    ] = field(default_factory=list)
    passages: list[tuple[object, ...]] = field(default_factory=list)
    space_events: list[tuple[object, ...]] = field(default_factory=list)
    space_states: list[tuple[object, ...]] = field(default_factory=list)
    sessions: list[SessionChange] = field(default_factory=list)
    #: exits without entry completed by an entry that arrived after them (late entries)
    late_entries: list[SessionChange] = field(default_factory=list)
    anomalies: list[tuple[object, ...]] = field(default_factory=list)
    dead_letters: list[tuple[object, ...]] = field(default_factory=list)
    #: devices whose offline anomaly an online status resolves
    back_online: list[str] = field(default_factory=list)
    #: device -> its clock at its latest event here: (offset ms or None, skewed, received)
    clocks: dict[str, tuple[int | None, bool, datetime]] = field(default_factory=dict)
    #: device -> its lot, for every device with a gate or sensor event
    device_lots: dict[str, str] = field(default_factory=dict)
    #: device -> hash tag of its lot shard, for every device with a stored event
    #: (their watermarks may move)
    devices: dict[str, str] = field(default_factory=dict)
    months: set[datetime] = field(default_factory=set)
    #: entries that could not be understood: (entry, why); left pending, then dead-lettered
    poison: list[tuple[StreamEntry, str]] = field(default_factory=list)
