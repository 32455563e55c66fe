from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kits import bearer
from litestar.testing import AsyncTestClient

from parking import config
from parking.api.app import create_app
from parking.auth.model import Role
from parking.config import Settings
from parking.tariffs import MAX_LISTED_CHARGES, quote, tariff_from_dict

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


async def cli_quote(tmp_path: Path, document: dict[str, object], entry: str, exit_: str) -> Any:
    path = tmp_path / "tariff.json"
    path.write_text(json.dumps(document, ensure_ascii=False))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parking",
        "tariff",
        "quote",
        str(path),
        "--entry",
        entry,
        "--exit",
        exit_,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0
    return json.loads(stdout)


async def test_quote_api_and_cli_return_the_same_breakdown(
    api: Client, token_for: Callable[..., str], tmp_path: Path
) -> None:
    entry, exit_ = "2026-11-27T08:00:00+08:00", "2026-11-28T09:10:00+08:00"
    # Pricing a document is an operator's right (drivers quote at a lot).
    response = await api.post(
        "/v1/tariffs/quote",
        json={"tariff": SUIZHOU, "entry": entry, "exit": exit_},
        headers=bearer(token_for(Role.OPERATOR)),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    from_cli = await cli_quote(tmp_path, SUIZHOU, entry, exit_)
    assert body["quote"] == from_cli
    # First 24 h capped at 2000; then units at 08:00 and 09:00 (partial) of 200 each.
    assert body["total_fen"] == from_cli["total_fen"] == 2000 + 200 + 200


async def test_a_driver_may_quote_at_a_lot_but_not_price_a_tariff_document(
    api: Client, token_for: Callable[..., str]
) -> None:
    stay = {"entry": "2026-11-27T10:00:00+08:00", "exit": "2026-11-27T11:00:00+08:00"}
    driver = bearer(token_for(Role.DRIVER))
    document = await api.post("/v1/tariffs/quote", json={"tariff": SUIZHOU, **stay}, headers=driver)
    assert document.status_code == 403, document.text
    assert document.headers["content-type"].startswith("application/problem+json")
    assert "lot_id" in document.json()["detail"]
    at_lot = await api.post(
        "/v1/tariffs/quote", json={"lot_id": "GZ-DEMO-01", **stay}, headers=driver
    )
    assert at_lot.status_code == 200, at_lot.text


async def test_a_long_stay_lists_at_most_the_bound_of_charges_and_sums_the_rest(
    api: Client, token_for: Callable[..., str], tmp_path: Path
) -> None:
    entry, exit_ = "2026-11-01T08:00:00+08:00", "2026-11-30T08:30:00+08:00"
    full = quote(
        tariff_from_dict(SUIZHOU),
        datetime.fromisoformat(entry),
        datetime.fromisoformat(exit_),
        nev=False,
    )
    assert len(full.charges) > MAX_LISTED_CHARGES  # hourly units for 29 days
    operator, driver = bearer(token_for(Role.OPERATOR)), bearer(token_for(Role.DRIVER))
    by_document = await api.post(
        "/v1/tariffs/quote",
        json={"tariff": SUIZHOU, "entry": entry, "exit": exit_},
        headers=operator,
    )
    at_lot = await api.post(
        "/v1/tariffs/quote",
        json={"lot_id": "GZ-DEMO-01", "plate": "赣B12345", "entry": entry, "exit": exit_},
        headers=driver,
    )
    for response in (by_document, at_lot):
        assert response.status_code == 200, response.text
        shown = response.json()["quote"]
        assert len(shown["charges"]) == MAX_LISTED_CHARGES
        omitted = shown["omitted_charges"]
        assert omitted["count"] == len(full.charges) - MAX_LISTED_CHARGES
        assert sum(c["fen"] for c in shown["charges"]) + omitted["fen"] == sum(
            c.fen for c in full.charges
        )
        assert datetime.fromisoformat(omitted["first_at"]) == full.charges[MAX_LISTED_CHARGES].at
        assert datetime.fromisoformat(omitted["last_at"]) == full.charges[-1].at
        assert response.json()["total_fen"] == full.total_fen
    # The CLI lists the same charges and the same summary.
    assert by_document.json()["quote"] == await cli_quote(tmp_path, SUIZHOU, entry, exit_)
    # A short stay lists everything and says nothing of omissions.
    short = await api.post(
        "/v1/tariffs/quote",
        json={"tariff": SUIZHOU, "entry": entry, "exit": "2026-11-01T11:00:00+08:00"},
        headers=operator,
    )
    assert "omitted_charges" not in short.json()["quote"]


async def test_quotes_are_rate_limited_per_caller(
    settings: Settings, city_db_url: str, token_for: Callable[..., str]
) -> None:
    env = {
        **os.environ,
        "PARKING_DATABASE_URL": city_db_url,
        "PARKING_QUOTE_LIMIT_PER_MINUTE": "5",
    }
    body = {
        "lot_id": "GZ-DEMO-01",
        "entry": "2026-11-27T10:00:00+08:00",
        "exit": "2026-11-27T11:00:00+08:00",
    }
    async with AsyncTestClient(app=create_app(config.load(env))) as client:
        alice = bearer(token_for(Role.DRIVER, "acc-alice"))
        for n in range(5):
            answer = await client.post("/v1/tariffs/quote", json=body, headers=alice)
            assert answer.status_code == 200, answer.text
            assert answer.headers["RateLimit-Remaining"] == str(4 - n)
        refused = await client.post("/v1/tariffs/quote", json=body, headers=alice)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        # Another caller has a budget of their own.
        bob = bearer(token_for(Role.DRIVER, "acc-bob"))
        assert (await client.post("/v1/tariffs/quote", json=body, headers=bob)).status_code == 200


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
        "/v1/tariffs/quote", json=payload, headers=bearer(token_for(Role.OPERATOR))
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
