"""The fee engine: contract v2 computation steps 1 to 7, pure and exact.

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
  `reset_at` is repeated or skipped;
- with `schedules`, a local date's schedule is decided once, from the date the
  wall clock shows (a repeated hour belongs to its date, a skipped one to none).

Contract v2 inputs besides the document and the stay: the calendars that class
local dates into day types (for `schedules`), and the index of this stay among
the plate's stays of the same local day in the same grace_group (for
`nev.daily_grace`). Both come from the caller, so the engine stays pure.
"""

from bisect import bisect_right
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from parking.money import Fen
from parking.tariffs.calendar import Calendar, DayClass, classify
from parking.tariffs.model import (
    Band,
    Cap,
    Charge,
    CycleSum,
    FreeRemainder,
    NevPolicy,
    OmittedCharges,
    Quote,
    QuoteError,
    Segment,
    Tariff,
    TiersRestart,
    minute_of_day,
)
from parking.tariffs.wallclock import (
    DAY_US,
    EPOCH,
    MICROSECOND,
    MINUTE_US,
    Clock,
    Piece,
    daily_windows,
    instant_of,
    local_at,
    offset_pieces,
    rolling_windows,
)

_EPOCH_DATE: Final = EPOCH.date()
# Reset instants of daily cycles are looked up this far around the stay, which
# covers the cycle that began before the billable start and the one after exit.
_CYCLE_MARGIN_US: Final = 3 * DAY_US

_LONGEST_STEP_US: Final = timedelta.max // MICROSECOND
#: `next_step` looks this far ahead for the next band change; a stay in one band
#: that long (a whole-day band, no schedules) is simply priced again then.
_STEP_HORIZON_US: Final = 2 * DAY_US

#: A unit of a tiered band: (start, end, free while it lasted at most this long),
#: instants and lengths in microseconds.
_Unit = tuple[int, int, int]

_json_encoder: Final = msgspec.json.Encoder()


def quote(
    tariff: Tariff,
    entry: datetime,
    exit: datetime,
    *,
    nev: bool,
    calendars: Calendar | Sequence[Calendar] = (),
    stay_of_day: int = 1,
) -> Quote:
    """Price a stay from `entry` to `exit` (aware datetimes) under `tariff`.

    Pure and deterministic: the same tariff, times, `nev` flag, calendars and
    stay index always give the same quote. `nev` marks a new-energy vehicle;
    it changes the price only when the tariff has an NEV policy
    (`Quote.nev_applied`).

    `calendars` class the local dates of a document with `schedules` into
    workday, rest day and holiday: a date takes the first calendar that
    covers it, and a date none covers is classed by weekday alone (listed in
    `Quote.dates_by_weekday`). `stay_of_day` is this stay's place (1 for the
    first) among the plate's stays whose entry falls on the same local day
    under tariffs of the same `Tariff.group`; it picks the `nev.daily_grace`
    entry. Documents without these fields ignore both.

    Raises `QuoteError` for naive times, `exit <= entry` or `stay_of_day < 1`.
    """
    entry_us, exit_us, policy, document, grace_minutes, deductible = _stay(
        tariff, entry, exit, nev=nev, stay_of_day=stay_of_day
    )
    zone = document.zone()
    grace_us = grace_minutes * MINUTE_US

    within_grace = exit_us - entry_us <= grace_us
    billable_us = entry_us + grace_us if deductible else entry_us
    priced = _Priced()
    if not within_grace:
        if isinstance(calendars, Calendar):
            calendars = (calendars,)
        priced = _price(document, zone, (entry_us, billable_us, exit_us), calendars)

    total = priced.subtotal
    if policy is not None:
        # Contract step 6: the NEV share is rounded down to the fen (floor), in
        # the driver's favour; integer division is exact for these non-negative
        # integers.
        total = priced.subtotal * policy.percent // 100
    return Quote(
        tariff_id=tariff.id,
        currency=tariff.currency,
        total_fen=total,
        entry=local_at(entry_us, zone),
        exit=local_at(exit_us, zone),
        nev=nev,
        nev_applied=policy is not None,
        grace_minutes=grace_minutes,
        grace_deductible=deductible,
        within_grace=within_grace,
        billable_start=None if within_grace else local_at(billable_us, zone),
        segments=tuple(priced.segments),
        charges=tuple(priced.charges),
        cycles=tuple(priced.cycles),
        subtotal_fen=priced.subtotal,
        nev_percent=None if policy is None else policy.percent,
        tiers_restart=document.restart,
        nev_tariff_id=None if document is tariff else document.id,
        stay_of_day=(
            stay_of_day if policy is not None and policy.daily_grace is not msgspec.UNSET else None
        ),
        calendars=priced.calendars,
        dates_by_weekday=priced.dates_by_weekday,
    )


def next_step(
    tariff: Tariff,
    entry: datetime,
    at: datetime,
    *,
    nev: bool,
    calendars: Calendar | Sequence[Calendar] = (),
    stay_of_day: int = 1,
) -> datetime:
    """The first instant after `at` at which a stay from `entry` may cost more than
    one ending at `at`: `quote` gives the same total for every exit from `at` up to,
    not including, this instant (the arguments as `quote` takes them).

    It is where the price would next change by the units, bands and grace alone: a
    cap, a segment cap or the NEV share's rounding may absorb that change, and then
    the total changes later, never earlier. At most two days after `at`. Relies on
    the total never decreasing as the exit moves later (a property the engine's
    tests check). Raises `QuoteError` as `quote` does.
    """
    entry_us, at_us, _, document, grace_minutes, deductible = _stay(
        tariff, entry, at, nev=nev, stay_of_day=stay_of_day
    )
    zone = document.zone()
    grace_us = grace_minutes * MINUTE_US
    horizon_us = at_us + _STEP_HORIZON_US
    if isinstance(calendars, Calendar):
        calendars = (calendars,)
    if at_us - entry_us <= grace_us:
        # The first exit beyond the grace period is billed.
        return local_at(min(entry_us + grace_us + 1, horizon_us), zone)
    billable_us = entry_us + grace_us if deductible else entry_us
    step_us = horizon_us
    last = _price(document, zone, (entry_us, billable_us, at_us), calendars).last_unit
    if last is not None:
        start_us, end_us, free_up_to_us = last
        if end_us > at_us and at_us - start_us <= free_up_to_us:
            # Cut short at `at` and free so far: charged once it lasts longer than
            # the remainder rule allows, or once it is whole.
            step_us = min(start_us + free_up_to_us + 1, end_us)
        else:
            # Whole or charged already: the next unit starts with the first exit
            # past its end.
            step_us = end_us + 1
    # A new band (its flat fee, or its first unit) with the first exit past its start.
    pieces = offset_pieces(zone, at_us - 1, horizon_us + 1)
    segments = _band_segments(_Days(document, calendars), pieces, at_us - 1, horizon_us)
    if len(segments) > 1:
        step_us = min(step_us, segments[1][0] + 1)
    return local_at(min(step_us, horizon_us), zone)


def _stay(
    tariff: Tariff, entry: datetime, exit: datetime, *, nev: bool, stay_of_day: int
) -> tuple[int, int, NevPolicy | None, Tariff, int, bool]:
    """Step 1 and what steps 2 to 5 run on: entry and exit in µs, the NEV policy if it
    applies, the document priced (v2 `nev.tariff` replaces the tariff) and its grace
    (minutes, deductible). Raises `QuoteError` for naive times, `exit <= entry` or
    `stay_of_day < 1`."""
    entry_us = instant_of("entry", entry)
    exit_us = instant_of("exit", exit)
    if exit_us <= entry_us:
        # Step 1: a non-positive stay is a data error upstream (clock skew,
        # mismatched passages), never a free stay.
        raise QuoteError(f"exit {exit.isoformat()} is not after entry {entry.isoformat()}")
    if stay_of_day < 1:
        raise QuoteError(f"stay_of_day counts the day's stays from 1, got {stay_of_day}")
    policy = tariff.nev if nev else None
    document = tariff
    if policy is not None and isinstance(policy.tariff, Tariff):
        document = policy.tariff
    grace_minutes, deductible = _grace(document, policy, stay_of_day)
    return entry_us, exit_us, policy, document, grace_minutes, deductible


def _grace(document: Tariff, policy: NevPolicy | None, stay_of_day: int) -> tuple[int, bool]:
    """Step 2's grace (minutes, deductible) for this vehicle and stay of the day."""
    if document.grace is not None:
        minutes, deductible = document.grace.minutes, document.grace.deductible
    else:
        minutes, deductible = 0, False
    if policy is None:
        return minutes, deductible
    if isinstance(policy.daily_grace, tuple) and stay_of_day <= len(policy.daily_grace):
        daily = policy.daily_grace[stay_of_day - 1]
        return daily.minutes, daily.deductible
    # The NEV grace replaces the ordinary one; a field the policy leaves out
    # keeps the ordinary value.
    if policy.grace_minutes is not None:
        minutes = policy.grace_minutes
    if policy.grace_deductible is not None:
        deductible = policy.grace_deductible
    return minutes, deductible


class _Priced:
    """Steps 3 to 5 of a billable stay: its segments, charges, cycles and sum."""

    __slots__ = (
        "calendars",
        "charges",
        "cycles",
        "dates_by_weekday",
        "last_unit",
        "segments",
        "subtotal",
    )

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.charges: list[Charge] = []
        self.cycles: list[CycleSum] = []
        self.subtotal: Fen = 0
        self.calendars: tuple[str, ...] = ()
        self.dates_by_weekday: tuple[date, ...] = ()
        #: the stay's last unit (start, end, free up to), for `next_step`
        self.last_unit: _Unit | None = None


def _price(
    document: Tariff,
    zone: ZoneInfo,
    stay: tuple[int, int, int],
    calendars: Sequence[Calendar],
) -> _Priced:
    entry_us, billable_us, exit_us = stay
    priced = _Priced()
    cap = document.cap
    daily = cap is not None and cap.cycle == "daily"
    margin = _CYCLE_MARGIN_US if daily else 0
    # One microsecond past exit so the exit instant has its own offset.
    pieces = offset_pieces(zone, billable_us - margin, exit_us + margin + 1)
    clock = Clock(zone, pieces)
    windows: list[tuple[int, int]] = []
    if cap is not None:
        if daily:
            windows = daily_windows(pieces, cap.reset_minute, billable_us, exit_us)
        else:
            windows = rolling_windows(entry_us, billable_us, exit_us)
    days = _Days(document, calendars)
    origins = _Origins(document.restart, billable_us, windows, clock)
    charge_times: list[int] = []
    for start, end, schedule, band_index, day in _band_segments(days, pieces, billable_us, exit_us):
        band = days.bands[schedule][band_index]
        raw, fen, priced.last_unit = _charge_segment(
            band, (start, end), origins, clock, priced.charges, charge_times
        )
        segment = Segment(
            start=clock.local(start),
            end=clock.local(end),
            band=band.name,
            raw_fen=raw,
            fen=fen,
        )
        kind = days.classes.get(day)
        if kind is not None:
            segment = msgspec.structs.replace(
                segment,
                schedule=schedule,
                date=_EPOCH_DATE + timedelta(days=day),
                day_type=kind.day_type,
                calendar=kind.calendar,
            )
        priced.segments.append(segment)
    if cap is None:
        priced.subtotal = sum(charge.fen for charge in priced.charges)
    else:
        priced.cycles = _cap_cycles(windows, priced.charges, charge_times, cap, clock)
        priced.subtotal = sum(cycle.fen for cycle in priced.cycles)
    if days.classes:  # a document with schedules: say how its dates were classed
        consulted = sorted(days.classes.items())
        priced.calendars = tuple(
            dict.fromkeys(kind.calendar for _, kind in consulted if kind.calendar is not None)
        )
        priced.dates_by_weekday = tuple(
            _EPOCH_DATE + timedelta(days=day) for day, kind in consulted if kind.calendar is None
        )
    return priced


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


def _day_map(bands: Sequence[Band]) -> tuple[list[int], list[int]]:
    """Start of each run of one band over a local day, from midnight: (starts_us, band)."""
    for index, band in enumerate(bands):
        if band.whole_day:
            return [0], [index]
    runs = sorted((minute_of_day(band.start), index) for index, band in enumerate(bands))
    if runs[0][0] != 0:
        # The band that starts last wraps past midnight and owns the early hours.
        runs.insert(0, (0, runs[-1][1]))
    return [minute * MINUTE_US for minute, _ in runs], [index for _, index in runs]


class _Days:
    """The bands of each local day: a document's one list, or with `schedules`
    the list of the schedule its date uses (decided once per date)."""

    __slots__ = ("_calendars", "_of_day", "_schedules", "bands", "classes", "maps")

    def __init__(self, document: Tariff, calendars: Sequence[Calendar]) -> None:
        self._schedules = document.day_schedules
        self._calendars = calendars
        if self._schedules is None:
            self.bands = [document.bands]
        else:
            self.bands = [schedule.bands for schedule in self._schedules]
        self.maps = [_day_map(bands) for bands in self.bands]
        self._of_day: dict[int, int] = {}
        #: local day number (days since 1970-01-01) -> its class, for the days
        #: whose schedule was decided
        self.classes: dict[int, DayClass] = {}

    def schedule(self, day: int) -> int:
        """The index of the schedule of local day number `day` (0 without schedules)."""
        if self._schedules is None:
            return 0
        found = self._of_day.get(day)
        if found is None:
            local = _EPOCH_DATE + timedelta(days=day)
            kind = classify(local, self._calendars)
            self.classes[day] = kind
            # A date uses the first schedule one of whose entries matches it;
            # the document names every day type, so one always does.
            found = next(
                i
                for i, schedule in enumerate(self._schedules)
                if schedule.matches(local, kind.day_type)
            )
            self._of_day[day] = found
        return found


def _band_segments(
    days: _Days, pieces: list[Piece], start_us: int, end_us: int
) -> list[tuple[int, int, int, int, int]]:
    """Contract step 3: [start, end) as maximal (start, end, schedule, band, day) segments.

    `day` is the local day number of the segment's start. A segment is one
    band of one schedule, so with schedules it also ends at the midnight
    before a date that uses another schedule.
    """
    changes: list[tuple[int, int, int, int]] = []
    for piece_start, piece_end, offset in pieces:
        low, high = max(piece_start, start_us), min(piece_end, end_us)
        if low >= high:
            continue
        # Within a piece the wall clock is the instant shifted by the offset.
        wall_low, wall_high = low + offset, high + offset
        day, time_of_day = divmod(wall_low, DAY_US)
        schedule = days.schedule(day)
        day_starts, day_bands = days.maps[schedule]
        run = bisect_right(day_starts, time_of_day) - 1
        changes.append((low, schedule, day_bands[run], day))
        while True:
            run += 1
            if run == len(day_starts):
                day, run = day + 1, 0
                if day * DAY_US >= wall_high:
                    break  # the stay ends by this midnight: its date is not consulted
                schedule = days.schedule(day)
                day_starts, day_bands = days.maps[schedule]
            wall = day * DAY_US + day_starts[run]
            if wall >= wall_high:
                break
            changes.append((wall - offset, schedule, day_bands[run], day))
    segments: list[tuple[int, int, int, int, int]] = []
    for at, schedule, band_index, day in changes:
        if segments and segments[-1][2:4] == (schedule, band_index):
            continue
        if segments:
            segments[-1] = (segments[-1][0], at, *segments[-1][2:])
        segments.append((at, end_us, schedule, band_index, day))
    return segments


class _Origins:
    """Where a unit's tier position is counted from (v2 step 4), and how the
    quote shows it."""

    __slots__ = ("_clock", "_shown", "_starts", "billable_us", "restart")

    def __init__(
        self,
        restart: TiersRestart,
        billable_us: int,
        windows: list[tuple[int, int]],
        clock: Clock,
    ) -> None:
        self.restart = restart
        self.billable_us = billable_us
        self._starts = [low for low, _ in windows]
        self._clock = clock
        self._shown: tuple[int, datetime] | None = None

    def of(self, at_us: int, segment_start_us: int) -> int:
        if self.restart == "segment":
            return segment_start_us
        if self.restart == "cycle":
            # The cap cycle containing the unit, clipped to the billable start.
            cycle = bisect_right(self._starts, at_us) - 1
            return max(self.billable_us, self._starts[cycle])
        return self.billable_us

    def shown(self, origin_us: int) -> datetime | None:
        """The origin as the quote lists it: None for "stay" (the billable start)."""
        if self.restart == "stay":
            return None
        if self._shown is None or self._shown[0] != origin_us:
            self._shown = (origin_us, self._clock.local(origin_us))
        return self._shown[1]


def _charge_segment(
    band: Band,
    segment: tuple[int, int],
    origins: _Origins,
    clock: Clock,
    charges: list[Charge],
    charge_times: list[int],
) -> tuple[Fen, Fen, _Unit | None]:
    """Contract step 4: append the segment's charges (and their instants), return
    its sum before and after the segment cap, and its last unit (None: flat)."""
    start_us, end_us = segment
    first = len(charges)
    last: _Unit | None = None
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
        afters = [tier.after_minutes * MINUTE_US for tier in band.tiers]
        units = [tier.unit_minutes * MINUTE_US for tier in band.tiers]
        # A unit longer than timedelta can hold cannot recur inside a stay.
        steps = [timedelta(microseconds=min(unit, _LONGEST_STEP_US)) for unit in units]
        rule = band.partial_unit
        # A cut-short unit lasting at most this long is free: never (-1) when
        # partial units are charged, always when they are free.
        free_up_to_us = (
            rule.free_up_to_minutes * MINUTE_US
            if isinstance(rule, FreeRemainder)
            else (-1 if rule == "charge" else _LONGEST_STEP_US)
        )
        # The common v1 case ("stay") counts every unit from one origin and
        # shows none: kept free of per-unit calls, the engine's hot loop.
        by_stay = origins.restart == "stay"
        origin_us = origins.billable_us
        shown = None
        at_us = start_us
        at = clock.local(start_us)
        while at_us < end_us:
            if not by_stay:
                origin_us = origins.of(at_us, start_us)
                shown = origins.shown(origin_us)
            index = bisect_right(afters, at_us - origin_us) - 1
            tier = band.tiers[index]
            following = at_us + units[index]
            partial = following > end_us
            charges.append(
                Charge(
                    at=at,
                    band=band.name,
                    tier=index,
                    unit_fen=tier.unit_fen,
                    fen=0 if partial and end_us - at_us <= free_up_to_us else tier.unit_fen,
                    partial=partial,
                    tier_origin=shown,
                )
            )
            charge_times.append(at_us)
            last = (at_us, following, free_up_to_us)
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
    return raw, fen, last


def _cap_cycles(
    windows: list[tuple[int, int]],
    charges: list[Charge],
    charge_times: list[int],
    cap: Cap,
    clock: Clock,
) -> list[CycleSum]:
    """Contract step 5: sum charges per cycle (by charge time) and cap each sum,
    cycle n (the first containing the billable start) at its own amount."""
    sums = [0] * len(windows)
    window = 0
    for charge, at_us in zip(charges, charge_times, strict=True):
        while at_us >= windows[window][1]:
            window += 1
        sums[window] += charge.fen
    cycles = []
    for number, ((low, high), raw) in enumerate(zip(windows, sums, strict=True), start=1):
        limit = cap.fen_of_cycle(number)
        cycles.append(
            CycleSum(
                start=clock.local(low),
                end=clock.local(high),
                raw_fen=raw,
                fen=raw if limit is None else min(raw, limit),
                cap_fen=limit,
            )
        )
    return cycles
