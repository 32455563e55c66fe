from __future__ import annotations

from collections.abc import Callable

import asyncpg
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.auth.model import Role

Client = AsyncTestClient  # type: ignore[type-arg]
STAY = {"entry": "2026-11-27T08:00:00+08:00", "exit": "2026-11-27T18:00:00+08:00"}


async def quote(api: Client, token: str, plate: str) -> dict[str, object]:
    response = await api.post(
        "/v1/tariffs/quote",
        json={"lot_id": "GZ-DEMO-01", "plate": plate, **STAY},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_whitelisted_plate_parks_free_until_the_exemption_is_removed(
    api: Client, token_for: Callable[..., str], city_db_url: str
) -> None:
    operator = token_for(Role.OPERATOR, "bob")
    put = await api.post(
        "/v1/operator/exemptions/plates",
        json={"plate": "赣b 99999", "reason": "120 ambulance"},
        headers=bearer(operator),
    )
    assert put.status_code == 200, put.text
    assert put.json() == {"plate": "赣B99999", "reason": "120 ambulance"}
    free = await quote(api, operator, "赣B99999")
    assert (free["total_fen"], free["reason"]) == (0, "exempt:120 ambulance")
    removal = {"plate": "赣B99999"}
    gone = await api.post(
        "/v1/operator/exemptions/plates/removals", json=removal, headers=bearer(operator)
    )
    assert gone.status_code == 204
    assert (await quote(api, operator, "赣B99999"))["total_fen"] == 2000
    again = await api.post(
        "/v1/operator/exemptions/plates/removals", json=removal, headers=bearer(operator)
    )
    assert again.status_code == 404
    conn = await asyncpg.connect(city_db_url)
    try:
        actions = [
            r["action"] for r in await conn.fetch("SELECT action FROM audit_log ORDER BY id")
        ]
    finally:
        await conn.close()
    assert actions == ["exemption.plate.set", "exemption.plate.remove"]


async def test_a_city_can_exempt_a_plate_kind(api: Client, token_for: Callable[..., str]) -> None:
    operator = token_for(Role.OPERATOR)
    put = await api.put(
        "/v1/operator/exemptions/kinds/police", json={"reason": "公务"}, headers=bearer(operator)
    )
    assert put.status_code == 204, put.text
    assert (await quote(api, operator, "赣A0001警"))["reason"] == "exempt:公务"
    bad = await api.put(
        "/v1/operator/exemptions/kinds/tractor", json={"reason": "x"}, headers=bearer(operator)
    )
    assert bad.status_code == 400
    assert "unknown plate kind" in bad.json()["detail"]


async def test_a_monthly_pass_on_a_lot_group_prices_stays_at_zero(
    api: Client, token_for: Callable[..., str]
) -> None:
    operator = token_for(Role.OPERATOR)
    group = await api.put(
        "/v1/operator/lot-groups/demo",
        json={"name": "演示", "lots": ["GZ-DEMO-01"]},
        headers=bearer(operator),
    )
    assert group.status_code == 204, group.text
    issued = await api.post(
        "/v1/operator/passes",
        json={
            "plate": "赣B12345",
            "group_id": "demo",
            "valid_from": "2026-11-01T00:00:00+08:00",
            "valid_until": "2026-12-01T00:00:00+08:00",
        },
        headers=bearer(operator),
    )
    assert issued.status_code == 201, issued.text
    pass_id = issued.json()["id"]
    covered = await quote(api, operator, "赣B12345")
    assert (covered["total_fen"], covered["reason"]) == (0, f"monthly_pass:{pass_id}")
    revoked = await api.delete(f"/v1/operator/passes/{pass_id}", headers=bearer(operator))
    assert revoked.status_code == 204
    assert (await quote(api, operator, "赣B12345"))["total_fen"] == 2000


async def test_unknown_lots_and_groups_are_refused(
    api: Client, token_for: Callable[..., str]
) -> None:
    operator = token_for(Role.OPERATOR)
    group = await api.put(
        "/v1/operator/lot-groups/bad",
        json={"name": "x", "lots": ["GZ-NOPE-1"]},
        headers=bearer(operator),
    )
    assert group.status_code == 404
    issued = await api.post(
        "/v1/operator/passes",
        json={
            "plate": "赣B12345",
            "group_id": "nope",
            "valid_from": "2026-11-01T00:00:00+08:00",
            "valid_until": "2026-12-01T00:00:00+08:00",
        },
        headers=bearer(operator),
    )
    assert issued.status_code == 404
    driver = await api.put(
        "/v1/operator/exemptions/kinds/police",
        json={"reason": "x"},
        headers=bearer(token_for(Role.DRIVER)),
    )
    assert driver.status_code == 403
