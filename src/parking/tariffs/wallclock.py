"""Instants and the wall clock of a tariff's zone, for the fee engine (pure).

Instants are integer microseconds since the Unix epoch (UTC), the resolution
of `datetime`, so every comparison and duration is exact. A stay is cut into
pieces of constant UTC offset; within a piece the wall clock is the instant
shifted by the offset, which is how bands, local dates and daily cap resets are
found (see `parking.tariffs.logic` for the rules across an offset change).
"""

from bisect import bisect_right
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo

from parking.tariffs.model import QuoteError

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)
MINUTE_US: Final = 60_000_000
DAY_US: Final = 24 * 60 * MINUTE_US
# Offset changes are found by sampling the zone's offset this often and
# bisecting where it differs; that is exact as long as one zone never changes
# offset twice within the stride. The closest pair of changes since 1970 in
# the whole tz database is 167 h apart (Brazil 2000, Gaza), so 24 h leaves a
# wide margin while costing one lookup per day of stay.
_OFFSET_PROBE_US: Final = DAY_US

#: (start_us, end_us, utc_offset_us): an interval of constant UTC offset.
Piece = tuple[int, int, int]


class Clock:
    """Turns instants into local datetimes with the zone's offset at that instant.

    The datetimes carry a fixed-offset tzinfo rather than the ZoneInfo: Python
    compares two datetimes of one tzinfo by wall time, ignoring `fold`, so in
    the repeated hour of a DST zone 02:04 (first pass) would sort after 02:00
    (second pass). With fixed offsets every comparison is by instant, and the
    JSON (`+08:00`) is the same.
    """

    __slots__ = ("_starts", "_tzinfos", "_zone", "end", "fixed")

    def __init__(self, zone: ZoneInfo, pieces: list[Piece]) -> None:
        self._zone = zone
        self._starts = [start for start, _, _ in pieces]
        self._tzinfos = [fixed_offset(offset) for _, _, offset in pieces]
        self.end = pieces[-1][1]
        # True when the zone keeps one UTC offset over the whole stay: local
        # times can then be stepped by adding units, far cheaper than
        # converting every instant.
        self.fixed = len(pieces) == 1

    def local(self, instant_us: int) -> datetime:
        if not self._starts[0] <= instant_us < self.end:
            return local_at(instant_us, self._zone)
        piece = bisect_right(self._starts, instant_us) - 1
        return (EPOCH + timedelta(microseconds=instant_us)).astimezone(self._tzinfos[piece])


@cache
def fixed_offset(offset_us: int) -> timezone:
    return timezone(timedelta(microseconds=offset_us))


def instant_of(label: str, moment: datetime) -> int:
    """The aware `moment` in microseconds since the epoch; QuoteError names `label` if naive."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise QuoteError(f"{label} {moment.isoformat()} has no UTC offset; pass an aware datetime")
    return (moment - EPOCH) // MICROSECOND


def offset_us(zone: ZoneInfo, instant_us: int) -> int:
    offset = (EPOCH + timedelta(microseconds=instant_us)).astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset // MICROSECOND


def local_at(instant_us: int, zone: ZoneInfo) -> datetime:
    """The instant in `zone`'s offset at that instant, as a fixed-offset datetime."""
    return (EPOCH + timedelta(microseconds=instant_us)).astimezone(
        fixed_offset(offset_us(zone, instant_us))
    )


def offset_pieces(zone: ZoneInfo, start_us: int, end_us: int) -> list[Piece]:
    """Split [start, end) into intervals of constant UTC offset."""
    pieces: list[Piece] = []
    piece_start = start_us
    offset = offset_us(zone, start_us)
    probe = start_us
    while probe < end_us - 1:
        nxt = min(probe + _OFFSET_PROBE_US, end_us - 1)
        if offset_us(zone, nxt) != offset:
            low, high = probe, nxt  # offset(low) == offset, offset(high) differs
            while high - low > 1:
                middle = (low + high) // 2
                if offset_us(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            pieces.append((piece_start, high, offset))
            piece_start, offset = high, offset_us(zone, high)
        probe = nxt
    pieces.append((piece_start, end_us, offset))
    return pieces


def rolling_windows(entry_us: int, start_us: int, end_us: int) -> list[tuple[int, int]]:
    """24 h windows counted from entry that overlap [start, end)."""
    first = (start_us - entry_us) // DAY_US
    last = (end_us - 1 - entry_us) // DAY_US
    return [(entry_us + k * DAY_US, entry_us + (k + 1) * DAY_US) for k in range(first, last + 1)]


def daily_windows(
    pieces: list[Piece], reset_minute: int, start_us: int, end_us: int
) -> list[tuple[int, int]]:
    """Local-day windows bounded by the reset time that overlap [start, end)."""

    def reset(wall_us: int) -> int:
        # The first instant whose local clock reads wall_us or later.
        for piece_start, piece_end, offset in pieces:
            candidate = max(piece_start, wall_us - offset)
            if candidate < piece_end:
                return candidate
        return pieces[-1][1]

    first_day = (start_us + offset_at(pieces, start_us)) // DAY_US - 1
    last_day = (end_us - 1 + offset_at(pieces, end_us - 1)) // DAY_US + 1
    resets = [
        reset(day * DAY_US + reset_minute * MINUTE_US) for day in range(first_day, last_day + 1)
    ]
    return [
        (low, high)
        for low, high in pairwise(resets)
        if low < high and high > start_us and low < end_us
    ]


def offset_at(pieces: list[Piece], instant_us: int) -> int:
    for piece_start, piece_end, offset in pieces:
        if piece_start <= instant_us < piece_end:
            return offset
    return pieces[-1][2]
