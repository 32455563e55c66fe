"""Properties of the fee engine over generated tariffs and stays (hypothesis)."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from parking.tariffs import Band, Cap, Grace, NevPolicy, Tariff, Tier, quote
from parking.tariffs.model import CapCycle, minute_of_day

ZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC")
DAY = timedelta(days=1)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def bands(draw: st.DrawFn) -> tuple[Band, ...]:
    count = draw(st.integers(1, 4))
    starts = sorted(draw(st.sets(st.integers(0, 1439), min_size=count, max_size=count)))
    result = []
    for i, start in enumerate(starts):
        end = starts[(i + 1) % count]  # one band: end == start, the whole day
        segment_cap = draw(st.none() | st.integers(0, 3000))
        if draw(st.booleans()):
            band = Band(
                name=f"b{i}",
                start=hhmm(start),
                end=hhmm(end),
                flat=draw(st.integers(0, 2000)),
                segment_cap_fen=segment_cap,
            )
        else:
            afters = [0, *sorted(draw(st.sets(st.integers(1, 600), max_size=2)))]
            tiers = tuple(
                Tier(
                    after_minutes=after,
                    unit_minutes=draw(st.sampled_from([5, 7, 15, 30, 45, 60, 90, 120, 240])),
                    unit_fen=draw(st.integers(0, 1000)),
                )
                for after in afters
            )
            band = Band(
                name=f"b{i}",
                start=hhmm(start),
                end=hhmm(end),
                tiers=tiers,
                partial_unit=draw(st.sampled_from(["charge", "free"])),
                segment_cap_fen=segment_cap,
            )
        result.append(band)
    return tuple(result)


@st.composite
def caps(draw: st.DrawFn) -> Cap:
    cycle: CapCycle = draw(st.sampled_from(["rolling_24h", "daily"]))
    reset_at = None
    if cycle == "daily":
        reset_at = draw(st.none() | st.integers(0, 1439).map(hhmm))
    return Cap(fen=draw(st.integers(0, 5000)), cycle=cycle, reset_at=reset_at)


@st.composite
def tariffs(draw: st.DrawFn, *, zones: tuple[str, ...] = ZONES) -> Tariff:
    grace = draw(
        st.none() | st.builds(Grace, minutes=st.integers(0, 120), deductible=st.booleans())
    )
    nev = draw(
        st.none()
        | st.builds(
            NevPolicy,
            grace_minutes=st.integers(0, 240),
            grace_deductible=st.booleans(),
            percent=st.integers(0, 100),
        )
    )
    return Tariff(
        id="generated",
        name="generated",
        currency="CNY",
        timezone=draw(st.sampled_from(zones)),
        grace=grace,
        bands=draw(bands()),
        cap=draw(st.none() | caps()),
        nev=nev,
    )


@st.composite
def stays(draw: st.DrawFn, tariff: Tariff) -> tuple[datetime, datetime]:
    entry = draw(
        st.datetimes(
            min_value=datetime(2024, 1, 1),
            max_value=datetime(2028, 12, 31),
            timezones=st.just(ZoneInfo(tariff.timezone)),
            allow_imaginary=False,
        )
    )
    length = draw(
        st.integers(1, 3 * 24 * 3600).map(lambda s: timedelta(seconds=s))
        | st.integers(1, 3 * 24 * 3600 * 10**6).map(lambda us: timedelta(microseconds=us))
    )
    # Real elapsed time: aware arithmetic in one zone would add wall-clock time.
    return entry, later_by(entry, length)


def later_by(moment: datetime, length: timedelta) -> datetime:
    assert moment.tzinfo is not None
    return (moment.astimezone(UTC) + length).astimezone(moment.tzinfo)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fee_never_decreases_as_exit_moves_later(data: st.DataObject) -> None:
    tariff = data.draw(tariffs())
    entry, exit = data.draw(stays(tariff))
    later = later_by(exit, data.draw(st.integers(1, 24 * 3600).map(lambda s: timedelta(seconds=s))))
    nev = data.draw(st.booleans())
    assert (
        quote(tariff, entry, exit, nev=nev).total_fen
        <= quote(tariff, entry, later, nev=nev).total_fen
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fee_never_exceeds_the_cap_times_the_cycles_the_stay_touches(
    data: st.DataObject,
) -> None:
    tariff = data.draw(tariffs(zones=("Asia/Shanghai",)).filter(lambda t: t.cap is not None))
    assert tariff.cap is not None
    entry, exit = data.draw(stays(tariff))
    result = quote(tariff, entry, exit, nev=data.draw(st.booleans()))
    # Cycles counted independently of the engine: in Asia/Shanghai (one UTC
    # offset) a daily cycle is a fixed 24 h window shifted by reset_at.
    if tariff.cap.cycle == "rolling_24h":
        cycles = -((exit - entry) // -DAY)
    else:
        reset = timedelta(minutes=tariff.cap.reset_minute)
        wall_epoch = datetime(2000, 1, 1)
        first = (entry.replace(tzinfo=None) - wall_epoch - reset) // DAY
        last_moment = exit - timedelta(microseconds=1)
        last = (last_moment.replace(tzinfo=None) - wall_epoch - reset) // DAY
        cycles = last - first + 1
    assert result.total_fen <= tariff.cap.fen * cycles
    assert all(cycle.fen == min(cycle.raw_fen, tariff.cap.fen) for cycle in result.cycles)
    assert sum(cycle.fen for cycle in result.cycles) == result.subtotal_fen


@st.composite
def nev_no_worse_tariffs(draw: st.DrawFn) -> Tariff:
    # The NEV policy bills from the same start as a conventional car (neither
    # grace deductible) and waits at least as long: the case in which the
    # contract promises an NEV never pays more. (A deductible NEV grace can
    # cost more; see test_tariff_engine.)
    tariff = draw(tariffs())
    conventional = 0 if tariff.grace is None else tariff.grace.minutes
    grace = None if tariff.grace is None else Grace(minutes=conventional, deductible=False)
    nev = NevPolicy(
        grace_minutes=conventional + draw(st.integers(0, 120)),
        grace_deductible=False,
        percent=draw(st.integers(0, 100)),
    )
    return Tariff(
        id=tariff.id,
        name=tariff.name,
        currency=tariff.currency,
        timezone=tariff.timezone,
        grace=grace,
        bands=tariff.bands,
        cap=tariff.cap,
        nev=nev,
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_nev_fee_never_above_the_conventional_fee(data: st.DataObject) -> None:
    tariff = data.draw(nev_no_worse_tariffs())
    entry, exit = data.draw(stays(tariff))
    new_energy = quote(tariff, entry, exit, nev=True)
    conventional = quote(tariff, entry, exit, nev=False)
    assert new_energy.total_fen <= conventional.total_fen
    assert new_energy.total_fen == new_energy.subtotal_fen * new_energy.nev_percent // 100  # type: ignore[operator]


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def band_at(tariff: Tariff, moment: datetime) -> str:
    """The band whose clock-time range contains the local time of `moment`."""
    local = moment.astimezone(ZoneInfo(tariff.timezone))
    minute = local.hour * 60 + local.minute
    for band in tariff.bands:
        start, end = minute_of_day(band.start), minute_of_day(band.end)
        if start == end or (minute - start) % 1440 < (end - start) % 1440:
            return band.name
    raise AssertionError("bands do not cover the day")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_segments_tile_the_billable_stay_by_wall_clock_band(data: st.DataObject) -> None:
    tariff = data.draw(tariffs())
    entry, exit = data.draw(stays(tariff))
    result = quote(tariff, entry, exit, nev=False)
    if result.within_grace:
        assert result.total_fen == 0
        return
    assert result.billable_start is not None
    # Compared in UTC: Python never finds a datetime in a repeated DST hour
    # equal to one with another tzinfo (PEP 495).
    segments = result.segments
    assert utc(segments[0].start) == utc(result.billable_start)
    assert utc(segments[-1].end) == utc(exit)
    for before, after in pairwise(segments):
        assert utc(before.end) == utc(after.start)
        assert before.band != after.band  # maximal: a change of band ends a segment
    for segment in segments:
        assert utc(segment.start) < utc(segment.end)
        assert band_at(tariff, segment.start) == segment.band
        assert band_at(tariff, segment.end - timedelta(microseconds=1)) == segment.band
    for charge in result.charges:
        assert utc(result.billable_start) <= utc(charge.at) < utc(exit)
        assert 0 <= charge.fen <= charge.unit_fen
    assert sum(c.fen for c in result.charges) == sum(s.fen for s in result.segments)
    if tariff.cap is None:
        assert result.subtotal_fen == sum(s.fen for s in result.segments)
