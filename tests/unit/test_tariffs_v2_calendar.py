"""Calendars of day types for tariff schedules: the contract's rule, and the JSON
and CSV files, with errors that name the field."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parking.tariffs import (
    Calendar,
    CalendarError,
    DayClass,
    DayType,
    calendar_from_dict,
    classify,
    decode_calendar,
    decode_calendar_csv,
)

# The State Council's 2026 notice for National Day, as the contract's example
# uses it: 1 to 7 October off, Saturday 10 October a working day.
NOTICE: dict[str, Any] = {
    "version": "cn-2026.1",
    "name": "2026 年部分节假日安排",
    "source": "test fixture",
    "years": [2026],
    "holidays": [f"2026-10-0{d}" for d in range(1, 8)],
    "workdays": ["2026-10-10"],
}


def test_the_json_file_decodes_into_a_calendar() -> None:
    calendar = decode_calendar(json.dumps(NOTICE, ensure_ascii=False).encode())
    assert calendar.version == "cn-2026.1"
    assert calendar.years == (2026,)
    assert calendar.holidays[0] == date(2026, 10, 1)
    assert calendar.workdays == (date(2026, 10, 10),)
    assert calendar_from_dict(NOTICE) == calendar


@pytest.mark.parametrize(
    ("day", "kind"),
    [
        (date(2026, 10, 1), "holiday"),  # a Thursday
        (date(2026, 10, 3), "holiday"),  # a Saturday inside the holiday
        (date(2026, 10, 9), "workday"),  # an ordinary Friday
        (date(2026, 10, 10), "workday"),  # the adjusted working Saturday
        (date(2026, 10, 11), "rest_day"),  # an ordinary Sunday
        (date(2026, 10, 17), "rest_day"),
        (date(2026, 10, 19), "workday"),
    ],
)
def test_day_types_follow_the_contract(day: date, kind: DayType) -> None:
    assert classify(day, [decode_calendar(json.dumps(NOTICE))]) == DayClass(kind, "cn-2026.1")


@pytest.mark.parametrize(
    ("day", "kind"),
    [
        (date(2027, 10, 1), "workday"),  # a Friday
        (date(2027, 10, 2), "rest_day"),
        (date(2025, 12, 31), "workday"),
    ],
)
def test_a_date_no_calendar_covers_is_classed_by_weekday(day: date, kind: DayType) -> None:
    assert classify(day, [decode_calendar(json.dumps(NOTICE))]) == DayClass(kind, None)
    assert classify(day, []) == DayClass(kind, None)


def test_the_first_calendar_covering_a_date_classes_it() -> None:
    first = Calendar(version="a", name="a", years=(2026,))
    second = decode_calendar(json.dumps(NOTICE))
    assert classify(date(2026, 10, 1), [first, second]) == DayClass("workday", "a")
    assert classify(date(2026, 10, 1), [second, first]) == DayClass("holiday", "cn-2026.1")


def with_field(field: str, value: Any) -> dict[str, Any]:
    return {**NOTICE, field: value}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in NOTICE.items() if k != field}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (with_field("version", "2026 v1"), "version: must be a slug"),
        (with_field("version", ""), "version: must be a slug"),
        (without("version"), "version: required field is missing"),
        (with_field("name", " "), "name: must not be empty"),
        (with_field("years", []), "years: must list at least one year"),
        (with_field("years", [2027, 2026]), "years[1]: must be after years[0] (2027)"),
        (with_field("years", [2026, 2026]), "years[1]: must be after years[0] (2026)"),
        (with_field("years", [26]), "years[0]: must be a year from 1900 to 9999, got 26"),
        (with_field("years", "2026"), "years: expected array, got str"),
        (
            with_field("holidays", ["2026-10-01", "2062-10-02"]),
            "holidays[1]: 2062-10-02 is outside the calendar's years 2026",
        ),
        (
            with_field("holidays", ["2026-10-01", "2026-10-01"]),
            "holidays[1]: 2026-10-01 is listed twice",
        ),
        (with_field("holidays", ["2026-13-01"]), "holidays[0]: Invalid RFC3339 encoded date"),
        (with_field("holidays", ["1 October"]), "holidays[0]: Invalid RFC3339 encoded date"),
        (
            with_field("workdays", ["2026-10-10", "2026-10-12"]),
            "workdays[1]: 2026-10-12 is a Monday; only a Saturday or Sunday can be made a "
            "working day",
        ),
        (
            with_field("workdays", ["2026-10-03"]),
            "workdays[0]: 2026-10-03 is also listed as a holiday",
        ),
        (with_field("weekends", []), "weekends: unknown field"),
    ],
)
def test_invalid_calendars_are_rejected_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(CalendarError) as caught:
        decode_calendar(json.dumps(document))
    assert str(caught.value).startswith(message)
    with pytest.raises(CalendarError) as from_dict:
        calendar_from_dict(document)
    assert str(from_dict.value) == str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"version": ', "$: malformed JSON"),
        (b"[]", "$: expected object, got array"),
        (b" " * (1 << 20) + b"{}", "$: file is larger than"),
        (
            json.dumps(NOTICE).replace('"years"', '"years": [2025], "years"').encode(),
            "years: duplicate key",
        ),
    ],
)
def test_files_that_are_not_calendars_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(CalendarError) as caught:
        decode_calendar(data)
    assert str(caught.value).startswith(message)


def test_calendar_error_is_a_value_error_with_path_and_reason() -> None:
    with pytest.raises(ValueError, match="workdays") as caught:
        decode_calendar(json.dumps(with_field("workdays", ["2026-10-12"])))
    error = caught.value
    assert isinstance(error, CalendarError)
    assert error.path == "workdays[0]"


# The CSV form.

CSV = """date,kind
2026-10-01,holiday
2026-10-02,holiday

2026-10-10,workday
"""


def test_the_csv_file_decodes_with_the_metadata_given() -> None:
    calendar = decode_calendar_csv(
        ("\ufeff" + CSV).encode(), version="cn-2026.1", name="2026", source="notice"
    )
    assert calendar == Calendar(
        version="cn-2026.1",
        name="2026",
        source="notice",
        years=(2026,),
        holidays=(date(2026, 10, 1), date(2026, 10, 2)),
        workdays=(date(2026, 10, 10),),
    )


def test_the_csv_years_can_be_given_wider_than_the_dates() -> None:
    calendar = decode_calendar_csv(CSV, version="v", name="n", years=[2026, 2027])
    assert calendar.years == (2026, 2027)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: the header must be date,kind; the file is empty"),
        ("day,type\n2026-10-01,holiday\n", "line 1: the header must be date,kind"),
        ("date,kind\n2026-10-01,holiday,extra\n", "line 2: expected 2 columns (date,kind), got 3"),
        ("date,kind\n2026-10-01,festival\n", "line 2, kind: must be one of holiday, workday"),
        ("date,kind\n\n1 Oct 2026,holiday\n", "line 3, date: must be a date YYYY-MM-DD"),
        ("date,kind\n20261001,holiday\n", "line 2, date: must be a date YYYY-MM-DD"),
        ("date,kind\n2026-02-30,holiday\n", "line 2, date: must be a date YYYY-MM-DD"),
        (
            "date,kind\n2026-10-01,holiday\n2026-10-12,workday\n",
            "line 3, date: 2026-10-12 is a Monday",
        ),
        (
            "date,kind\n2026-10-01,holiday\n2026-10-01,holiday\n",
            "line 3, date: 2026-10-01 is listed twice",
        ),
    ],
)
def test_invalid_csv_rows_are_rejected_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(CalendarError) as caught:
        decode_calendar_csv(text, version="v", name="n")
    assert str(caught.value).startswith(message)


def test_csv_metadata_errors_name_the_field() -> None:
    with pytest.raises(CalendarError, match=r"^version: must be a slug"):
        decode_calendar_csv(CSV, version="bad version", name="n")
    with pytest.raises(CalendarError, match=r"^years: must list at least one year"):
        decode_calendar_csv("date,kind\n", version="v", name="n")


# The rule over generated calendars.

DAYS_2026 = st.integers(0, 364).map(lambda n: date(2026, 1, 1) + timedelta(days=n))


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    holidays = draw(st.sets(DAYS_2026, max_size=30))
    weekends = st.sampled_from(
        sorted(
            d
            for d in (date(2026, 1, 1) + timedelta(days=n) for n in range(365))
            if d.weekday() >= 5
        )
    )
    workdays = draw(st.sets(weekends, max_size=8)) - holidays
    return Calendar(
        version="generated",
        name="generated",
        years=(2026,),
        holidays=tuple(sorted(holidays)),
        workdays=tuple(sorted(workdays)),
    )


@settings(max_examples=200, deadline=None)
@given(calendar=calendars(), day=DAYS_2026)
def test_every_covered_date_has_the_type_the_contract_defines(
    calendar: Calendar, day: date
) -> None:
    kind, version = classify(day, [calendar])
    assert version == "generated"
    if day in calendar.holidays:
        assert kind == "holiday"
    elif day in calendar.workdays:
        assert kind == "workday"
        assert day.weekday() >= 5
    elif day.weekday() < 5:
        assert kind == "workday"
    else:
        assert kind == "rest_day"


@settings(max_examples=100, deadline=None)
@given(calendar=calendars(), offset=st.integers(1, 3000))
def test_dates_outside_the_years_ignore_the_calendar(calendar: Calendar, offset: int) -> None:
    for day in (
        date(2026, 1, 1) - timedelta(days=offset),
        date(2026, 12, 31) + timedelta(days=offset),
    ):
        assert classify(day, [calendar]) == classify(day, [])
        assert classify(day, [calendar]).calendar is None
