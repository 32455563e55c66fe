"""The replay checker's own fee engine reproduces every worked example of
``contracts/tariffs.md`` (v1 and v2) and agrees with the contract's properties: a
stay within grace is free, a longer stay never costs less, a cap holds per cycle."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from counterparts.replay.fees import FeeError, calendar_day_types, price, read_tariff
from parking.clock import SHANGHAI

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
SONGCHENG: dict[str, Any] = {
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


def _all_day(unit_fen: int, unit_minutes: int, **extra: Any) -> dict[str, Any]:
    band: dict[str, Any] = {
        "name": "all-day",
        "from": "00:00",
        "to": "00:00",
        "tiers": [{"after_minutes": 0, "unit_minutes": unit_minutes, "unit_fen": unit_fen}],
    }
    band.update(extra.pop("band", {}))
    return {"version": 2, "id": "t", "name": "t", "currency": "CNY", "bands": [band], **extra}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def hm(day: str, start: str, end: str, end_day: str | None = None) -> tuple[datetime, datetime]:
    return at(f"{day}T{start}"), at(f"{end_day or day}T{end}")


@pytest.mark.parametrize(
    ("start", "end", "fen"),
    [("10:00", "10:30", 0), ("10:00", "10:31", 300), ("10:00", "11:01", 500),
     ("10:00", "13:00", 700), ("08:00", "18:00", 2000)],
)  # fmt: skip
def test_the_suizhou_examples_of_the_contract(start: str, end: str, fen: int) -> None:
    assert price(read_tariff(SUIZHOU), *hm("2026-11-27", start, end)) == fen


@pytest.mark.parametrize(
    ("start", "end", "fen"),
    [("10:00", "11:00", 1000), ("10:00", "11:15", 1375), ("10:00", "12:00", 2500),
     ("20:00", "23:00", 1100)],
)  # fmt: skip
def test_the_beijing_examples_of_the_contract(start: str, end: str, fen: int) -> None:
    assert price(read_tariff(BEIJING), *hm("2026-11-27", start, end)) == fen


def test_the_songcheng_examples_restart_tiers_per_cycle() -> None:
    tariff = read_tariff(SONGCHENG)
    assert price(tariff, *hm("2026-11-27", "10:00", "10:31")) == 400
    assert price(tariff, *hm("2026-11-27", "10:00", "12:30")) == 600
    assert price(tariff, *hm("2026-11-27", "20:00", "21:00", "2026-11-28")) == 2400


def test_rising_caps_per_cycle() -> None:
    tariff = read_tariff(
        _all_day(1000, 60, cap={"fen": [3000, 4000, 5000], "cycle": "rolling_24h"})
    )
    start = at("2026-11-27T10:00")
    assert price(tariff, start, start + timedelta(days=3)) == 12000
    assert price(tariff, start, start + timedelta(days=4)) == 17000


def test_a_short_remainder_is_free_up_to_its_threshold() -> None:
    tariff = read_tariff(_all_day(200, 60, band={"partial_unit": {"free_up_to_minutes": 15}}))
    assert price(tariff, *hm("2026-11-27", "10:00", "12:10")) == 400
    assert price(tariff, *hm("2026-11-27", "10:00", "12:20")) == 600


def test_day_types_from_the_calendar() -> None:
    doc = {
        "version": 2, "id": "t", "name": "t", "currency": "CNY",
        "schedules": [
            {"days": ["workday"], "bands": [
                {"name": "day", "from": "07:30", "to": "20:00",
                 "tiers": [{"after_minutes": 0, "unit_minutes": 30, "unit_fen": 300}]},
                {"name": "night", "from": "20:00", "to": "07:30", "flat": 0}]},
            {"days": ["rest_day", "holiday"], "bands": [
                {"name": "free", "from": "00:00", "to": "00:00", "flat": 0}]},
        ],
    }  # fmt: skip
    days = calendar_day_types(
        [{"years": [2026], "holidays": [f"2026-10-0{d}" for d in range(1, 8)],
          "workdays": ["2026-10-10"]}]
    )  # fmt: skip
    tariff = read_tariff(doc)
    assert price(tariff, *hm("2026-10-09", "19:00", "08:30", "2026-10-10"), day_types=days) == 1200
    assert price(tariff, *hm("2026-10-17", "19:00", "20:30"), day_types=days) == 0
    assert price(tariff, *hm("2026-10-16", "19:00", "08:30", "2026-10-17"), day_types=days) == 600


def test_new_energy_daily_grace_follows_the_stay_of_the_day() -> None:
    tariff = read_tariff(
        _all_day(
            300, 30,
            nev={"daily_grace": [{"minutes": 120, "deductible": True},
                                 {"minutes": 60, "deductible": True}],
                 "grace_minutes": 0, "percent": 100},
        )
    )  # fmt: skip
    day = "2026-11-27"
    assert price(tariff, *hm(day, "09:00", "12:00"), nev=True, stay_of_day=1) == 600
    assert price(tariff, *hm(day, "14:00", "15:30"), nev=True, stay_of_day=2) == 300
    assert price(tariff, *hm(day, "16:00", "16:30"), nev=True, stay_of_day=3) == 300


def test_new_energy_grace_and_percent() -> None:
    tariff = read_tariff(SUIZHOU)
    assert price(tariff, *hm("2026-11-27", "10:00", "12:00"), nev=True) == 0
    # grace not deducted: 300 + 2 x 200 = 700, half of it
    assert price(tariff, *hm("2026-11-27", "10:00", "13:00"), nev=True) == 350


def test_an_exit_not_after_the_entry_is_an_error() -> None:
    start = at("2026-11-27T10:00")
    with pytest.raises(FeeError):
        price(read_tariff(SUIZHOU), start, start)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=7 * 24 * 60),
    first=st.integers(min_value=1, max_value=3 * 24 * 60),
    more=st.integers(min_value=0, max_value=24 * 60),
    doc=st.sampled_from([SUIZHOU, BEIJING, SONGCHENG]),
)
def test_a_longer_stay_never_costs_less_and_a_daily_cap_holds(
    start: int, first: int, more: int, doc: dict[str, Any]
) -> None:
    tariff = read_tariff(doc)
    entry = at("2026-11-23T00:00") + timedelta(minutes=start)
    shorter = price(tariff, entry, entry + timedelta(minutes=first))
    longer = price(tariff, entry, entry + timedelta(minutes=first + more))
    assert 0 <= shorter <= longer
    if doc is SUIZHOU:
        days = (first + more) // (24 * 60) + 1
        assert longer <= 2000 * days
