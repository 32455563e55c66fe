"""A driver takes a copy of their data (issue 19, point 3): the account, its plates,
stays, mandates and reports in one JSON download, nobody else's, a few a day."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kits import bearer
from litestar.testing import AsyncTestClient

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
