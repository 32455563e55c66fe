"""Pure logic of the occupancy core.

* `DeviceSeqs`: the reference model of the per-device dedup and gap detection
  the Lua library implements (a property test drives both with the same events).
* `plate_flags`: a plate shard's answer turned into `PlateFlags`.
* `offset_sample`, `counts_as_sample`, `median_offset`, `read_clock`: device clocks
  (contracts/mqtt.md, "Clocks"): which time of an event the platform uses.
* `needs_review`: a stay billed as usual but never deducted nor shown as owed.
* `plan`: applied-events stream entries -> the rows the persister writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from parking.ids import ulid
from parking.occupancy.model import (
    PassWindow,
    PlateFlags,
    ReviewLimits,
)


def session_id_for(device_id: str, seq: int, observed_at: datetime) -> str:
    """The id of the session an event would open: a ULID of the event's time whose random
    part is a hash of (device, seq). The same event always names the same session, so a
    batch retried after a crash cannot open it under a second id."""
    digest = hashlib.blake2b(f"{device_id}:{seq}".encode(), digest_size=10).digest()
    return f"s-{ulid(observed_at, digest)}"


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def month_of(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


# ------------------------------------------------------------ device clocks

#: Contract (mqtt.md "Clocks"): a device whose clock is off by more than this,
#: either way, has its events' times corrected and is flagged. NTP keeps a
#: healthy device within a second; 4G links add a few seconds of delivery delay.
CLOCK_TOLERANCE: Final = timedelta(seconds=60)
#: Offset samples kept per device; the offset is their median. Enough that one
#: copy delayed in a queue (which looks like a clock running behind) cannot move
#: the median, few enough that a clock put right (NTP back) is trusted again
#: after a handful of messages (OFFSET_SAMPLES // 2 + 1).
OFFSET_SAMPLES: Final = 7


def offset_sample(sent_at: datetime, received_at: datetime) -> int:
    """One sample of a device's clock offset: ``sent_at - received_at`` in ms."""
    return round((sent_at - received_at).total_seconds() * 1000)


def counts_as_sample(sample_ms: int, *, held: bool) -> bool:
    """Whether ``sent_at - received_at`` (ms) is a sample of the device's clock offset.

    It is the offset less the message's delay. A message that may have waited in
    the broker's queue for the gateway (``held``: it came with a reconnect or a full
    receive window) has a delay of any length: a device whose clock is right would
    look minutes behind after a backlog of minutes, and correcting its times by
    that would store every stay of the backlog late and price it so. Such a sample
    counts only when it shows the clock ahead (no wait makes ``sent_at`` later than
    ``received_at``); otherwise the device's offset stays what its earlier
    messages measured.
    """
    return not held or sample_ms > 0


def median_offset(samples_ms: Sequence[int]) -> int | None:
    """The device's offset in ms: the median of its recent samples (the lower middle
    of an even count, so the offset is always one that was measured)."""
    if not samples_ms:
        return None
    ordered = sorted(samples_ms)
    return ordered[(len(ordered) - 1) // 2]


@dataclass(frozen=True, slots=True)
class ClockReading:
    """Which time of an event the platform uses, and why."""

    #: the event's time for every decision and fee (the device's ``observed_at``,
    #: or corrected)
    at: datetime
    #: the device's offset (ms) when it sent ``sent_at``, None for a v1 message
    offset_ms: int | None
    #: ``offset`` (corrected by the device's offset), ``ahead`` (v1 message observed
    #: after it arrived: taken as received), or None (the device's clock is right)
    skew: str | None


def read_clock(
    *,
    observed_at: datetime,
    sent_at: datetime | None,
    received_at: datetime,
    offset_ms: int | None,
) -> ClockReading:
    """The contract's clock rules for one event (mqtt.md "Clocks", 2 and 3).

    ``offset_ms`` is the device's median offset including this message's sample
    (`median_offset`); it is ignored for a message without ``sent_at``.
    """
    limit_ms = CLOCK_TOLERANCE.total_seconds() * 1000
    if sent_at is not None and offset_ms is not None:
        if abs(offset_ms) > limit_ms:
            return ClockReading(
                observed_at - timedelta(milliseconds=offset_ms), offset_ms, "offset"
            )
        return ClockReading(observed_at, offset_ms, None)
    if observed_at - received_at > CLOCK_TOLERANCE:
        return ClockReading(received_at, None, "ahead")
    return ClockReading(observed_at, None, None)


def needs_review(entry: datetime, exit: datetime, fee_fen: int, limits: ReviewLimits) -> str | None:
    """Why a priced stay must be confirmed by an operator before it is deducted or
    shown as owed (``long_stay``, ``high_fee``), or None."""
    if exit - entry > limits.stay:
        return "long_stay"
    if fee_fen > limits.fee_fen:
        return "high_fee"
    return None


# ------------------------------------------------------------ dedup model


@dataclass
class DeviceSeqs:
    """Which seqs of one device were applied; mirrors ``mark_applied`` in the Lua library."""

    hw: int = 0
    max: int = 0
    above: set[int] = field(default_factory=set)

    def seen(self, seq: int) -> bool:
        return seq <= self.hw or seq in self.above

    def apply(self, seq: int) -> tuple[int, int] | None:
        """Record ``seq`` (not seen before); return the gap it revealed, if any."""
        gap = None
        if seq == self.hw + 1:
            self.hw = seq
            while self.hw + 1 in self.above:
                self.above.remove(self.hw + 1)
                self.hw += 1
        else:
            self.above.add(seq)
        if seq > self.max:
            if seq > self.max + 1 and seq - 1 > self.hw:
                gap = (max(self.max, self.hw) + 1, seq - 1)
            self.max = seq
        return gap


# ------------------------------------------------------------ plate flags


def plate_flags(pairs: Mapping[str, str]) -> PlateFlags:
    """Flags of a plate from its plate-shard hash (other fields are ignored)."""
    blacklisted = pairs.get("bl") or None
    arrears = pairs.get("arrears")
    passes: dict[str, PassWindow] = {}
    for name, value in pairs.items():
        if not name.startswith("pass:"):
            continue
        try:
            start, until, pass_id = value.split("|")
            passes[name[5:]] = PassWindow(pass_id, from_ms(int(start)), from_ms(int(until)))
        except ValueError:
            continue
    return PlateFlags(
        blacklisted=blacklisted,
        arrears_since=from_ms(int(arrears)) if arrears and arrears.isdigit() else None,
        passes=passes,
    )


def flag_pairs(flags: PlateFlags) -> list[tuple[str, str]]:
    """The plate-shard fields that store ``flags`` (inverse of `plate_flags`)."""
    pairs: list[tuple[str, str]] = []
    if flags.blacklisted:
        pairs.append(("bl", flags.blacklisted[:200]))
    if flags.arrears_since is not None:
        pairs.append(("arrears", str(to_ms(flags.arrears_since))))
    for scope, window in sorted(flags.passes.items()):
        pairs.append(
            (
                f"pass:{scope}",
                f"{to_ms(window.valid_from)}|{to_ms(window.valid_until)}|{window.pass_id}",
            )
        )
    return pairs
