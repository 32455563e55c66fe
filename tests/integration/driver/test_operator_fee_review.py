"""A stay past the lot's review limits waits for an operator (contracts/mqtt.md "Clocks" 4),
and device health shows a skewed clock: the gate route, the persister's write, the
operator routes."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis
from test_operator_review import (
    DEMO,
    PLATE,
    Client,
    a_car_in_the_lot,
    audit_details,
    operator,
    persist_core_events,
    resolve,
)

from parking.devices import broker

__all__ = ["operator"]  # fixtures


async def exit_gate(conn: asyncpg.Connection) -> tuple[str, str]:
    """An exit gate (installed before the gate route first loads its directory)."""
    device_id, secret = f"gz-demo-out1-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await conn.execute(
        "INSERT INTO devices (device_id, kind, lot_id, lane_id, password_hash) "
        "VALUES ($1, 'gate', $2, 'out1', $3)",
        device_id,
        DEMO,
        broker.hash_password(secret),
    )
    return device_id, secret


async def an_exit(api: Client, gate: tuple[str, str], *, clock_ahead: timedelta) -> str:
    """The plate leaves through ``gate``, whose clock runs ``clock_ahead`` on (v1.1, with
    sent_at); returns the lane's display."""
    device_id, secret = gate
    device_now = (datetime.now(UTC) + clock_ahead).isoformat()
    passage = {
        "device_id": device_id,
        "seq": 1,
        "observed_at": device_now,
        "sent_at": device_now,
        "direction": "out",
        "plate": PLATE,
        "plate_color": "blue",
        "confidence": 0.99,
        "image_ref": None,
    }
    got = await api.post(
        "/v1/gate/passages",
        content=json.dumps(passage, ensure_ascii=False).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    assert got.status_code == 200, got.text
    assert got.json()["command"] is not None, got.json()
    return str(got.json()["command"]["display"])


async def test_an_operator_confirms_the_fee_of_a_stay_past_the_review_limit(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    out = await exit_gate(city_db)
    sid = await a_car_in_the_lot(
        api, city_db, redis_client, entered=datetime.now(UTC) - timedelta(days=8)
    )
    display = await an_exit(api, out, clock_ahead=timedelta(hours=2))
    gate = out[0]
    # 8 days, not 8 days and 2 hours: the gate's clock is corrected; and no amount owed
    assert display == f"{PLATE} 停车192小时00分 费用待核实 一路顺风"
    await persist_core_events(city_db, redis_client)
    fee = await city_db.fetchval("SELECT fee_fen FROM sessions WHERE id = $1", sid)
    assert fee > 0
    assert await city_db.fetchval("SELECT amount_fen FROM bills WHERE session_id = $1", sid) == fee

    queue = await api.get("/v1/operator/anomalies?kind=fee_review", headers=operator)
    assert queue.status_code == 200, queue.text
    [review] = queue.json()["items"]
    assert review["session_id"] == sid
    assert (review["details"]["review"], review["details"]["fee_fen"]) == ("long_stay", fee)

    # device health: the exit gate's clock is 2 hours on, with its open anomaly
    listed = await api.get(f"/v1/operator/devices?lot_id={DEMO}", headers=operator)
    assert listed.status_code == 200, listed.text
    [health] = [d for d in listed.json()["items"] if d["device_id"] == gate]
    assert health["clock"]["skewed"] is True
    assert abs(health["clock"]["offset_ms"] - 7_200_000) < 60_000
    skew_id = health["clock"]["open_anomaly"]
    assert skew_id.startswith(f"device_clock_skew:{gate}:")

    # confirm-fee is only for a fee review
    wrong = await resolve(api, operator, skew_id, action="confirm-fee", remark="looks fine")
    assert wrong.status_code == 400, wrong.text

    got = await resolve(
        api, operator, review["id"], action="confirm-fee", remark="the car was here all week"
    )
    assert got.status_code == 200, got.text
    assert got.json()["status"] == "resolved"
    assert got.json()["resolution"] == "confirm-fee: the car was here all week"
    details = await audit_details(city_db, "anomaly.confirm-fee", review["id"])
    assert details == {
        "remark": "the car was here all week",
        "session_id": sid,
        "fee_confirmed": True,
    }
    # the bill is untouched: billed as usual
    assert await city_db.fetchval("SELECT amount_fen FROM bills WHERE session_id = $1", sid) == fee
