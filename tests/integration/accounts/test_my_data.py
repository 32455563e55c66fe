"""A driver takes a copy of their data (issue 19, point 3): the account, its plates,
stays, mandates and reports in one JSON download, nobody else's, a few a day."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.bills import service as bills
from parking.seed.city import DEMO_LOT

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[dict[str, Any]]]
ALICE, BOB = "13800000191", "13800000192"


async def test_a_driver_exports_their_own_data_and_nobody_elses(api: Client, login: Login) -> None:
    alice = bearer((await login(ALICE))["access_token"])
    bob = bearer((await login(BOB))["access_token"])
    assert (await api.post("/v1/me/vehicles", json={"plate": "赣B19001"}, headers=alice)).is_success
    assert (await api.post("/v1/me/vehicles", json={"plate": "赣B19002"}, headers=bob)).is_success
    reported = await api.post(
        "/v1/reports",
        json={"lot_id": DEMO_LOT, "category": "facility_damage", "text": "指示牌坏了"},
        headers=alice,
    )
    assert reported.status_code == 201, reported.text

    got = await api.get("/v1/me/export", headers=alice)
    assert got.status_code == 200, got.text
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["cache-control"] == "no-store"
    data = got.json()
    assert data["account"]["phone"] == "+86" + ALICE
    assert [v["plate"] for v in data["vehicles"]] == ["赣B19001"]
    assert [r["id"] for r in data["reports"]] == [reported.json()["id"]]
    assert (data["stays"], data["contactless"]) == ([], [])
    assert "赣B19002" not in got.text
    assert BOB not in got.text
    # an export reads much: five a day
    codes = [(await api.get("/v1/me/export", headers=alice)).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    assert (await api.get("/v1/me/export")).status_code == 401


async def test_a_driver_deletes_their_account_and_the_money_stays_owed_by_the_plate(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    pair = await login(ALICE)
    alice = bearer(pair["access_token"])
    account = (await api.get("/v1/me", headers=alice)).json()["id"]
    assert (await api.post("/v1/me/vehicles", json={"plate": "赣B19001"}, headers=alice)).is_success
    now = datetime.now(UTC)
    async with city_db.transaction():
        bill = await bills.open_bill(
            city_db, session_id="s-del-1", lot_id=DEMO_LOT, plate="赣B19001",
            account_id=account, amount_fen=700, tariff_id="suizhou-zone1", tariff_version=1,
            quote=b"{}", closed_at=now, now=now,
        )  # fmt: skip
    assert bill is not None

    gone = await api.delete("/v1/me", headers=alice)
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"plates_released": 1, "logins_revoked": 1}
    row = await city_db.fetchrow(
        "SELECT status, phone, deleted_at FROM accounts WHERE id = $1", account
    )
    assert row is not None
    assert (row["status"], row["phone"]) == ("deleted", None)
    assert row["deleted_at"] is not None
    # the login is over: the access token and the refresh token are refused
    assert (await api.get("/v1/me", headers=alice)).status_code == 401
    refreshed = await api.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401
    # the plate is free; the bill stays, billed to the pseudonymous account, owed by the plate
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM vehicles WHERE plate = '赣B19001' AND released_at IS NULL"
        )
        == 0
    )
    kept = await city_db.fetchrow(
        "SELECT status, plate, account_id FROM bills WHERE id = $1", bill.id
    )
    assert kept is not None
    assert (kept["status"], kept["plate"], kept["account_id"]) == ("open", "赣B19001", account)
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'account.delete' AND actor = $1", account
        )
        == 1
    )
    # no account names the phone any more: a later login makes a new, empty one
    assert (
        await city_db.fetchval("SELECT count(*) FROM accounts WHERE phone = $1", "+86" + ALICE) == 0
    )
    assert (await api.delete("/v1/me", headers=alice)).status_code == 401
