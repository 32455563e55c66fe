"""Operators' routes: lots, lanes, spaces, devices, blacklist, anomaly review; all audited."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from parking.auth.model import Role
from parking.devices import broker
from parking.occupancy import keys, rebuild
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

Client = AsyncTestClient  # type: ignore[type-arg]
DEMO = "GZ-DEMO-01"


@pytest.fixture
def operator(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'op-wang')}"}


async def audited(conn: asyncpg.Connection, action: str, target: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT actor, role, details FROM audit_log WHERE action = $1 AND target = $2",
        action,
        target,
    )


async def a_district(conn: asyncpg.Connection) -> str:
    code: str = await conn.fetchval("SELECT code FROM districts ORDER BY code LIMIT 1")
    return code


# ------------------------------------------------------------------ lots, lanes, spaces


async def test_an_operator_adds_a_lot_and_the_change_is_audited(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection
) -> None:
    lot = {
        "id": "GZ-TEST-77",
        "name": "测试停车场",
        "district_code": await a_district(city_db),
        "kind": "gated",
        "capacity": 120,
        "latitude": 25.83,
        "longitude": 114.93,
    }

    made = await api.post("/v1/operator/lots", json=lot, headers=operator)
    again = await api.post("/v1/operator/lots", json=lot, headers=operator)

    assert made.status_code == 201, made.text
    assert made.json()["exit_window_minutes"] == 15
    assert again.status_code == 409
    [line] = await audited(city_db, "lot.created", "lot:GZ-TEST-77")
    assert (line["actor"], line["role"]) == ("op-wang", "operator")


async def test_a_lot_patch_changes_only_the_given_policies(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection
) -> None:
    before = await city_db.fetchrow("SELECT capacity FROM lots WHERE id = $1", DEMO)
    assert before is not None

    got = await api.patch(
        f"/v1/operator/lots/{DEMO}",
        json={"full_policy": "open", "exit_window_minutes": 20, "arrears_hold_after_minutes": 60},
        headers=operator,
    )

    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["full_policy"], body["exit_window_minutes"]) == ("open", 20)
    assert body["arrears_hold_after_minutes"] == 60
    assert body["capacity"] == before["capacity"]
    assert len(await audited(city_db, "lot.changed", f"lot:{DEMO}")) == 1


async def test_a_lot_patch_refuses_fields_it_does_not_own(
    api: Client, operator: dict[str, str]
) -> None:
    got = await api.patch(f"/v1/operator/lots/{DEMO}", json={"kind": "on_street"}, headers=operator)
    missing = await api.patch("/v1/operator/lots/NOPE", json={"capacity": 3}, headers=operator)
    assert (got.status_code, missing.status_code) == (400, 404)


async def test_lanes_and_spaces_are_added_and_listed(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection
) -> None:
    lane = await api.post(
        f"/v1/operator/lots/{DEMO}/lanes",
        json={"lane_id": "in9", "direction": "in"},
        headers=operator,
    )
    space = await api.post(
        f"/v1/operator/lots/{DEMO}/spaces", json={"space_id": "Z999"}, headers=operator
    )
    twice = await api.post(
        f"/v1/operator/lots/{DEMO}/lanes",
        json={"lane_id": "in9", "direction": "in"},
        headers=operator,
    )
    lanes = await api.get(f"/v1/operator/lots/{DEMO}/lanes", headers=operator)

    assert (lane.status_code, space.status_code, twice.status_code) == (201, 201, 409)
    assert "in9" in {item["lane_id"] for item in lanes.json()}
    assert len(await audited(city_db, "space.added", f"space:{DEMO}/Z999")) == 1


# ------------------------------------------------------------------ devices


async def test_a_device_added_through_the_api_can_report_until_it_is_revoked(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection
) -> None:
    await api.post(
        f"/v1/operator/lots/{DEMO}/lanes",
        json={"lane_id": "in8", "direction": "in"},
        headers=operator,
    )
    device_id = f"gz-demo-in8-{uuid.uuid4().hex[:6]}"
    made = await api.post(
        "/v1/operator/devices",
        json={"lot_id": DEMO, "lane_id": "in8", "device_id": device_id},
        headers=operator,
    )
    assert made.status_code == 201, made.text
    secret = made.json()["password"]
    auth = {
        "Authorization": "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode(),
        "Content-Type": "application/json",
    }
    passage = json.dumps(
        {
            "device_id": device_id,
            "seq": 1,
            "observed_at": datetime.now(UTC).isoformat(),
            "direction": "in",
            "plate": "赣B54321",
            "plate_color": "blue",
            "confidence": 0.99,
            "image_ref": None,
        },
        ensure_ascii=False,
    ).encode()
    before = await api.post("/v1/gate/passages", content=passage, headers=auth)

    revoked = await api.post(f"/v1/operator/devices/{device_id}/revoke", headers=operator)
    after = await api.post("/v1/gate/passages", content=passage, headers=auth)
    listed = await api.get(f"/v1/operator/devices?lot_id={DEMO}", headers=operator)

    assert before.status_code == 200, before.text
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert after.status_code == 401
    assert device_id in {d["device_id"] for d in listed.json()["items"]}
    assert len(await audited(city_db, "device.revoked", f"device:{device_id}")) == 1


# ------------------------------------------------------------------ blacklist


async def test_a_blacklisted_plate_is_held_at_its_next_entry_at_once(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    device_id, secret = f"gz-demo-in1-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await city_db.execute(
        "INSERT INTO devices (device_id, kind, lot_id, lane_id, password_hash) "
        "VALUES ($1, 'gate', $2, 'in1', $3)",
        device_id,
        DEMO,
        broker.hash_password(secret),
    )

    put = await api.post(
        "/v1/operator/blacklist", json={"plate": "赣B66666", "reason": "套牌嫌疑"}, headers=operator
    )
    entry = await api.post(
        "/v1/gate/passages",
        content=json.dumps(
            {
                "device_id": device_id,
                "seq": 1,
                "observed_at": datetime.now(UTC).isoformat(),
                "direction": "in",
                "plate": "赣B66666",
                "plate_color": "blue",
                "confidence": 0.99,
                "image_ref": None,
            },
            ensure_ascii=False,
        ).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )

    assert put.status_code == 200, put.text
    assert put.json()["held_now"] is True
    assert entry.json()["command"]["action"] == "hold", entry.text
    assert await city_db.fetchval("SELECT reason FROM plate_blacklist WHERE plate = '赣B66666'")
    assert len(await audited(city_db, "blacklist.added", "plate:赣B66666")) == 1


async def test_taking_a_plate_off_the_blacklist_clears_its_live_flag(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    listed = await api.post(
        "/v1/operator/blacklist", json={"plate": "赣B66666", "reason": "test"}, headers=operator
    )
    assert listed.status_code == 200, listed.text

    got = await api.post(
        "/v1/operator/blacklist/removals", json={"plate": "赣B66666"}, headers=operator
    )

    assert got.status_code == 200, got.text
    flag = await redis_client.hget(keys.plate(keys.plate_tag("赣B66666"), "赣B66666"), "bl")
    assert not flag
    assert await city_db.fetchval("SELECT count(*) FROM plate_blacklist") == 0


# ------------------------------------------------------------------ anomalies


async def an_anomaly(
    conn: asyncpg.Connection, *, session_id: str | None, kind: str = "entry_without_exit"
) -> str:
    anomaly_id = f"{kind}:{uuid.uuid4().hex[:8]}"
    await conn.execute(
        "INSERT INTO anomalies (id, kind, lot_id, plate, session_id, created_at) "
        "VALUES ($1, $2, $3, '赣B12345', $4, now())",
        anomaly_id,
        kind,
        DEMO,
        session_id,
    )
    return anomaly_id


async def an_open_session(conn: asyncpg.Connection, entry: datetime) -> str:
    sid = "s-op-" + uuid.uuid4().hex[:10]
    await sessions.record(
        conn,
        [
            SessionChange(
                id=sid, lot_id=DEMO, status=SessionStatus.OPEN, plate="赣B12345", entry_at=entry
            )
        ],
    )
    return sid


async def test_a_missed_exit_closes_and_prices_the_session(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    # The live core is loaded: resolving also ends the session there (see
    # test_operator_review.py for what the core then holds).
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    entry = datetime.now(UTC) - timedelta(hours=5)
    sid = await an_open_session(city_db, entry)
    anomaly_id = await an_anomaly(city_db, session_id=sid)
    queue = await api.get("/v1/operator/anomalies", headers=operator)
    assert anomaly_id in {a["id"] for a in queue.json()["items"]}

    got = await api.post(
        f"/v1/operator/anomalies/{anomaly_id}/resolve",
        json={
            "action": "add-missed-exit",
            "remark": "camera missed the exit; CCTV shows 2h",
            "exit_at": (entry + timedelta(hours=2)).isoformat(),
        },
        headers=operator,
    )
    again = await api.post(
        f"/v1/operator/anomalies/{anomaly_id}/resolve",
        json={"action": "void", "remark": "again"},
        headers=operator,
    )

    assert got.status_code == 200, got.text
    assert got.json()["status"] == "resolved"
    row = await city_db.fetchrow("SELECT status, fee_fen FROM sessions WHERE id = $1", sid)
    assert row is not None
    assert row["status"] == "closed"
    assert row["fee_fen"] > 0
    billed = await city_db.fetchval("SELECT amount_fen FROM bills WHERE session_id = $1", sid)
    assert billed == row["fee_fen"]
    assert again.status_code == 409
    [line] = await audited(city_db, "anomaly.add-missed-exit", f"anomaly:{anomaly_id}")
    assert json.loads(line["details"])["fee_fen"] == row["fee_fen"]


async def test_void_voids_the_session(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    sid = await an_open_session(city_db, datetime.now(UTC) - timedelta(hours=1))
    anomaly_id = await an_anomaly(city_db, session_id=sid, kind="low_confidence")

    got = await api.post(
        f"/v1/operator/anomalies/{anomaly_id}/resolve",
        json={"action": "void", "remark": "test car"},
        headers=operator,
    )

    assert got.status_code == 200, got.text
    assert await city_db.fetchval("SELECT status FROM sessions WHERE id = $1", sid) == "voided"


async def test_a_driver_cannot_use_operator_routes(
    api: Client, token_for: Callable[..., str]
) -> None:
    driver = {"Authorization": f"Bearer {token_for(Role.DRIVER, 'acc-x')}"}
    got: list[Any] = [
        await api.get("/v1/operator/lots", headers=driver),
        await api.post(
            "/v1/operator/blacklist", json={"plate": "赣B12345", "reason": "x"}, headers=driver
        ),
        await api.get("/v1/operator/anomalies", headers=driver),
    ]
    assert [r.status_code for r in got] == [403, 403, 403]
