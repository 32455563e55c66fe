"""Tariffs v2 at seeded lots, through the API on the real stack (issue 16): 赣县区's
street spaces charge on workdays only (a stay across the adjusted working Saturday
2026-10-10 is billed by the workday schedule, from the calendar stored in PostgreSQL),
and a new-energy plate's second stay of the day gets the second daily grace (its
earlier stays counted from the sessions stored)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.auth.model import Role
from parking.clock import SHANGHAI
from parking.pricing import Pricer
from parking.pricing import service as pricing

Client = AsyncTestClient[Any]
NEV = "赣BD12345"


def at(month: int, day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, month, day, hh, mm, tzinfo=SHANGHAI)


async def _street(conn: asyncpg.Connection) -> str:
    lot: str = await conn.fetchval(
        "SELECT lot_id FROM lot_tariffs WHERE tariff_id = 'ganzhou-gx-onstreet' "
        "AND vehicle_class = 1 ORDER BY lot_id LIMIT 1"
    )
    return lot


async def _quote(api: Client, who: dict[str, str], **body: Any) -> dict[str, Any]:
    got = await api.post(
        "/v1/tariffs/quote",
        json={k: v.isoformat() if isinstance(v, datetime) else v for k, v in body.items()},
        headers=who,
    )
    assert got.status_code == 200, got.text
    answer: dict[str, Any] = got.json()
    return answer


async def test_a_stay_across_the_adjusted_working_saturday_is_billed_as_a_workday(
    api: Client, city_db: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    lot = await _street(city_db)
    city = bearer(token_for(Role.CITY, "zhao"))
    # Fri 19:00 to Sat 08:30: 2 units Friday evening (07:30-20:00, 150 per 30 min) and,
    # 10-10 being a working day by the 2026 notice, 2 units Saturday morning
    worked = await _quote(api, city, lot_id=lot, plate="赣B12345", entry=at(10, 9, 19),
                          exit=at(10, 10, 8, 30))  # fmt: skip
    assert worked["total_fen"] == 600
    days = {s["date"]: (s["day_type"], s.get("calendar")) for s in worked["quote"]["segments"]}
    assert days["2026-10-10"] == ("workday", "cn-2026.1")
    assert worked["quote"]["calendars"] == ["cn-2026.1"]
    # the next Saturday is a rest day: only Friday's 2 units
    rested = await _quote(api, city, lot_id=lot, plate="赣B12345", entry=at(10, 16, 19),
                          exit=at(10, 17, 8, 30))  # fmt: skip
    assert rested["total_fen"] == 300
    days = {s["date"]: s["day_type"] for s in rested["quote"]["segments"]}
    assert days["2026-10-17"] == "rest_day"
    # a holiday: free
    holiday = await _quote(api, city, lot_id=lot, plate="赣B12345", entry=at(10, 2, 9),
                           exit=at(10, 2, 12))  # fmt: skip
    assert holiday["total_fen"] == 0


async def _stay(
    conn: asyncpg.Connection, sid: str, lot: str, entry: datetime, exit: datetime
) -> None:
    """A stay of the plate as the persister stores a closed one."""
    await conn.execute(
        """INSERT INTO sessions (id, lot_id, plate, plate_raw, status, entry_at, exit_at,
                                 vehicle_class, fee_fen)
           VALUES ($1, $2, $3, $3, 'closed', $4, $5, 1, 0)""",
        sid,
        lot,
        NEV,
        entry,
        exit,
    )


async def test_a_new_energy_plates_second_stay_of_the_day_gets_the_second_grace(
    api: Client, city_db: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    lot = await _street(city_db)
    other = await city_db.fetchval(
        "SELECT lot_id FROM lot_tariffs WHERE tariff_id = 'ganzhou-gx-onstreet' "
        "AND vehicle_class = 1 AND lot_id <> $1 ORDER BY lot_id LIMIT 1",
        lot,
    )
    city = bearer(token_for(Role.CITY, "zhao"))
    # Wednesday 2026-12-02: the day's first stay 09:00-12:00, 120 min deducted: 11:00-12:00
    first = await _quote(api, city, lot_id=lot, plate=NEV, entry=at(12, 2, 9), exit=at(12, 2, 12))
    assert (first["total_fen"], first["quote"]["stay_of_day"]) == (300, 1)
    await _stay(city_db, "s-nev-1", lot, at(12, 2, 9), at(12, 2, 12))
    # the second, at another lot of the same grace_group: 60 min deducted, 15:00-15:30
    second = await _quote(
        api, city, lot_id=other, plate=NEV, entry=at(12, 2, 14), exit=at(12, 2, 15, 30)
    )
    assert (second["total_fen"], second["quote"]["stay_of_day"]) == (150, 2)
    await _stay(city_db, "s-nev-2", other, at(12, 2, 14), at(12, 2, 15, 30))
    # beyond the list: nev.grace_minutes (15, not deducted): the whole half hour
    third = await _quote(
        api, city, lot_id=lot, plate=NEV, entry=at(12, 2, 16), exit=at(12, 2, 16, 30)
    )
    assert (third["total_fen"], third["quote"]["stay_of_day"]) == (150, 3)
    # the next day starts again; a stay entered before the others counts none of them
    assert (await _quote(api, city, lot_id=lot, plate=NEV, entry=at(12, 3, 9),
                         exit=at(12, 3, 12)))["quote"]["stay_of_day"] == 1  # fmt: skip
    assert (await _quote(api, city, lot_id=lot, plate=NEV, entry=at(12, 2, 8),
                         exit=at(12, 2, 8, 30)))["quote"]["stay_of_day"] == 1  # fmt: skip
    # the pricer and the API agree; stay_of_day given overrides the count
    pricer = await Pricer.load(city_db)
    count = pricer.daily_grace_count(lot_id=other, plate=NEV, entry=at(12, 2, 14))
    assert count is not None
    assert await pricing.stay_of_day(city_db, count, NEV, at(12, 2, 14)) == 2
    given = await _quote(api, city, lot_id=other, plate=NEV, entry=at(12, 2, 14),
                         exit=at(12, 2, 15, 30), stay_of_day=1)  # fmt: skip
    assert given["total_fen"] == 0
    # an ordinary plate's price does not depend on it: nothing to count
    assert pricer.daily_grace_count(lot_id=lot, plate="赣B12345", entry=at(12, 2, 14)) is None


async def test_operators_store_v2_documents_as_new_versions_and_bad_ones_name_the_field(
    api: Client, token_for: Callable[..., str]
) -> None:
    operator = bearer(token_for(Role.OPERATOR, "alice"))
    document: dict[str, Any] = {
        "version": 2, "id": "ops-rising", "name": "逐日递增封顶", "currency": "CNY",
        "bands": [{"name": "all", "from": "00:00", "to": "00:00",
                   "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 1000}]}],
        "cap": {"fen": [3000, 4000, 5000], "cycle": "rolling_24h"},
    }  # fmt: skip
    made = await api.post(
        "/v1/operator/tariffs",
        json={"document": document, "effective_from": "2026-12-01T00:00:00+08:00"},
        headers=operator,
    )
    assert made.status_code == 201, made.text
    later = {**document, "tiers_restart": "cycle", "cap": {"fen": [3000], "cycle": "rolling_24h"}}
    version = await api.post(
        "/v1/operator/tariffs/ops-rising/versions",
        json={"document": later, "effective_from": "2027-01-01T00:00:00+08:00"},
        headers=operator,
    )
    assert version.status_code == 201, version.text
    stored = (await api.get("/v1/operator/tariffs/ops-rising/versions", headers=operator)).json()
    assert [v["document"]["cap"]["fen"] for v in stored] == [[3000, 4000, 5000], [3000]]
    assert stored[1]["document"]["tiers_restart"] == "cycle"
    # 3 days under the first version: 3000 + 4000 + 5000
    three = await _quote(api, operator, tariff=document, entry=at(12, 2, 0), exit=at(12, 5, 0))
    assert three["total_fen"] == 12000
    undeclared = {k: v for k, v in later.items() if k != "version"}
    bad = await api.post(
        "/v1/operator/tariffs/ops-rising/versions",
        json={"document": undeclared, "effective_from": "2027-02-01T00:00:00+08:00"},
        headers=operator,
    )
    assert bad.status_code == 400
    assert "version" in bad.json()["detail"]
