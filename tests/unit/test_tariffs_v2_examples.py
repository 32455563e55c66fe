"""The fee engine against every worked example of tariff contract v2 (and v1's,
which v2 keeps), and the itemised quote's v2 items."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from parking.tariffs import (
    Calendar,
    Quote,
    QuoteError,
    Tariff,
    decode_tariff,
    quote,
    quote_to_json,
    tariff_from_dict,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(day: date | int, hour: int, minute: int = 0) -> datetime:
    """A Shanghai time; `day` is a date or a day of November 2026."""
    if isinstance(day, int):
        day = date(2026, 11, day)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


def v2(document: dict[str, Any]) -> dict[str, Any]:
    return {"version": 2, **document}


# The v1 worked examples, as the contract writes them: still exact, and the
# same when the document declares version 2 (v2 keeps every v1 meaning).

SUIZHOU: dict[str, Any] = {
    "id": "suizhou-zone1",
    "name": "随州 一类区域 路内",
    "currency": "CNY",
    "timezone": "Asia/Shanghai",
    "grace": {"minutes": 30, "deductible": False},
    "bands": [
        {
            "name": "all-day",
            "from": "00:00",
            "to": "00:00",
            "tiers": [
                {"after_minutes": 0, "unit_minutes": 60, "unit_fen": 300},
                {"after_minutes": 60, "unit_minutes": 60, "unit_fen": 200},
            ],
        }
    ],
    "cap": {"fen": 2000, "cycle": "rolling_24h"},
    "nev": {"grace_minutes": 120, "grace_deductible": False, "percent": 50},
}

BEIJING: dict[str, Any] = {
    "id": "beijing-class1",
    "name": "北京 一类地区 路侧",
    "currency": "CNY",
    "timezone": "Asia/Shanghai",
    "bands": [
        {
            "name": "day",
            "from": "07:00",
            "to": "21:00",
            "tiers": [
                {"after_minutes": 0, "unit_minutes": 15, "unit_fen": 250},
                {"after_minutes": 60, "unit_minutes": 15, "unit_fen": 375},
            ],
        },
        {
            "name": "night",
            "from": "21:00",
            "to": "07:00",
            "tiers": [{"after_minutes": 0, "unit_minutes": 120, "unit_fen": 100}],
        },
    ],
}

V1_EXAMPLES = [
    ("suizhou", SUIZHOU, at(27, 10), at(27, 10, 30), 0),
    ("suizhou", SUIZHOU, at(27, 10), at(27, 10, 31), 300),
    ("suizhou", SUIZHOU, at(27, 10), at(27, 11, 1), 500),
    ("suizhou", SUIZHOU, at(27, 10), at(27, 13), 700),
    ("suizhou", SUIZHOU, at(27, 8), at(27, 18), 2000),
    ("beijing", BEIJING, at(27, 10), at(27, 11), 1000),
    ("beijing", BEIJING, at(27, 10), at(27, 11, 15), 1375),
    ("beijing", BEIJING, at(27, 10), at(27, 12), 2500),
    ("beijing", BEIJING, at(27, 20), at(27, 23), 1100),
]


@pytest.mark.parametrize(("_name", "document", "entry", "exit", "fen"), V1_EXAMPLES)
def test_v1_worked_examples_are_exact_as_v1_and_as_v2_documents(
    _name: str, document: dict[str, Any], entry: datetime, exit: datetime, fen: int
) -> None:
    as_v1 = quote(tariff_from_dict(document), entry, exit, nev=False)
    as_v2 = quote(tariff_from_dict(v2(document)), entry, exit, nev=False)
    assert as_v1.total_fen == fen
    assert as_v2 == as_v1


# Ganzhou 江南宋城: past 24 h billing starts again with the first-hour price.

GANZHOU: dict[str, Any] = {
    "version": 2,
    "id": "ganzhou-songcheng-1",
    "name": "赣州 江南宋城 一类",
    "currency": "CNY",
    "grace": {"minutes": 30, "deductible": False},
    "tiers_restart": "cycle",
    "bands": [
        {
            "name": "all-day",
            "from": "00:00",
            "to": "00:00",
            "tiers": [
                {"after_minutes": 0, "unit_minutes": 60, "unit_fen": 400},
                {"after_minutes": 60, "unit_minutes": 60, "unit_fen": 100},
            ],
        }
    ],
    "cap": {"fen": 2000, "cycle": "rolling_24h"},
}


@pytest.mark.parametrize(
    ("entry", "exit", "fen"),
    [
        (at(27, 10), at(27, 10, 31), 400),
        (at(27, 10), at(27, 12, 30), 600),
        (at(27, 20), at(28, 21), 2400),
    ],
)
def test_ganzhou_worked_examples(entry: datetime, exit: datetime, fen: int) -> None:
    assert quote(tariff_from_dict(GANZHOU), entry, exit, nev=False).total_fen == fen


def test_ganzhou_25_hours_restart_the_first_hour_price_in_the_second_cycle() -> None:
    result = quote(tariff_from_dict(GANZHOU), at(27, 20), at(28, 21), nev=False)
    assert result.tiers_restart == "cycle"
    assert [(c.raw_fen, c.fen, c.cap_fen) for c in result.cycles] == [
        (2700, 2000, 2000),
        (400, 400, 2000),
    ]
    assert [(c.at, c.tier, c.fen, c.tier_origin) for c in result.charges[-2:]] == [
        (at(28, 19), 1, 100, at(27, 20)),
        (at(28, 20), 0, 400, at(28, 20)),
    ]


def test_ganzhou_as_v1_gives_what_the_contract_says_v1_would() -> None:
    document = {k: v for k, v in GANZHOU.items() if k not in ("version", "tiers_restart")}
    assert quote(tariff_from_dict(document), at(27, 20), at(28, 21), nev=False).total_fen == 2100


def one_tier(unit_fen: int, unit_minutes: int = 60, **band: Any) -> dict[str, Any]:
    return {
        "name": "all-day",
        "from": "00:00",
        "to": "00:00",
        "tiers": [{"after_minutes": 0, "unit_minutes": unit_minutes, "unit_fen": unit_fen}],
        **band,
    }


RISING: dict[str, Any] = {
    "version": 2,
    "id": "rising",
    "name": "rising caps",
    "currency": "CNY",
    "bands": [one_tier(1000)],
    "cap": {"fen": [3000, 4000, 5000], "cycle": "rolling_24h"},
}


@pytest.mark.parametrize(("days", "fen"), [(3, 12000), (4, 17000)])
def test_rising_caps_worked_example(days: int, fen: int) -> None:
    result = quote(
        tariff_from_dict(RISING), at(27, 10), at(27, 10) + timedelta(days=days), nev=False
    )
    assert result.total_fen == fen
    assert [c.cap_fen for c in result.cycles] == [3000, 4000, 5000, 5000][:days]
    assert all(c.raw_fen == 24 * 1000 for c in result.cycles)


REMAINDER: dict[str, Any] = {
    "version": 2,
    "id": "remainder",
    "name": "remainder threshold",
    "currency": "CNY",
    "bands": [one_tier(200, partial_unit={"free_up_to_minutes": 15})],
}


@pytest.mark.parametrize(
    ("exit", "fen"),
    [
        (at(27, 12, 10), 400),
        (at(27, 12, 20), 600),
        # The threshold itself is free ("15 minutes or less"); a microsecond more is not.
        (at(27, 12, 15), 400),
        (at(27, 12, 15) + timedelta(microseconds=1), 600),
    ],
)
def test_remainder_threshold_worked_example(exit: datetime, fen: int) -> None:
    result = quote(tariff_from_dict(REMAINDER), at(27, 10), exit, nev=False)
    assert result.total_fen == fen
    last = result.charges[-1]
    assert (last.partial, last.unit_fen) == (True, 200)


def test_remainder_threshold_applies_to_a_unit_cut_by_a_band_change_too() -> None:
    document = {
        "version": 2,
        "id": "t",
        "name": "t",
        "currency": "CNY",
        "bands": [
            {
                "name": "day",
                "from": "08:00",
                "to": "20:10",
                "partial_unit": {"free_up_to_minutes": 15},
                "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 200}],
            },
            {"name": "night", "from": "20:10", "to": "08:00", "flat": 50},
        ],
    }
    result = quote(tariff_from_dict(document), at(27, 18), at(27, 21), nev=False)
    assert [(c.band, c.fen, c.partial) for c in result.charges] == [
        ("day", 200, False),
        ("day", 200, False),
        ("day", 0, True),
        ("night", 50, False),
    ]


# Day types: workdays charged by day, rest days and holidays free.

DAY_TYPES: dict[str, Any] = {
    "version": 2,
    "id": "day-types",
    "name": "工作日收费 休息日免费",
    "currency": "CNY",
    "schedules": [
        {
            "days": ["workday"],
            "bands": [
                {
                    "name": "day",
                    "from": "07:30",
                    "to": "20:00",
                    "tiers": [{"after_minutes": 0, "unit_minutes": 30, "unit_fen": 300}],
                },
                {"name": "night", "from": "20:00", "to": "07:30", "flat": 0},
            ],
        },
        {
            "days": ["rest_day", "holiday"],
            "bands": [{"name": "free", "from": "00:00", "to": "00:00", "flat": 0}],
        },
    ],
}

OCTOBER = Calendar(
    version="test-2026.1",
    name="2026 test calendar",
    years=(2026,),
    holidays=tuple(date(2026, 10, d) for d in range(1, 8)),
    workdays=(date(2026, 10, 10),),
)


def oct_at(day: int, hour: int, minute: int = 0) -> datetime:
    return at(date(2026, 10, day), hour, minute)


@pytest.mark.parametrize(
    ("entry", "exit", "fen"),
    [
        (oct_at(9, 19), oct_at(10, 8, 30), 1200),
        (oct_at(17, 19), oct_at(17, 20, 30), 0),
        (oct_at(16, 19), oct_at(17, 8, 30), 600),
    ],
)
def test_day_type_worked_examples(entry: datetime, exit: datetime, fen: int) -> None:
    result = quote(tariff_from_dict(DAY_TYPES), entry, exit, nev=False, calendars=[OCTOBER])
    assert result.total_fen == fen


def test_an_adjusted_working_saturday_keeps_the_workday_schedule_overnight() -> None:
    result = quote(
        tariff_from_dict(DAY_TYPES), oct_at(9, 19), oct_at(10, 8, 30), nev=False, calendars=OCTOBER
    )
    assert [
        (s.band, s.start, s.end, s.schedule, s.date, s.day_type, s.calendar, s.fen)
        for s in result.segments
    ] == [
        ("day", oct_at(9, 19), oct_at(9, 20), 0, date(2026, 10, 9), "workday", "test-2026.1", 600),
        # Saturday uses the same schedule: the night band does not split at midnight.
        (
            "night",
            oct_at(9, 20),
            oct_at(10, 7, 30),
            0,
            date(2026, 10, 9),
            "workday",
            "test-2026.1",
            0,
        ),
        (
            "day",
            oct_at(10, 7, 30),
            oct_at(10, 8, 30),
            0,
            date(2026, 10, 10),
            "workday",
            "test-2026.1",
            600,
        ),
    ]
    assert result.calendars == ("test-2026.1",)
    assert result.dates_by_weekday == ()


def test_a_segment_ends_at_midnight_when_the_next_date_uses_another_schedule() -> None:
    result = quote(
        tariff_from_dict(DAY_TYPES), oct_at(16, 19), oct_at(17, 8, 30), nev=False, calendars=OCTOBER
    )
    assert [(s.band, s.start, s.end, s.schedule, s.day_type) for s in result.segments] == [
        ("day", oct_at(16, 19), oct_at(16, 20), 0, "workday"),
        ("night", oct_at(16, 20), oct_at(17, 0), 0, "workday"),
        ("free", oct_at(17, 0), oct_at(17, 8, 30), 1, "rest_day"),
    ]


def test_a_whole_day_band_ends_at_midnight_when_the_next_date_uses_another_schedule() -> None:
    document = {
        "version": 2,
        "id": "t",
        "name": "t",
        "currency": "CNY",
        "schedules": [
            {"days": ["workday"], "bands": [one_tier(100)]},
            {
                "days": ["rest_day", "holiday"],
                "bands": [{"name": "weekend", "from": "00:00", "to": "00:00", "flat": 0}],
            },
        ],
    }
    result = quote(tariff_from_dict(document), oct_at(16, 20), oct_at(17, 2), nev=False)
    assert [(s.band, s.schedule, s.end, s.fen) for s in result.segments] == [
        ("all-day", 0, oct_at(17, 0), 400),
        ("weekend", 1, oct_at(17, 2), 0),
    ]


def test_holidays_use_the_holiday_schedule() -> None:
    # Thursday 1 October is a holiday in the calendar, a workday by weekday.
    tariff = tariff_from_dict(DAY_TYPES)
    with_calendar = quote(tariff, oct_at(1, 9), oct_at(1, 10), nev=False, calendars=[OCTOBER])
    assert (with_calendar.total_fen, with_calendar.segments[0].day_type) == (0, "holiday")
    by_weekday = quote(tariff, oct_at(1, 9), oct_at(1, 10), nev=False)
    assert (by_weekday.total_fen, by_weekday.segments[0].day_type) == (600, "workday")


def test_dates_outside_every_calendar_are_classed_by_weekday_and_the_quote_says_so() -> None:
    result = quote(tariff_from_dict(DAY_TYPES), oct_at(9, 19), oct_at(10, 8, 30), nev=False)
    # Without the calendar Saturday 10 October is an ordinary rest day.
    assert result.total_fen == 600
    assert result.calendars == ()
    assert result.dates_by_weekday == (date(2026, 10, 9), date(2026, 10, 10))
    assert [s.calendar for s in result.segments] == [None, None, None]
    document = json.loads(quote_to_json(result))
    assert document["dates_by_weekday"] == ["2026-10-09", "2026-10-10"]
    assert "calendar" not in document["segments"][0]


def test_a_stay_across_new_year_names_both_calendars_it_used() -> None:
    next_year = Calendar(version="test-2027.1", name="2027", years=(2027,))
    result = quote(
        tariff_from_dict(DAY_TYPES),
        at(date(2026, 12, 31), 19),
        at(date(2027, 1, 1), 8),
        nev=False,
        calendars=[OCTOBER, next_year],
    )
    assert result.calendars == ("test-2026.1", "test-2027.1")
    assert result.dates_by_weekday == ()


def test_the_first_calendar_covering_a_date_classes_it() -> None:
    corrected = Calendar(version="test-2026.2", name="corrected", years=(2026,))
    result = quote(
        tariff_from_dict(DAY_TYPES),
        oct_at(1, 9),
        oct_at(1, 10),
        nev=False,
        calendars=[corrected, OCTOBER],
    )
    assert (result.total_fen, result.calendars) == (600, ("test-2026.2",))


def test_a_date_range_schedule_listed_first_wins_over_day_types() -> None:
    document = json.loads(json.dumps(DAY_TYPES))
    festival = {
        "days": ["2026-10-09/2026-10-09"],
        "bands": [{"name": "festival", "from": "00:00", "to": "00:00", "flat": 1500}],
    }
    document["schedules"].insert(0, festival)
    result = quote(
        tariff_from_dict(document), oct_at(9, 19), oct_at(10, 8, 30), nev=False, calendars=[OCTOBER]
    )
    # Saturday is a workday again: from midnight the workday schedule's night band.
    assert [(s.band, s.schedule, s.start, s.fen) for s in result.segments] == [
        ("festival", 0, oct_at(9, 19), 1500),
        ("night", 1, oct_at(10, 0), 0),
        ("day", 1, oct_at(10, 7, 30), 600),
    ]
    assert result.total_fen == 2100


def test_a_tariff_without_schedules_ignores_calendars() -> None:
    tariff = tariff_from_dict(SUIZHOU)
    plain = quote(tariff, at(27, 10), at(27, 13), nev=False)
    assert quote(tariff, at(27, 10), at(27, 13), nev=False, calendars=[OCTOBER]) == plain
    document = json.loads(quote_to_json(plain))
    assert "calendars" not in document
    assert "dates_by_weekday" not in document


# New-energy vehicles: the daily grace and a separate tariff.

NEV_DAILY: dict[str, Any] = {
    "version": 2,
    "id": "nev-daily",
    "name": "新能源 每日免费",
    "currency": "CNY",
    "bands": [one_tier(300, unit_minutes=30)],
    "nev": {
        "daily_grace": [
            {"minutes": 120, "deductible": True},
            {"minutes": 60, "deductible": True},
        ],
        "grace_minutes": 0,
        "percent": 100,
    },
}


@pytest.mark.parametrize(
    ("stay_of_day", "entry", "exit", "fen", "billable_start"),
    [
        (1, at(27, 9), at(27, 12), 600, at(27, 11)),
        (2, at(27, 14), at(27, 15, 30), 300, at(27, 15)),
        (3, at(27, 16), at(27, 16, 30), 300, at(27, 16)),
    ],
)
def test_nev_daily_grace_worked_example(
    stay_of_day: int, entry: datetime, exit: datetime, fen: int, billable_start: datetime
) -> None:
    result = quote(tariff_from_dict(NEV_DAILY), entry, exit, nev=True, stay_of_day=stay_of_day)
    assert (result.total_fen, result.billable_start) == (fen, billable_start)
    assert result.stay_of_day == stay_of_day


def test_daily_grace_is_the_first_stays_when_no_index_is_given() -> None:
    tariff = tariff_from_dict(NEV_DAILY)
    assert quote(tariff, at(27, 9), at(27, 11), nev=True).total_fen == 0
    assert quote(tariff, at(27, 9), at(27, 11), nev=True, stay_of_day=2).total_fen == 600


def test_daily_grace_is_for_new_energy_vehicles_only() -> None:
    result = quote(tariff_from_dict(NEV_DAILY), at(27, 9), at(27, 12), nev=False, stay_of_day=1)
    assert (result.total_fen, result.stay_of_day) == (1800, None)


def test_stays_beyond_the_list_keep_the_ordinary_grace_when_the_policy_has_none() -> None:
    document = json.loads(json.dumps(NEV_DAILY))
    del document["nev"]["grace_minutes"]
    document["grace"] = {"minutes": 15, "deductible": False}
    tariff = tariff_from_dict(document)
    assert quote(tariff, at(27, 9), at(27, 9, 15), nev=True, stay_of_day=3).total_fen == 0
    third = quote(tariff, at(27, 9), at(27, 9, 16), nev=True, stay_of_day=3)
    assert (third.total_fen, third.grace_minutes, third.grace_deductible) == (300, 15, False)


def test_the_stay_of_day_counts_from_one() -> None:
    with pytest.raises(QuoteError, match="stay_of_day"):
        quote(tariff_from_dict(NEV_DAILY), at(27, 9), at(27, 12), nev=True, stay_of_day=0)


NEV_TARIFF: dict[str, Any] = {
    "version": 2,
    "id": "with-nev-tariff",
    "name": "普通车与新能源车分别计价",
    "currency": "CNY",
    "grace": {"minutes": 15, "deductible": False},
    "bands": [one_tier(600)],
    "cap": {"fen": 5000, "cycle": "rolling_24h"},
    "nev": {
        "percent": 50,
        "tariff": {
            "id": "nev-list",
            "name": "新能源车价目",
            "currency": "CNY",
            "grace": {"minutes": 60, "deductible": True},
            "bands": [one_tier(200)],
            "cap": {"fen": 1000, "cycle": "rolling_24h"},
        },
    },
}


def test_nev_tariff_prices_new_energy_vehicles_by_its_own_grace_bands_and_cap() -> None:
    tariff = tariff_from_dict(NEV_TARIFF)
    conventional = quote(tariff, at(27, 10), at(27, 13), nev=False)
    assert conventional.total_fen == 1800
    new_energy = quote(tariff, at(27, 10), at(27, 13), nev=True)
    # Billed from 11:00 (60 min deductible): 2 x 200, then half.
    assert (new_energy.subtotal_fen, new_energy.total_fen) == (400, 200)
    assert (new_energy.grace_minutes, new_energy.grace_deductible) == (60, True)
    assert new_energy.nev_tariff_id == "nev-list"
    assert new_energy.tariff_id == "with-nev-tariff"
    # Its cap, not the conventional one.
    long_stay = quote(tariff, at(27, 10), at(27, 22), nev=True)
    assert [(c.raw_fen, c.fen, c.cap_fen) for c in long_stay.cycles] == [(2200, 1000, 1000)]
    assert long_stay.total_fen == 500


def test_nev_tariff_with_a_daily_grace_takes_the_grace_of_the_stay_of_day() -> None:
    document = json.loads(json.dumps(NEV_TARIFF))
    document["nev"]["daily_grace"] = [{"minutes": 180}]
    document["nev"]["grace_minutes"] = 0
    tariff = tariff_from_dict(document)
    assert quote(tariff, at(27, 10), at(27, 13), nev=True, stay_of_day=1).total_fen == 0
    # Not deductible (the default): billed from entry, 4 units of the NEV list.
    assert quote(tariff, at(27, 10), at(27, 13, 1), nev=True, stay_of_day=1).total_fen == 400
    second = quote(tariff, at(27, 10), at(27, 13), nev=True, stay_of_day=2)
    assert (second.subtotal_fen, second.grace_minutes) == (600, 0)


# Other v2 rules the examples do not show.


def test_tiers_restart_segment_prices_each_morning_at_the_first_hour_price() -> None:
    document = {
        "version": 2,
        "id": "t",
        "name": "t",
        "currency": "CNY",
        "tiers_restart": "segment",
        "bands": [
            {
                "name": "day",
                "from": "08:00",
                "to": "20:00",
                "tiers": [
                    {"after_minutes": 0, "unit_minutes": 60, "unit_fen": 500},
                    {"after_minutes": 60, "unit_minutes": 60, "unit_fen": 200},
                ],
            },
            {"name": "night", "from": "20:00", "to": "08:00", "flat": 0},
        ],
    }
    result = quote(tariff_from_dict(document), at(27, 10), at(28, 10), nev=False)
    assert result.total_fen == (500 + 9 * 200) + 0 + (500 + 200)
    morning = [c for c in result.charges if c.at >= at(28, 8)]
    assert [(c.tier, c.tier_origin) for c in morning] == [(0, at(28, 8)), (1, at(28, 8))]
    document["tiers_restart"] = "stay"
    assert quote(tariff_from_dict(document), at(27, 10), at(28, 10), nev=False).total_fen == (
        500 + 9 * 200 + 2 * 200
    )


def test_tiers_restart_cycle_with_a_daily_cycle_counts_from_the_reset() -> None:
    document = {
        "version": 2,
        "id": "t",
        "name": "t",
        "currency": "CNY",
        "tiers_restart": "cycle",
        "bands": [
            {
                "name": "all-day",
                "from": "00:00",
                "to": "00:00",
                "tiers": [
                    {"after_minutes": 0, "unit_minutes": 60, "unit_fen": 500},
                    {"after_minutes": 60, "unit_minutes": 60, "unit_fen": 100},
                ],
            }
        ],
        # No amount: the cycles only restart the tiers.
        "cap": {"cycle": "daily", "reset_at": "06:00"},
    }
    result = quote(tariff_from_dict(document), at(27, 4), at(27, 8), nev=False)
    # The first cycle began at 06:00 the day before: clipped to the billable start.
    assert [(c.at.hour, c.tier, c.tier_origin) for c in result.charges] == [
        (4, 0, at(27, 4)),
        (5, 1, at(27, 4)),
        (6, 0, at(27, 6)),
        (7, 1, at(27, 6)),
    ]
    assert [(c.raw_fen, c.fen, c.cap_fen) for c in result.cycles] == [(600, 600, None)] * 2
    assert result.total_fen == 1200


def test_a_unit_running_past_the_cycle_start_keeps_its_tier_and_the_next_restarts() -> None:
    # Second-tier units of 100 min from 21:00: the one starting 18:40 the next
    # day runs to 20:20, past cycle 2's start at 20:00. Units are laid end to
    # end, so cycle 2's first unit starts at 20:20, 20 min into the cycle: the
    # first-hour price again, its tier counted from 20:00.
    document = json.loads(json.dumps(GANZHOU))
    document["bands"][0]["tiers"][1]["unit_minutes"] = 100
    result = quote(tariff_from_dict(document), at(27, 20), at(28, 22), nev=False)
    around = [c for c in result.charges if at(28, 18) <= c.at < at(28, 22)]
    assert [(c.at, c.tier, c.tier_origin) for c in around] == [
        (at(28, 18, 40), 1, at(27, 20)),
        (at(28, 20, 20), 0, at(28, 20)),
        (at(28, 21, 20), 1, at(28, 20)),
    ]
    assert [(c.raw_fen, c.fen) for c in result.cycles] == [(400 + 14 * 100, 1800), (500, 500)]


# The quote as JSON: v1 quotes keep their shape.


def test_a_v1_quote_keeps_its_json_shape_and_cycles_name_their_cap() -> None:
    document = json.loads(
        quote_to_json(quote(tariff_from_dict(SUIZHOU), at(27, 8), at(27, 18), nev=False))
    )
    assert set(document) == {
        "tariff_id",
        "currency",
        "total_fen",
        "entry",
        "exit",
        "nev",
        "nev_applied",
        "grace_minutes",
        "grace_deductible",
        "within_grace",
        "billable_start",
        "segments",
        "charges",
        "cycles",
        "subtotal_fen",
        "nev_percent",
    }
    assert set(document["charges"][0]) == {"at", "band", "tier", "unit_fen", "fen", "partial"}
    assert set(document["segments"][0]) == {"start", "end", "band", "raw_fen", "fen"}
    assert document["cycles"][0]["cap_fen"] == 2000


def test_a_v2_quote_round_trips_through_json() -> None:
    result = quote(
        tariff_from_dict(DAY_TYPES),
        oct_at(9, 19),
        oct_at(10, 8, 30),
        nev=False,
        calendars=[OCTOBER],
    )
    assert msgspec.json.decode(quote_to_json(result), type=Quote) == result
    ganzhou = quote(tariff_from_dict(GANZHOU), at(27, 20), at(28, 21), nev=False)
    document = json.loads(quote_to_json(ganzhou))
    assert document["tiers_restart"] == "cycle"
    assert document["charges"][-1]["tier_origin"] == "2026-11-28T20:00:00+08:00"
    assert msgspec.json.decode(quote_to_json(ganzhou), type=Quote) == ganzhou


def test_the_contract_examples_decode_from_json_text() -> None:
    for document in (GANZHOU, RISING, REMAINDER, DAY_TYPES, NEV_DAILY, NEV_TARIFF):
        tariff = decode_tariff(json.dumps(document, ensure_ascii=False).encode())
        assert isinstance(tariff, Tariff)
        assert tariff == tariff_from_dict(document)
        assert tariff.contract_version == 2
