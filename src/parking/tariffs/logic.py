"""The fee engine: contract v1 computation steps 1 to 7, pure and exact.

Instants are handled as integer microseconds since the Unix epoch (UTC), the
resolution of `datetime`, so every comparison and duration is exact: a stay one
microsecond longer than the grace period is billed. Units and rolling 24 h
cap windows are real elapsed time; bands and daily cap resets follow the wall
clock of the tariff's zone.

Wall-clock rules across a UTC offset change (never in Asia/Shanghai, which has
had one offset since 1991, but a tariff may name any IANA zone):
- the band active at an instant is the one containing the local clock time, so
  when clocks go back an hour the bands of that hour repeat, and when clocks go
  forward the band of the skipped hour is simply never active;
- a daily cycle starts at the first instant the local clock reads `reset_at` or
  later on that date, so each local date has exactly one reset even when its
  `reset_at` is repeated or skipped.
"""

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from parking.money import Fen
from parking.tariffs.model import (
    Band,
    Charge,
    CycleSum,
    OmittedCharges,
    Quote,
    QuoteError,
    Segment,
    Tariff,
    minute_of_day,
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_MINUTE_US: Final = 60_000_000
_DAY_US: Final = 24 * 60 * _MINUTE_US
# Offset changes are found by sampling the zone's offset this often and
# bisecting where it differs; that is exact as long as one zone never changes
# offset twice within the stride. The closest pair of changes since 1970 in
# the whole tz database is 167 h apart (Brazil 2000, Gaza), so 24 h leaves a
# wide margin while costing one lookup per day of stay.
_OFFSET_PROBE_US: Final = _DAY_US
# Reset instants of daily cycles are looked up this far around the stay, which
# covers the cycle that began before the billable start and the one after exit.
_CYCLE_MARGIN_US: Final = 3 * _DAY_US

_LONGEST_STEP_US: Final = timedelta.max // _MICROSECOND

_json_encoder: Final = msgspec.json.Encoder()

# (start_us, end_us, utc_offset_us): an interval of constant UTC offset.
_Piece = tuple[int, int, int]


def quote(tariff: Tariff, entry: datetime, exit: datetime, *, nev: bool) -> Quote:
    """Price a stay from `entry` to `exit` (aware datetimes) under `tariff`.

    Pure and deterministic: the same tariff, times and `nev` flag always give
    the same quote. `nev` marks a new-energy vehicle; it changes the price only
    when the tariff has an NEV policy (`Quote.nev_applied`).
    Raises `QuoteError` for naive times or `exit <= entry`.
    """
    entry_us = _instant_us("entry", entry)
    exit_us = _instant_us("exit", exit)
    if exit_us <= entry_us:
        # Step 1: a non-positive stay is a data error upstream (clock skew,
        # mismatched passages), never a free stay.
        raise QuoteError(f"exit {exit.isoformat()} is not after entry {entry.isoformat()}")
    zone = tariff.zone()
    policy = tariff.nev if nev else None
    if tariff.grace is not None:
        grace_minutes, deductible = tariff.grace.minutes, tariff.grace.deductible
    else:
        grace_minutes, deductible = 0, False
    if policy is not None:
        # The NEV grace replaces the ordinary one; a field the policy leaves
        # out keeps the ordinary value.
        if policy.grace_minutes is not None:
            grace_minutes = policy.grace_minutes
        if policy.grace_deductible is not None:
            deductible = policy.grace_deductible
    grace_us = grace_minutes * _MINUTE_US

    within_grace = exit_us - entry_us <= grace_us
    billable_us = entry_us + grace_us if deductible else entry_us
    charges: list[Charge] = []
    charge_times: list[int] = []
    segments: list[Segment] = []
    cycles: list[CycleSum] = []
    subtotal = 0
    if not within_grace:
        cap = tariff.cap
        daily = cap is not None and cap.cycle == "daily"
        margin = _CYCLE_MARGIN_US if daily else 0
        # One microsecond past exit so the exit instant has its own offset.
        pieces = _offset_pieces(zone, billable_us - margin, exit_us + margin + 1)
        clock = _Clock(zone, pieces)
        for start, end, band_index in _band_segments(tariff, pieces, billable_us, exit_us):
            segments.append(
                _charge_segment(
                    tariff, band_index, (start, end), billable_us, clock, charges, charge_times
                )
            )
        if cap is None:
            subtotal = sum(charge.fen for charge in charges)
        else:
            if daily:
                windows = _daily_windows(pieces, cap.reset_minute, billable_us, exit_us)
            else:
                windows = _rolling_windows(entry_us, billable_us, exit_us)
            cycles = _cap_cycles(windows, charges, charge_times, cap.fen, clock)
            subtotal = sum(cycle.fen for cycle in cycles)

    total = subtotal
    if policy is not None:
        # Contract step 6: the NEV share is rounded down to the fen (floor), in
        # the driver's favour; integer division is exact for these non-negative
        # integers.
        total = subtotal * policy.percent // 100
    return Quote(
        tariff_id=tariff.id,
        currency=tariff.currency,
        total_fen=total,
        entry=_local(entry_us, zone),
        exit=_local(exit_us, zone),
        nev=nev,
        nev_applied=policy is not None,
        grace_minutes=grace_minutes,
        grace_deductible=deductible,
        within_grace=within_grace,
        billable_start=None if within_grace else _local(billable_us, zone),
        segments=tuple(segments),
        charges=tuple(charges),
        cycles=tuple(cycles),
        subtotal_fen=subtotal,
        nev_percent=None if policy is None else policy.percent,
    )


#: Charges a quote shown to a person (API, CLI) lists at most. A day at the
#: finest unit tariffs use (15 min) is 96 charges, so stays up to two days are
#: listed in full; a stay of months is tens of thousands of units, a response
#: of megabytes that nobody reads line by line. Beyond this the rest is summed
#: in `Quote.omitted_charges`; segments and cap cycles still break the money
#: down by band and by day.
MAX_LISTED_CHARGES: Final = 200


def listed(quote: Quote, limit: int = MAX_LISTED_CHARGES) -> Quote:
    """``quote`` with at most ``limit`` charges listed and the others summed.

    Totals, segments and cycles are unchanged; the listed charges plus
    ``omitted_charges.fen`` add up to what all the charges did.
    """
    if limit < 1:
        raise ValueError("a quote lists at least one charge")
    if len(quote.charges) <= limit:
        return quote
    rest = quote.charges[limit:]
    return msgspec.structs.replace(
        quote,
        charges=quote.charges[:limit],
        omitted_charges=OmittedCharges(
            count=len(rest),
            fen=sum(c.fen for c in rest),
            first_at=rest[0].at,
            last_at=rest[-1].at,
        ),
    )


def quote_to_json(quote: Quote) -> bytes:
    """The quote as JSON (UTF-8), the same breakdown the CLI and the API return."""
    return _json_encoder.encode(quote)


class _Clock:
    """Turns instants into local datetimes with the zone's offset at that instant.

    The datetimes carry a fixed-offset tzinfo rather than the ZoneInfo: Python
    compares two datetimes of one tzinfo by wall time, ignoring `fold`, so in
    the repeated hour of a DST zone 02:04 (first pass) would sort after 02:00
    (second pass). With fixed offsets every comparison is by instant, and the
    JSON (`+08:00`) is the same.
    """

    __slots__ = ("_starts", "_tzinfos", "_zone", "end", "fixed")

    def __init__(self, zone: ZoneInfo, pieces: list[_Piece]) -> None:
        self._zone = zone
        self._starts = [start for start, _, _ in pieces]
        self._tzinfos = [_fixed_offset(offset) for _, _, offset in pieces]
        self.end = pieces[-1][1]
        # True when the zone keeps one UTC offset over the whole stay: local
        # times can then be stepped by adding units, far cheaper than
        # converting every instant.
        self.fixed = len(pieces) == 1

    def local(self, instant_us: int) -> datetime:
        if not self._starts[0] <= instant_us < self.end:
            return _local(instant_us, self._zone)
        piece = bisect_right(self._starts, instant_us) - 1
        return (_EPOCH + timedelta(microseconds=instant_us)).astimezone(self._tzinfos[piece])


@cache
def _fixed_offset(offset_us: int) -> timezone:
    return timezone(timedelta(microseconds=offset_us))


def _instant_us(label: str, moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise QuoteError(f"{label} {moment.isoformat()} has no UTC offset; pass an aware datetime")
    return (moment - _EPOCH) // _MICROSECOND


def _offset_us(zone: ZoneInfo, instant_us: int) -> int:
    offset = (_EPOCH + timedelta(microseconds=instant_us)).astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset // _MICROSECOND


def _local(instant_us: int, zone: ZoneInfo) -> datetime:
    """The instant in `zone`'s offset at that instant, as a fixed-offset datetime."""
    return (_EPOCH + timedelta(microseconds=instant_us)).astimezone(
        _fixed_offset(_offset_us(zone, instant_us))
    )


def _offset_pieces(zone: ZoneInfo, start_us: int, end_us: int) -> list[_Piece]:
    """Split [start, end) into intervals of constant UTC offset."""
    pieces: list[_Piece] = []
    piece_start = start_us
    offset = _offset_us(zone, start_us)
    probe = start_us
    while probe < end_us - 1:
        nxt = min(probe + _OFFSET_PROBE_US, end_us - 1)
        if _offset_us(zone, nxt) != offset:
            low, high = probe, nxt  # offset(low) == offset, offset(high) differs
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_us(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            pieces.append((piece_start, high, offset))
            piece_start, offset = high, _offset_us(zone, high)
        probe = nxt
    pieces.append((piece_start, end_us, offset))
    return pieces


def _day_map(bands: Sequence[Band]) -> tuple[list[int], list[int]]:
    """Start of each run of one band over a local day, from midnight: (starts_us, band)."""
    for index, band in enumerate(bands):
        if band.whole_day:
            return [0], [index]
    runs = sorted((minute_of_day(band.start), index) for index, band in enumerate(bands))
    if runs[0][0] != 0:
        # The band that starts last wraps past midnight and owns the early hours.
        runs.insert(0, (0, runs[-1][1]))
    return [minute * _MINUTE_US for minute, _ in runs], [index for _, index in runs]


def _band_segments(
    tariff: Tariff, pieces: list[_Piece], start_us: int, end_us: int
) -> list[tuple[int, int, int]]:
    """Contract step 3: [start, end) as maximal (start, end, band index) segments."""
    day_starts, day_bands = _day_map(tariff.bands)
    runs = len(day_starts)
    changes: list[tuple[int, int]] = []
    for piece_start, piece_end, offset in pieces:
        low, high = max(piece_start, start_us), min(piece_end, end_us)
        if low >= high:
            continue
        # Within a piece the wall clock is the instant shifted by the offset.
        wall_low, wall_high = low + offset, high + offset
        day, time_of_day = divmod(wall_low, _DAY_US)
        run = bisect_right(day_starts, time_of_day) - 1
        changes.append((low, day_bands[run]))
        while True:
            run += 1
            if run == runs:
                day, run = day + 1, 0
            wall = day * _DAY_US + day_starts[run]
            if wall >= wall_high:
                break
            changes.append((wall - offset, day_bands[run]))
    segments: list[tuple[int, int, int]] = []
    for at, band_index in changes:
        if segments and segments[-1][2] == band_index:
            continue
        if segments:
            segments[-1] = (segments[-1][0], at, segments[-1][2])
        segments.append((at, end_us, band_index))
    return segments


def _charge_segment(
    tariff: Tariff,
    band_index: int,
    segment: tuple[int, int],
    billable_us: int,
    clock: _Clock,
    charges: list[Charge],
    charge_times: list[int],
) -> Segment:
    """Contract step 4: append the segment's charges (and their instants), return its sums."""
    band = tariff.bands[band_index]
    start_us, end_us = segment
    first = len(charges)
    if band.flat is not None:
        charges.append(
            Charge(
                at=clock.local(start_us),
                band=band.name,
                tier="flat",
                unit_fen=band.flat,
                fen=band.flat,
                partial=False,
            )
        )
        charge_times.append(start_us)
    else:
        assert band.tiers is not None  # a band has exactly one of flat and tiers
        afters = [tier.after_minutes * _MINUTE_US for tier in band.tiers]
        units = [tier.unit_minutes * _MINUTE_US for tier in band.tiers]
        # A unit longer than timedelta can hold cannot recur inside a stay.
        steps = [timedelta(microseconds=min(unit, _LONGEST_STEP_US)) for unit in units]
        partial_charged = band.partial_unit == "charge"
        at_us = start_us
        at = clock.local(start_us)
        while at_us < end_us:
            # Tiers are stay-relative: measured from the billable start.
            index = bisect_right(afters, at_us - billable_us) - 1
            tier = band.tiers[index]
            following = at_us + units[index]
            partial = following > end_us
            charges.append(
                Charge(
                    at=at,
                    band=band.name,
                    tier=index,
                    unit_fen=tier.unit_fen,
                    fen=0 if partial and not partial_charged else tier.unit_fen,
                    partial=partial,
                )
            )
            charge_times.append(at_us)
            at_us = following
            if at_us < end_us:
                # Stepping only while inside the stay keeps huge units from
                # overflowing datetime.
                at = at + steps[index] if clock.fixed else clock.local(at_us)
    raw = 0
    for charge in charges[first:]:
        raw += charge.fen
    fen = raw
    if band.segment_cap_fen is not None and raw > band.segment_cap_fen:
        fen = room = band.segment_cap_fen
        # The cap is spent in time order: once reached, later charges of the
        # segment shrink or drop to 0, so each cap cycle sums what was charged.
        for i in range(first, len(charges)):
            charge = charges[i]
            if charge.fen > room:
                charges[i] = msgspec.structs.replace(charge, fen=room)
            room -= charges[i].fen
    return Segment(
        start=clock.local(start_us),
        end=clock.local(end_us),
        band=band.name,
        raw_fen=raw,
        fen=fen,
    )


def _rolling_windows(entry_us: int, start_us: int, end_us: int) -> list[tuple[int, int]]:
    """24 h windows counted from entry that overlap [start, end)."""
    first = (start_us - entry_us) // _DAY_US
    last = (end_us - 1 - entry_us) // _DAY_US
    return [(entry_us + k * _DAY_US, entry_us + (k + 1) * _DAY_US) for k in range(first, last + 1)]


def _daily_windows(
    pieces: list[_Piece], reset_minute: int, start_us: int, end_us: int
) -> list[tuple[int, int]]:
    """Local-day windows bounded by the reset time that overlap [start, end)."""

    def reset(wall_us: int) -> int:
        # The first instant whose local clock reads wall_us or later.
        for piece_start, piece_end, offset in pieces:
            candidate = max(piece_start, wall_us - offset)
            if candidate < piece_end:
                return candidate
        return pieces[-1][1]

    first_day = (start_us + _offset_at(pieces, start_us)) // _DAY_US - 1
    last_day = (end_us - 1 + _offset_at(pieces, end_us - 1)) // _DAY_US + 1
    resets = [
        reset(day * _DAY_US + reset_minute * _MINUTE_US) for day in range(first_day, last_day + 1)
    ]
    return [
        (low, high)
        for low, high in pairwise(resets)
        if low < high and high > start_us and low < end_us
    ]


def _offset_at(pieces: list[_Piece], instant_us: int) -> int:
    for piece_start, piece_end, offset in pieces:
        if piece_start <= instant_us < piece_end:
            return offset
    return pieces[-1][2]


def _cap_cycles(
    windows: list[tuple[int, int]],
    charges: list[Charge],
    charge_times: list[int],
    cap_fen: Fen,
    clock: _Clock,
) -> list[CycleSum]:
    """Contract step 5: sum charges per cycle (by charge time) and cap each sum."""
    sums = [0] * len(windows)
    window = 0
    for charge, at_us in zip(charges, charge_times, strict=True):
        while at_us >= windows[window][1]:
            window += 1
        sums[window] += charge.fen
    return [
        CycleSum(
            start=clock.local(low),
            end=clock.local(high),
            raw_fen=raw,
            fen=min(raw, cap_fen),
        )
        for (low, high), raw in zip(windows, sums, strict=True)
    ]
