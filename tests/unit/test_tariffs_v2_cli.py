"""`parking tariff check` and `parking tariff quote` with contract v2 documents,
calendar files and the stay of the day; and v2 tariffs in words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from parking.tariffs import tariff_from_dict
from parking.tariffs.cli import tariff
from parking.tariffs.words import describe

DAY_TYPES: dict[str, Any] = {
    "version": 2,
    "id": "district-streets",
    "name": "城区路内 工作日收费",
    "currency": "CNY",
    "schedules": [
        {
            "days": ["workday"],
            "bands": [
                {
                    "name": "day",
                    "from": "07:30",
                    "to": "20:00",
                    "partial_unit": {"free_up_to_minutes": 10},
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
    "nev": {
        "daily_grace": [{"minutes": 60, "deductible": True}],
        "grace_minutes": 0,
        "percent": 100,
    },
}

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
    "cap": {"fen": [2000, 3000], "cycle": "rolling_24h"},
}

CALENDAR: dict[str, Any] = {
    "version": "test-2026.1",
    "name": "2026",
    "years": [2026],
    "holidays": [f"2026-10-0{d}" for d in range(1, 8)],
    "workdays": ["2026-10-10"],
}


def write(folder: Path, name: str, document: dict[str, Any]) -> str:
    path = folder / name
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return str(path)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(tariff, list(args))
    return result.exit_code, result.output


def test_check_summarises_schedules_restart_and_rising_caps(tmp_path: Path) -> None:
    code, output = run("check", write(tmp_path, "d.json", DAY_TYPES))
    assert code == 0, output
    assert output.splitlines()[0] == (
        "ok: district-streets (城区路内 工作日收费), CNY, Asia/Shanghai, contract v2"
    )
    assert "  schedule 0: workday" in output
    assert (
        "    band day 07:30-20:00: from 0 min: 3.00 per 30 min; partial unit free up to 10 min"
        in output
    )
    assert "  schedule 1: rest_day, holiday" in output
    assert (
        "  nev daily grace (stay 1, 2, ... of the day in district-streets): 60 min deductible"
        in output
    )
    code, output = run("check", write(tmp_path, "g.json", GANZHOU))
    assert code == 0, output
    assert "  tiers restart per cycle" in output
    assert "  cap: 20.00, 30.00 per rolling_24h (cycle 1, 2, ...; the last repeats)" in output


def test_check_names_the_v2_field_at_fault(tmp_path: Path) -> None:
    document = {k: v for k, v in GANZHOU.items() if k != "version"}
    code, output = run("check", write(tmp_path, "g.json", document))
    assert code != 0
    assert (
        'tiers_restart: a contract version 2 field: the document must declare "version": 2'
        in output
    )


def quote_json(*args: str) -> dict[str, Any]:
    code, output = run("quote", *args)
    assert code == 0, output
    document: dict[str, Any] = json.loads(output)
    return document


def test_quote_reads_dates_by_the_calendar_files_given(tmp_path: Path) -> None:
    tariff_file = write(tmp_path, "d.json", DAY_TYPES)
    stay = ("--entry", "2026-10-09T19:00:00+08:00", "--exit", "2026-10-10T08:30:00+08:00")
    with_calendar = quote_json(
        tariff_file, *stay, "--calendar", write(tmp_path, "c.json", CALENDAR)
    )
    assert with_calendar["total_fen"] == 1200
    assert with_calendar["calendars"] == ["test-2026.1"]
    assert [s["day_type"] for s in with_calendar["segments"]] == ["workday"] * 3
    by_weekday = quote_json(tariff_file, *stay)
    assert by_weekday["total_fen"] == 600
    assert by_weekday["dates_by_weekday"] == ["2026-10-09", "2026-10-10"]


def test_quote_takes_the_stay_of_the_day_for_the_daily_grace(tmp_path: Path) -> None:
    tariff_file = write(tmp_path, "d.json", DAY_TYPES)
    stay = ("--entry", "2026-10-09T09:00:00+08:00", "--exit", "2026-10-09T10:30:00+08:00", "--nev")
    first = quote_json(tariff_file, *stay)
    assert (first["total_fen"], first["stay_of_day"]) == (300, 1)
    second = quote_json(tariff_file, *stay, "--stay-of-day", "2")
    assert (second["total_fen"], second["stay_of_day"]) == (900, 2)


def test_quote_prints_the_cycle_caps_and_tier_origins(tmp_path: Path) -> None:
    document = quote_json(
        write(tmp_path, "g.json", GANZHOU),
        "--entry",
        "2026-11-27T20:00:00+08:00",
        "--exit",
        "2026-11-28T21:00:00+08:00",
    )
    assert document["total_fen"] == 2400
    assert [c["cap_fen"] for c in document["cycles"]] == [2000, 3000]
    assert document["charges"][-1]["tier_origin"] == "2026-11-28T20:00:00+08:00"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--stay-of-day", "0"), "0 is not in the range x>=1"),
        (("--calendar", "{bad}"), "workdays[0]: 2026-10-12 is a Monday"),
    ],
)
def test_quote_refuses_a_bad_stay_of_day_or_calendar(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    bad = write(tmp_path, "bad.json", {**CALENDAR, "workdays": ["2026-10-12"]})
    code, output = run(
        "quote",
        write(tmp_path, "d.json", DAY_TYPES),
        "--entry",
        "2026-10-09T09:00:00+08:00",
        "--exit",
        "2026-10-09T10:30:00+08:00",
        *(bad if arg == "{bad}" else arg for arg in args),
    )
    assert code != 0
    assert message in output


# In words, for the driver's page.


def test_a_day_type_schedule_reads_per_day_type() -> None:
    assert describe(tariff_from_dict(DAY_TYPES)) == [
        "【工作日】day（07:30–20:00）：每30分钟3元（最后不足一个计费单位且不超过10分钟的部分不收费）",
        "【工作日】night（20:00–07:30）：每次0元",
        "【休息日、节假日】free（全天）：每次0元",
        "新能源车：当日第1次停车免费1小时，超时后扣除免费时长计费，之后每次不免费",
    ]


def test_ganzhou_reads_with_its_restart_and_rising_caps() -> None:
    assert describe(tariff_from_dict(GANZHOU)) == [
        "免费停车30分钟，超时从入场起计费",
        "全天：前1小时每小时4元，之后每小时1元",
        "每满24小时重新按首段价格计费",
        "第1个24小时最高收费20元，之后每24小时最高收费30元",
    ]


def test_a_nev_tariff_reads_as_its_own_prices() -> None:
    document = {
        **GANZHOU,
        "cap": {"fen": 2000, "cycle": "daily"},
        "tiers_restart": "segment",
        "nev": {
            "percent": 50,
            "tariff": {
                "id": "nev",
                "name": "新能源价目",
                "currency": "CNY",
                "bands": [{"name": "全天", "from": "00:00", "to": "00:00", "flat": 500}],
            },
        },
    }
    assert describe(tariff_from_dict(document))[-4:] == [
        "每个时段重新按首段价格计费",
        "每日（00:00起）最高收费20元",
        "新能源车：按5折收费",
        "新能源车按「新能源价目」：全天：每次5元",
    ]
