"""Properties of the v2 fee engine over generated documents, calendars and stays
(hypothesis), built on the v1 strategies of tests/unit/tariffs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace
from unit.tariffs.test_tariff_properties import ZONES, bands, caps, later_by, stays, tariffs

from parking.tariffs import (
    Band,
    Calendar,
    Cap,
    FreeRemainder,
    Grace,
    NevPolicy,
    Quote,
    Schedule,
    Tariff,
    classify,
    quote,
)
from parking.tariffs.model import DAY_TYPES, minute_of_day

# The v1 strategies draw entries from 2024 to 2028 and stays of up to 3 days.
FIRST_DAY = date(2023, 12, 1)
LAST_DAY = date(2029, 1, 10)
SPAN = (LAST_DAY - FIRST_DAY).days


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@st.composite
def calendar_lists(draw: st.DrawFn) -> list[Calendar]:
    """Calendars for some of the years 2024 to 2028 (others classed by weekday)."""
    result = []
    for year in sorted(draw(st.sets(st.integers(2024, 2028), max_size=5))):
        year_days = days_between(date(year, 1, 1), date(year, 12, 31))
        holidays = draw(st.sets(st.sampled_from(year_days), max_size=40))
        weekends = [d for d in year_days if d.weekday() >= 5]
        workdays = draw(st.sets(st.sampled_from(weekends), max_size=10)) - holidays
        result.append(
            Calendar(
                version=f"cal-{year}",
                name=str(year),
                years=(year,),
                holidays=tuple(sorted(holidays)),
                workdays=tuple(sorted(workdays)),
            )
        )
    return result


@st.composite
def date_ranges(draw: st.DrawFn) -> str:
    first = FIRST_DAY + timedelta(days=draw(st.integers(0, SPAN)))
    last = first + timedelta(days=draw(st.integers(0, 10)))
    return f"{first.isoformat()}/{last.isoformat()}"


@st.composite
def v2_bands(draw: st.DrawFn) -> tuple[Band, ...]:
    """v1 bands, some tiered ones letting a short remainder go free."""
    result = []
    for band in draw(bands()):
        if band.tiers is not None and draw(st.booleans()):
            band = replace(
                band, partial_unit=FreeRemainder(free_up_to_minutes=draw(st.integers(0, 120)))
            )
        result.append(band)
    return tuple(result)


@st.composite
def schedule_lists(draw: st.DrawFn) -> tuple[Schedule, ...]:
    count = draw(st.integers(1, 3))
    # Each day type goes to one schedule, so dates of different types often use
    # different schedules; date ranges and shadowed day types come on top.
    owner = {kind: draw(st.integers(0, count - 1)) for kind in DAY_TYPES}
    days = []
    for index in range(count):
        entries = [kind for kind in DAY_TYPES if owner[kind] == index]
        entries += draw(st.lists(st.sampled_from(DAY_TYPES) | date_ranges(), max_size=2))
        if not entries:
            entries.append(draw(date_ranges()))
        days.append(draw(st.permutations(entries)))
    return tuple(Schedule(days=tuple(d), bands=draw(v2_bands())) for d in days)


@st.composite
def v2_caps(draw: st.DrawFn, *, uncapped: bool) -> Cap:
    cap = draw(caps())
    amounts = st.lists(st.integers(0, 5000), min_size=1, max_size=4).map(tuple)
    choices = st.integers(0, 5000) | amounts
    if uncapped:
        choices = choices | st.just(msgspec.UNSET)
    return replace(cap, fen=draw(choices))


@st.composite
def v2_documents(draw: st.DrawFn, *, zones: tuple[str, ...] = ZONES, nested: bool = True) -> Tariff:
    restart = draw(st.sampled_from(["stay", "cycle", "segment"]))
    cap = draw(v2_caps(uncapped=restart == "cycle"))
    if restart != "cycle" and draw(st.booleans()):
        cap = None
    scheduled = draw(st.booleans())
    grace = draw(
        st.none() | st.builds(Grace, minutes=st.integers(0, 120), deductible=st.booleans())
    )
    nev = None
    if nested and draw(st.booleans()):
        daily = draw(
            st.just(msgspec.UNSET)
            | st.lists(
                st.builds(Grace, minutes=st.integers(0, 240), deductible=st.booleans()),
                min_size=1,
                max_size=3,
            ).map(tuple)
        )
        other = draw(st.just(msgspec.UNSET) | v2_documents(zones=zones, nested=False))
        overrides = other is msgspec.UNSET or daily is not msgspec.UNSET
        nev = NevPolicy(
            grace_minutes=draw(st.none() | st.integers(0, 240)) if overrides else None,
            grace_deductible=draw(st.none() | st.booleans()) if overrides else None,
            percent=draw(st.integers(0, 100)),
            tariff=other,
            daily_grace=daily,
        )
    return Tariff(
        version=2,
        id="generated",
        name="generated",
        currency="CNY",
        timezone=draw(st.sampled_from(zones)),
        grace=grace,
        bands=() if scheduled else draw(v2_bands()),
        schedules=draw(schedule_lists()) if scheduled else msgspec.UNSET,
        tiers_restart=restart,
        cap=cap,
        nev=nev,
    )


@st.composite
def v2_stays(draw: st.DrawFn, tariff: Tariff) -> tuple[datetime, datetime]:
    """The v1 stays, or stays of whole hours and minutes up to 3 days: hypothesis
    favours short lengths, and a v2 rule shows only across midnights and cycles."""
    entry, exit = draw(stays(tariff))
    if draw(st.booleans()):
        hours, minutes = draw(st.integers(0, 72)), draw(st.integers(1, 59))
        exit = later_by(entry, timedelta(hours=hours, minutes=minutes))
    return entry, exit


def later(data: st.DataObject, moment: datetime) -> datetime:
    return later_by(
        moment, data.draw(st.integers(1, 24 * 3600).map(lambda s: timedelta(seconds=s)))
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fee_never_decreases_as_exit_moves_later(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents())
    entry, exit = data.draw(v2_stays(tariff))
    calendars = data.draw(calendar_lists())
    nev = data.draw(st.booleans())
    stay_of_day = data.draw(st.integers(1, 4))

    def fee(until: datetime) -> int:
        return quote(
            tariff, entry, until, nev=nev, calendars=calendars, stay_of_day=stay_of_day
        ).total_fen

    assert fee(exit) <= fee(later(data, exit))


def as_v2(tariff: Tariff, **changes: object) -> Tariff:
    return replace(tariff, version=2, **changes)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_tiers_restart_stay_is_v1(data: st.DataObject) -> None:
    v1 = data.draw(tariffs())
    entry, exit = data.draw(v2_stays(v1))
    nev = data.draw(st.booleans())
    # v1 documents have neither schedules nor a daily grace: both inputs are ignored.
    calendars = data.draw(calendar_lists())
    stay_of_day = data.draw(st.integers(1, 4))
    expected = quote(v1, entry, exit, nev=nev)
    for document in (as_v2(v1), as_v2(v1, tiers_restart="stay")):
        assert (
            quote(document, entry, exit, nev=nev, calendars=calendars, stay_of_day=stay_of_day)
            == expected
        )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_list_cap_of_one_value_is_the_integer_cap(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents())
    amount = data.draw(st.integers(0, 5000))
    cycle = data.draw(caps())
    whole = replace(tariff, cap=replace(cycle, fen=amount))
    listed = replace(tariff, cap=replace(cycle, fen=(amount,)))
    entry, exit = data.draw(v2_stays(tariff))
    calendars = data.draw(calendar_lists())
    nev = data.draw(st.booleans())
    assert quote(listed, entry, exit, nev=nev, calendars=calendars) == quote(
        whole, entry, exit, nev=nev, calendars=calendars
    )


def without_schedule_items(result: Quote) -> Quote:
    return replace(
        result,
        segments=tuple(
            replace(s, schedule=None, date=None, day_type=None, calendar=None)
            for s in result.segments
        ),
        calendars=(),
        dates_by_weekday=(),
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_one_schedule_for_all_days_is_the_plain_bands(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents().filter(lambda t: t.day_schedules is None))
    days = data.draw(st.permutations(DAY_TYPES))
    extra = data.draw(st.lists(date_ranges(), max_size=2))
    scheduled = replace(
        tariff, bands=(), schedules=(Schedule(days=(*extra, *days), bands=tariff.bands),)
    )
    entry, exit = data.draw(v2_stays(tariff))
    calendars = data.draw(calendar_lists())
    nev = data.draw(st.booleans())
    plain = quote(tariff, entry, exit, nev=nev, calendars=calendars)
    by_schedule = quote(scheduled, entry, exit, nev=nev, calendars=calendars)
    assert without_schedule_items(by_schedule) == without_schedule_items(plain)
    if by_schedule.nev_tariff_id is None:
        assert all(s.schedule == 0 for s in by_schedule.segments)
        assert without_schedule_items(plain) == plain


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def local_date(tariff: Tariff, moment: datetime) -> date:
    return moment.astimezone(ZoneInfo(tariff.timezone)).date()


def schedule_of(tariff: Tariff, day: date, calendars: list[Calendar]) -> int:
    """The first schedule matching the date, read from the document's text."""
    assert tariff.day_schedules is not None
    kind = classify(day, calendars).day_type
    for index, schedule in enumerate(tariff.day_schedules):
        for entry in schedule.days:
            if entry == kind:
                return index
            if "/" in entry:
                first, last = (date.fromisoformat(part) for part in entry.split("/"))
                if first <= day <= last:
                    return index
    raise AssertionError("the document leaves a day type without a schedule")


def band_at(bands_: tuple[Band, ...], tariff: Tariff, moment: datetime) -> str:
    local = moment.astimezone(ZoneInfo(tariff.timezone))
    minute = local.hour * 60 + local.minute
    for band in bands_:
        start, end = minute_of_day(band.start), minute_of_day(band.end)
        if start == end or (minute - start) % 1440 < (end - start) % 1440:
            return band.name
    raise AssertionError("bands do not cover the day")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_segments_follow_the_schedule_of_each_local_date(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents(nested=False).filter(lambda t: t.day_schedules is not None))
    assert tariff.day_schedules is not None
    entry, exit = data.draw(v2_stays(tariff))
    calendars = data.draw(calendar_lists())
    result = quote(tariff, entry, exit, nev=False, calendars=calendars)
    if result.within_grace:
        return
    assert result.billable_start is not None
    segments = result.segments
    assert utc(segments[0].start) == utc(result.billable_start)
    assert utc(segments[-1].end) == utc(exit)
    for before, after in pairwise(segments):
        assert utc(before.end) == utc(after.start)
        assert (before.schedule, before.band) != (after.schedule, after.band)
    for segment in segments:
        assert segment.schedule is not None
        start_day = local_date(tariff, segment.start)
        assert segment.date == start_day
        assert segment.schedule == schedule_of(tariff, start_day, calendars)
        kind = classify(start_day, calendars)
        assert (segment.day_type, segment.calendar) == kind
        last = segment.end - timedelta(microseconds=1)
        # A segment never runs into a date of another schedule.
        assert schedule_of(tariff, local_date(tariff, last), calendars) == segment.schedule
        bands_ = tariff.day_schedules[segment.schedule].bands
        assert band_at(bands_, tariff, segment.start) == segment.band
        assert band_at(bands_, tariff, last) == segment.band
    # Every local date the billable stay touches was classed, and only those.
    touched = days_between(
        local_date(tariff, result.billable_start),
        local_date(tariff, exit - timedelta(microseconds=1)),
    )
    classes = [classify(d, calendars) for d in touched]
    assert list(result.dates_by_weekday) == [
        d for d, kind in zip(touched, classes, strict=True) if kind.calendar is None
    ]
    assert list(result.calendars) == list(
        dict.fromkeys(kind.calendar for kind in classes if kind.calendar is not None)
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_each_cycle_is_capped_at_its_own_amount(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents(nested=False).filter(lambda t: t.cap is not None))
    assert tariff.cap is not None
    entry, exit = data.draw(v2_stays(tariff))
    result = quote(tariff, entry, exit, nev=False, calendars=data.draw(calendar_lists()))
    amounts = tariff.cap.amounts
    for number, cycle in enumerate(result.cycles, start=1):
        if amounts:
            assert cycle.cap_fen == amounts[min(number, len(amounts)) - 1]
            assert cycle.fen == min(cycle.raw_fen, cycle.cap_fen)
        else:
            assert cycle.cap_fen is None
            assert cycle.fen == cycle.raw_fen
    assert sum(c.fen for c in result.cycles) == result.subtotal_fen
    assert sum(c.fen for c in result.charges) == sum(c.raw_fen for c in result.cycles)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_cycle_restart_within_the_first_rolling_cycle_is_stay(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents(nested=False))
    cycle = replace(data.draw(v2_caps(uncapped=True)), cycle="rolling_24h", reset_at=None)
    restarting = replace(tariff, tiers_restart="cycle", cap=cycle)
    entry = data.draw(stays(tariff))[0]
    exit = later_by(entry, timedelta(seconds=data.draw(st.integers(1, 24 * 3600))))
    calendars = data.draw(calendar_lists())
    by_cycle = quote(restarting, entry, exit, nev=False, calendars=calendars)
    if cycle.fen is msgspec.UNSET:
        # Uncapped cycles: "stay" with no cap at all.
        by_stay = quote(
            replace(restarting, tiers_restart="stay", cap=None),
            entry,
            exit,
            nev=False,
            calendars=calendars,
        )
        assert by_cycle.total_fen == by_stay.total_fen
        return
    by_stay = quote(
        replace(restarting, tiers_restart="stay"), entry, exit, nev=False, calendars=calendars
    )
    assert [(c.at, c.tier, c.fen) for c in by_cycle.charges] == [
        (c.at, c.tier, c.fen) for c in by_stay.charges
    ]
    assert by_cycle.total_fen == by_stay.total_fen


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_the_daily_grace_of_the_nth_stay_is_an_nev_grace_of_that_length(
    data: st.DataObject,
) -> None:
    tariff = data.draw(v2_documents(nested=False))
    daily = tuple(
        data.draw(
            st.lists(
                st.builds(Grace, minutes=st.integers(0, 240), deductible=st.booleans()),
                min_size=1,
                max_size=3,
            )
        )
    )
    later_grace = data.draw(st.none() | st.integers(0, 240))
    percent = data.draw(st.integers(0, 100))
    policy = NevPolicy(daily_grace=daily, grace_minutes=later_grace, percent=percent)
    with_daily = replace(tariff, nev=policy)
    entry, exit = data.draw(v2_stays(tariff))
    calendars = data.draw(calendar_lists())
    stay_of_day = data.draw(st.integers(1, len(daily) + 2))
    if stay_of_day <= len(daily):
        grace = daily[stay_of_day - 1]
        same = NevPolicy(
            grace_minutes=grace.minutes, grace_deductible=grace.deductible, percent=percent
        )
    else:
        same = NevPolicy(grace_minutes=later_grace, percent=percent)
    result = quote(with_daily, entry, exit, nev=True, calendars=calendars, stay_of_day=stay_of_day)
    expected = quote(replace(tariff, nev=same), entry, exit, nev=True, calendars=calendars)
    assert result.stay_of_day == stay_of_day
    assert replace(result, stay_of_day=None) == expected


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_nev_tariff_prices_new_energy_vehicles_as_that_document_would(
    data: st.DataObject,
) -> None:
    tariff = data.draw(v2_documents(nested=False))
    other = data.draw(v2_documents(nested=False))
    percent = data.draw(st.integers(0, 100))
    outer = replace(tariff, nev=NevPolicy(tariff=other, percent=percent))
    entry, exit = data.draw(v2_stays(tariff))
    calendars = data.draw(calendar_lists())
    new_energy = quote(outer, entry, exit, nev=True, calendars=calendars)
    alone = quote(other, entry, exit, nev=False, calendars=calendars)
    assert new_energy.subtotal_fen == alone.subtotal_fen
    assert new_energy.total_fen == alone.subtotal_fen * percent // 100
    assert new_energy.charges == alone.charges
    assert new_energy.nev_tariff_id == other.id
    conventional = quote(outer, entry, exit, nev=False, calendars=calendars)
    assert conventional == quote(tariff, entry, exit, nev=False, calendars=calendars)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_each_unit_takes_the_tier_of_its_position_from_its_origin(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents(nested=False))
    entry, exit = data.draw(v2_stays(tariff))
    result = quote(tariff, entry, exit, nev=False, calendars=data.draw(calendar_lists()))
    if result.within_grace:
        return
    assert result.billable_start is not None
    billable = utc(result.billable_start)
    for charge in (c for c in result.charges if c.tier != "flat"):
        at_ = utc(charge.at)
        segment = next(s for s in result.segments if utc(s.start) <= at_ < utc(s.end))
        if tariff.restart == "stay":
            assert charge.tier_origin is None
            origin = billable
        else:
            assert charge.tier_origin is not None
            origin = utc(charge.tier_origin)
            if tariff.restart == "segment":
                assert origin == utc(segment.start)
            else:
                cycle = next(c for c in result.cycles if utc(c.start) <= at_ < utc(c.end))
                assert origin == max(billable, utc(cycle.start))
        schedules = tariff.day_schedules
        bands_ = tariff.bands if schedules is None else schedules[segment.schedule or 0].bands
        band = next(b for b in bands_ if b.name == segment.band)
        assert band.tiers is not None
        position = at_ - origin
        expected = max(
            i
            for i, tier in enumerate(band.tiers)
            if timedelta(minutes=tier.after_minutes) <= position
        )
        assert charge.tier == expected
