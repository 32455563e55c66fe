from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from parking.auth.model import Role

SUIZHOU = {
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

Client = AsyncTestClient  # type: ignore[type-arg]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_quote_api_and_cli_return_the_same_breakdown(
    api: Client, token_for: Callable[..., str], tmp_path: Path
) -> None:
    entry, exit_ = "2026-11-27T08:00:00+08:00", "2026-11-28T09:10:00+08:00"
    response = await api.post(
        "/v1/tariffs/quote",
        json={"tariff": SUIZHOU, "entry": entry, "exit": exit_},
        headers=bearer(token_for(Role.DRIVER)),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    document = tmp_path / "suizhou.json"
    document.write_text(json.dumps(SUIZHOU, ensure_ascii=False))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parking",
        "tariff",
        "quote",
        str(document),
        "--entry",
        entry,
        "--exit",
        exit_,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0
    from_cli = json.loads(stdout)
    assert body["quote"] == from_cli
    # First 24 h capped at 2000; then units at 08:00 and 09:00 (partial) of 200 each.
    assert body["total_fen"] == from_cli["total_fen"] == 2000 + 200 + 200


async def test_quote_at_a_lot_uses_its_tariff_and_the_plate(
    api: Client, token_for: Callable[..., str]
) -> None:
    response = await api.post(
        "/v1/tariffs/quote",
        json={
            "lot_id": "GZ-DEMO-01",
            "plate": "赣B12345",
            "entry": "2026-11-27T10:00:00+08:00",
            "exit": "2026-11-27T11:01:00+08:00",
        },
        headers=bearer(token_for(Role.DRIVER)),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        body["total_fen"],
        body["tariff_id"],
        body["tariff_version"],
        body["vehicle_class"],
    ) == (
        500,
        "suizhou-zone1",
        1,
        1,
    )
    assert [c["fen"] for c in body["quote"]["charges"]] == [300, 200]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"tariff": {**SUIZHOU, "bands": []}}, 400, "bands"),
        ({"tariff": {**SUIZHOU, "colour": "red"}}, 400, "colour"),
        ({"tariff": SUIZHOU, "exit": "2026-11-27T09:00:00+08:00"}, 400, "exit"),
        ({"tariff": SUIZHOU, "amount": 1}, 400, "amount"),
        ({"tariff": SUIZHOU, "lot_id": "GZ-DEMO-01"}, 400, "exactly one"),
        ({"lot_id": "GZ-NOPE"}, 422, "GZ-NOPE"),
        ({"tariff": SUIZHOU, "entry": "2026-11-27T10:00:00"}, 400, "entry"),
        ({"tariff": SUIZHOU, "exit": "2999-01-01T00:00:00+08:00"}, 400, "longer than"),
    ],
)
async def test_bad_quote_requests_are_problem_details(
    api: Client, token_for: Callable[..., str], body: dict[str, object], status: int, needle: str
) -> None:
    payload = {"entry": "2026-11-27T10:00:00+08:00", "exit": "2026-11-27T11:00:00+08:00", **body}
    response = await api.post(
        "/v1/tariffs/quote", json=payload, headers=bearer(token_for(Role.DRIVER))
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert needle in response.text


async def test_operators_version_tariffs_and_assign_them_to_lots(
    api: Client, token_for: Callable[..., str]
) -> None:
    operator = bearer(token_for(Role.OPERATOR, "alice"))
    night = {**SUIZHOU, "id": "ganzhou-night", "name": "夜间"}
    created = await api.post(
        "/v1/operator/tariffs",
        json={"document": night, "effective_from": "2026-01-01T00:00:00+08:00"},
        headers=operator,
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    again = await api.post(
        "/v1/operator/tariffs",
        json={"document": night, "effective_from": "2026-01-01T00:00:00+08:00"},
        headers=operator,
    )
    assert again.status_code == 409
    v2 = await api.post(
        "/v1/operator/tariffs/ganzhou-night/versions",
        json={
            "document": {**night, "name": "夜间 v2"},
            "effective_from": "2099-01-01T00:00:00+08:00",
        },
        headers=operator,
    )
    assert v2.status_code == 201, v2.text
    listed = await api.get("/v1/operator/tariffs/ganzhou-night/versions", headers=operator)
    assert [v["version"] for v in listed.json()] == [1, 2]
    assigned = await api.put(
        "/v1/operator/lots/GZ-DEMO-01/tariffs/1",
        json={"tariff_id": "ganzhou-night"},
        headers=operator,
    )
    assert assigned.status_code == 204, assigned.text
    quote = await api.post(
        "/v1/tariffs/quote",
        json={
            "lot_id": "GZ-DEMO-01",
            "plate": "赣B12345",
            "entry": "2026-11-27T10:00:00+08:00",
            "exit": "2026-11-27T11:00:00+08:00",
        },
        headers=operator,
    )
    assert quote.json()["tariff_id"] == "ganzhou-night"


async def test_tariff_routes_need_a_token_and_the_operator_role(
    api: Client, token_for: Callable[..., str]
) -> None:
    body = {"document": SUIZHOU, "effective_from": "2026-01-01T00:00:00+08:00"}
    assert (await api.post("/v1/operator/tariffs", json=body)).status_code == 401
    driver = await api.post(
        "/v1/operator/tariffs", json=body, headers=bearer(token_for(Role.DRIVER))
    )
    assert driver.status_code == 403
    forged = await api.post(
        "/v1/operator/tariffs", json=body, headers=bearer(token_for(Role.OPERATOR)[:-3] + "abc")
    )
    assert forged.status_code == 401
