"""Calendars of day types as data (issue 16, point 2): the seed ships 2026's notice,
`parking calendar import` loads a JSON or CSV edition, the API imports and lists them,
editions are versioned (append-only, audited), a file at fault names its field, and the
pricer classes a date by the newest edition that covers it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import chinese_calendar
import pytest
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.auth.model import Role
from parking.pricing import Pricer
from parking.seed.service import seed_calendars
from parking.tariffs.calendar import classify

Client = AsyncTestClient[Any]


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parking", "calendar", *args],
        env={**os.environ, "PARKING_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_seed_ships_the_2026_notice_and_the_pricer_classes_its_days(
    city_db: asyncpg.Connection,
) -> None:
    [shipped] = seed_calendars()
    assert shipped.version == "cn-2026.1"
    stored = await city_db.fetchval("SELECT version FROM calendars")
    assert stored == "cn-2026.1"
    pricer = await Pricer.load(city_db)
    calendars = pricer.rules.calendars
    # the contract's example days: 10-01..07 holidays, Saturday 10-10 worked, 10-17 rest
    assert classify(date(2026, 10, 1), calendars) == ("holiday", "cn-2026.1")
    assert classify(date(2026, 10, 10), calendars) == ("workday", "cn-2026.1")
    assert classify(date(2026, 10, 17), calendars) == ("rest_day", "cn-2026.1")
    assert classify(date(2026, 2, 14), calendars) == ("workday", "cn-2026.1")  # 春节调休
    # a date outside every calendar: by weekday, and nothing named
    assert classify(date(2027, 10, 1), calendars) == ("workday", None)


def test_the_shipped_2026_calendar_equals_the_chinese_calendar_librarys() -> None:
    """An independent source for the notice: the chinese-calendar package's 2026."""
    [shipped] = seed_calendars()
    holidays = sorted(d for d in chinese_calendar.holidays if d.year == 2026)
    workdays = sorted(d for d in chinese_calendar.workdays if d.year == 2026)
    assert list(shipped.holidays) == holidays
    assert list(shipped.workdays) == workdays


async def test_the_cli_imports_json_and_csv_editions_and_refuses_a_repeat_or_a_bad_file(
    city_db: asyncpg.Connection, city_db_url: str, tmp_path: Path
) -> None:
    corrected = tmp_path / "cn-2026.2.json"
    document = {
        "version": "cn-2026.2",
        "name": "2026 更正版",
        "years": [2026],
        "holidays": ["2026-10-01", "2026-10-02"],
        "workdays": ["2026-10-11"],
    }
    corrected.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    done = _cli(city_db_url, "import", str(corrected))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "version": "cn-2026.2", "years": [2026], "holidays": 2, "workdays": 1,
    }  # fmt: skip
    again = _cli(city_db_url, "import", str(corrected))
    assert again.returncode != 0
    assert "exists already" in again.stderr

    rows = tmp_path / "cn-2027.csv"
    rows.write_text("date,kind\n2027-01-01,holiday\n2027-02-20,workday\n", encoding="utf-8")
    bare = _cli(city_db_url, "import", str(rows))
    assert bare.returncode != 0
    assert "--version" in bare.stderr
    csv_done = _cli(
        city_db_url, "import", str(rows), "--version", "cn-2027.1", "--name", "2027 节假日"
    )
    assert csv_done.returncode == 0, csv_done.stderr

    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps({**document, "version": "x1", "workdays": ["2026-10-12"]}), encoding="utf-8"
    )
    refused = _cli(city_db_url, "import", str(broken))
    assert refused.returncode != 0
    assert "workdays[0]" in refused.stderr

    listed = _cli(city_db_url, "list")
    assert [json.loads(line)["calendar"]["version"] for line in listed.stdout.splitlines()] == [
        "cn-2027.1", "cn-2026.2", "cn-2026.1",
    ]  # fmt: skip
    # the newest edition covering a date decides
    pricer = await Pricer.load(city_db)
    calendars = pricer.rules.calendars
    assert classify(date(2026, 10, 3), calendars) == ("rest_day", "cn-2026.2")
    assert classify(date(2026, 10, 11), calendars) == ("workday", "cn-2026.2")
    assert classify(date(2027, 2, 20), calendars) == ("workday", "cn-2027.1")
    audited = await city_db.fetch(
        "SELECT target FROM audit_log WHERE action = 'calendar.import' ORDER BY id"
    )
    assert [r["target"] for r in audited][-2:] == ["calendar:cn-2026.2", "calendar:cn-2027.1"]
    with pytest.raises(asyncpg.PostgresError):
        await city_db.execute("UPDATE calendars SET name = 'x'")


async def test_the_api_imports_for_the_city_and_refuses_a_companys_operator(
    api: Client, token_for: Callable[..., str]
) -> None:
    city = bearer(token_for(Role.CITY, "zhao"))
    operator = bearer(token_for(Role.OPERATOR, "alice"))
    edition = {"version": "cn-2026.3", "name": "2026 第三版", "years": [2026], "holidays": []}
    refused = await api.post("/v1/calendars", json=edition, headers=operator)
    assert refused.status_code == 403, refused.text
    made = await api.post("/v1/calendars", json=edition, headers=city)
    assert made.status_code == 201, made.text
    assert made.json()["calendar"]["version"] == "cn-2026.3"
    assert (await api.post("/v1/calendars", json=edition, headers=city)).status_code == 409
    bad = await api.post(
        "/v1/calendars", json={**edition, "version": "v9", "holidays": ["2025-01-01"]}, headers=city
    )
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "holidays[0]" in bad.json()["detail"]
    unknown = await api.post("/v1/calendars", json={**edition, "extra": 1}, headers=city)
    assert unknown.status_code == 400
    listed = (await api.get("/v1/calendars", headers=operator)).json()
    assert [v["calendar"]["version"] for v in listed] == ["cn-2026.3", "cn-2026.1"]
