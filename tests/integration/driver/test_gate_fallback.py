"""The gate's HTTP fallback: device credentials, its own lane, the MQTT gate's decision."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from parking.auth.model import Role
from parking.devices import broker
from parking.occupancy import keys as occupancy_keys

Client = AsyncTestClient  # type: ignore[type-arg]
DEMO = "GZ-DEMO-01"
CST = timezone(timedelta(hours=8))


class Gate:
    def __init__(self, device_id: str, secret: str) -> None:
        self.device_id = device_id
        self.secret = secret
        self.seq = 0

    def auth(self, secret: str | None = None) -> dict[str, str]:
        raw = f"{self.device_id}:{secret or self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def passage(self, plate: str | None, *, seq: int | None = None, **extra: Any) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        body = {
            "device_id": self.device_id,
            "seq": seq,
            "observed_at": datetime.now(UTC).astimezone(CST).isoformat(),
            "direction": "in",
            "plate": plate,
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": f"{self.device_id}/{seq}.jpg",
        }
        return json.dumps({**body, **extra}, ensure_ascii=False).encode()


async def install_gate(conn: asyncpg.Connection, lane: str = "in1") -> Gate:
    """A gate in the registry (the table the broker's password file is rendered from)."""
    device_id = f"gz-demo-{lane}-{uuid.uuid4().hex[:6]}"
    secret = uuid.uuid4().hex
    await conn.execute(
        "INSERT INTO devices (device_id, kind, lot_id, lane_id, password_hash) "
        "VALUES ($1, 'gate', $2, $3, $4)",
        device_id,
        DEMO,
        lane,
        broker.hash_password(secret),
    )
    return Gate(device_id, secret)


async def post(api: Client, gate: Gate, body: bytes, **headers: str) -> Any:
    return await api.post(
        "/v1/gate/passages",
        content=body,
        headers={"Content-Type": "application/json", **gate.auth(), **headers},
    )


async def test_an_entry_gets_the_open_command_the_mqtt_gate_would_get(
    api: Client, city_db: asyncpg.Connection
) -> None:
    gate = await install_gate(city_db)

    got = await post(api, gate, gate.passage("赣B12345"))

    assert got.status_code == 200, got.text
    body = got.json()
    assert body["outcome"] == "applied"
    assert body["command"]["action"] == "open"
    assert body["command"]["command_id"] == f"c-{gate.device_id}-1"
    assert body["command"]["plate"] == "赣B12345"
    assert body["command"]["session_id"]
    assert body["command"]["display"]


async def test_a_retried_passage_is_not_applied_twice_and_gets_the_same_command(
    api: Client, city_db: asyncpg.Connection
) -> None:
    gate = await install_gate(city_db)
    body = gate.passage("赣B12345")
    first = (await post(api, gate, body)).json()

    again = await post(api, gate, body)

    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["command"] == first["command"]


async def test_an_unplated_car_is_held_for_the_lane_qr_code(
    api: Client, city_db: asyncpg.Connection
) -> None:
    gate = await install_gate(city_db)

    got = await post(api, gate, gate.passage(None))

    assert got.status_code == 200, got.text
    assert got.json()["command"]["action"] == "hold"


async def test_an_acknowledged_command_is_not_handed_out_again(
    api: Client, city_db: asyncpg.Connection
) -> None:
    gate = await install_gate(city_db)
    body = gate.passage("赣B12345")
    command = (await post(api, gate, body)).json()["command"]

    acked = await api.post(
        "/v1/gate/acks",
        content=json.dumps(
            {"command_id": command["command_id"], "result": "done", "at": command["issued_at"]}
        ).encode(),
        headers={"Content-Type": "application/json", **gate.auth()},
    )
    again = await post(api, gate, body)

    assert acked.status_code == 204, acked.text
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["command"] is None


async def test_a_wrong_secret_is_refused(api: Client, city_db: asyncpg.Connection) -> None:
    gate = await install_gate(city_db)

    got = await api.post(
        "/v1/gate/passages",
        content=gate.passage("赣B12345"),
        headers={"Content-Type": "application/json", **gate.auth("not-the-secret")},
    )

    assert got.status_code == 401
    assert got.headers["www-authenticate"].startswith("Basic")


async def test_a_revoked_gate_is_refused(api: Client, city_db: asyncpg.Connection) -> None:
    gate = await install_gate(city_db)
    await city_db.execute(
        "UPDATE devices SET revoked_at = now() WHERE device_id = $1", gate.device_id
    )

    got = await post(api, gate, gate.passage("赣B12345"))

    assert got.status_code == 401


async def test_a_bearer_token_is_not_device_credentials(
    api: Client, city_db: asyncpg.Connection, token_for: Callable[..., str]
) -> None:
    gate = await install_gate(city_db)

    got = await api.post(
        "/v1/gate/passages",
        content=gate.passage("赣B12345"),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token_for(Role.DEVICE, gate.device_id)}",
        },
    )

    assert got.status_code == 401


async def test_a_gate_cannot_report_as_another_device(
    api: Client, city_db: asyncpg.Connection
) -> None:
    gate = await install_gate(city_db)
    other = await install_gate(city_db, lane="out1")

    got = await post(api, gate, other.passage("赣B12345", direction="out"))

    assert got.status_code == 400
    assert got.headers["content-type"].startswith("application/problem+json")


async def test_a_payload_outside_the_contract_is_a_400_not_a_500(
    api: Client, city_db: asyncpg.Connection
) -> None:
    gate = await install_gate(city_db)

    extra = await post(api, gate, gate.passage("赣B12345", status="paid"))
    garbage = await post(api, gate, b"\x00\xff not json")

    assert (extra.status_code, garbage.status_code) == (400, 400)


# ------------------------------------------------------------------ device clocks (v1.1)


async def test_a_gate_clock_dated_2036_over_http_bills_the_stay_it_was(
    api: Client, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    entry, exit_gate = await install_gate(city_db, "in1"), await install_gate(city_db, "out1")
    assert (await post(api, entry, entry.passage("赣B12345"))).status_code == 200
    y2036 = datetime(2036, 2, 1, 9, 30, tzinfo=CST).isoformat()
    got = await post(
        api,
        exit_gate,
        exit_gate.passage("赣B12345", direction="out", observed_at=y2036, sent_at=y2036),
    )
    assert got.status_code == 200, got.text
    display = got.json()["command"]["display"]
    # Today's main answered "赣B12345 停车79579小时46分 应缴66320.00元 已离场后付".
    assert display.startswith("赣B12345 停车0小时00分 "), display
    assert "66320" not in display
    # The offset sample is the one the MQTT gateways read too (the device's lot shard).
    samples = await redis_client.lrange(
        occupancy_keys.clock(occupancy_keys.lot_tag(DEMO), exit_gate.device_id), 0, -1
    )
    assert len(samples) == 1
    assert int(samples[0]) > 9 * 365 * 24 * 3600 * 1000


async def test_a_v1_gate_clock_ahead_over_http_is_taken_as_received(
    api: Client, city_db: asyncpg.Connection
) -> None:
    entry, exit_gate = await install_gate(city_db, "in1"), await install_gate(city_db, "out1")
    ahead = (datetime.now(UTC) + timedelta(hours=5)).astimezone(CST).isoformat()
    assert (await post(api, entry, entry.passage("赣B12345", observed_at=ahead))).status_code == 200
    got = await post(api, exit_gate, exit_gate.passage("赣B12345", direction="out"))
    # the entry is taken as observed when it arrived: a stay of seconds, not of -5 hours
    # that today's main showed as 0 minutes and free while its real length was unknown
    assert got.json()["command"]["display"].startswith("赣B12345 停车0小时00分 ")


async def test_a_passage_with_an_unknown_field_is_still_refused(
    api: Client, city_db: asyncpg.Connection
) -> None:
    gate = await install_gate(city_db)
    got = await post(api, gate, gate.passage("赣B12345", sent_att="2026-12-03T08:00:00+08:00"))
    assert got.status_code == 400, got.text
