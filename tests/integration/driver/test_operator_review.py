"""The anomaly review's decisions reach the live occupancy core (issue 6).

A car enters through the gate route (the core opens its session and claims the
plate's city-wide entry), the persister's own write puts the session in
PostgreSQL, then an operator resolves an anomaly of it. A missed exit or a void
must also end the session in the core: the lot's live count goes down, the
plate's city-wide entry is released.
"""

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
from parking.occupancy import keys, persist, rebuild
from parking.occupancy import logic as occupancy_logic
from parking.occupancy import plan as occupancy_plan
from parking.occupancy import store as occupancy_store

Client = AsyncTestClient  # type: ignore[type-arg]
DEMO = "GZ-DEMO-01"
PLATE = "赣B7Q123"


@pytest.fixture
def operator(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'op-li')}"}


async def persist_core_events(conn: asyncpg.Connection, redis: aioredis.Redis) -> None:
    """What the persister does with the lot shard's stream: its own write, then the entries go."""
    stream = keys.events(keys.lot_tag(DEMO))
    items = await redis.xrange(stream)
    entries = [
        occupancy_plan.StreamEntry(stream, occupancy_store.text(entry_id), fields)
        for entry_id, fields in items
    ]
    await persist.persist(conn, entries, datetime.now(UTC))
    if items:
        await redis.xdel(stream, *[entry_id for entry_id, _ in items])


async def a_car_in_the_lot(
    api: Client, conn: asyncpg.Connection, redis: aioredis.Redis, *, entered: datetime
) -> str:
    """The plate enters GZ-DEMO-01 through a gate; returns its session id."""
    await rebuild.ensure_ready(conn, redis, now=datetime.now(UTC))
    device_id, secret = f"gz-demo-in1-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await conn.execute(
        "INSERT INTO devices (device_id, kind, lot_id, lane_id, password_hash) "
        "VALUES ($1, 'gate', $2, 'in1', $3)",
        device_id,
        DEMO,
        broker.hash_password(secret),
    )
    passage = {
        "device_id": device_id,
        "seq": 1,
        "observed_at": entered.isoformat(),
        "direction": "in",
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
    # A passage observed this long ago gets no gate command (a drained backlog):
    # the session is read from the core instead.
    session_id = (await occupancy_store.lot_sessions(redis, DEMO))[PLATE].split("|")[0]
    await persist_core_events(conn, redis)
    assert await conn.fetchval("SELECT status FROM sessions WHERE id = $1", session_id) == "open"
    return session_id


async def an_anomaly(conn: asyncpg.Connection, session_id: str, kind: str) -> str:
    anomaly_id = f"{kind}:{uuid.uuid4().hex[:8]}"
    await conn.execute(
        "INSERT INTO anomalies (id, kind, lot_id, plate, session_id, created_at) "
        "VALUES ($1, $2, $3, $4, $5, now())",
        anomaly_id,
        kind,
        DEMO,
        PLATE,
        session_id,
    )
    return anomaly_id


async def open_here(redis: aioredis.Redis) -> int:
    return int((await occupancy_store.lot_counts(redis, DEMO))["sessions"])


async def audit_details(conn: asyncpg.Connection, action: str, anomaly_id: str) -> dict[str, Any]:
    [details] = await conn.fetch(
        "SELECT details FROM audit_log WHERE action = $1 AND target = $2",
        action,
        f"anomaly:{anomaly_id}",
    )
    found: dict[str, Any] = json.loads(details["details"])
    return found


async def resolve(api: Client, operator: dict[str, str], anomaly_id: str, **body: Any) -> Any:
    return await api.post(
        f"/v1/operator/anomalies/{anomaly_id}/resolve", json=body, headers=operator
    )


async def test_a_missed_exit_ends_the_session_in_the_live_core(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    entered = datetime.now(UTC) - timedelta(hours=3)
    sid = await a_car_in_the_lot(api, city_db, redis_client, entered=entered)
    anomaly_id = await an_anomaly(city_db, sid, "entry_without_exit")
    before = await open_here(redis_client)
    assert (await occupancy_store.plate_entry(redis_client, PLATE))["sid"] == sid
    exit_at = entered + timedelta(hours=2)

    got = await resolve(
        api,
        operator,
        anomaly_id,
        action="add-missed-exit",
        remark="CCTV shows the car leaving",
        exit_at=exit_at.isoformat(),
    )

    assert got.status_code == 200, got.text
    assert await open_here(redis_client) == before - 1
    assert PLATE not in await occupancy_store.lot_sessions(redis_client, DEMO)
    entry = await occupancy_store.plate_entry(redis_client, PLATE)
    assert "sid" not in entry
    # An entry claim from before the exit that arrives late must not reopen the index.
    assert int(entry["mark"]) == occupancy_logic.to_ms(exit_at)
    details = await audit_details(city_db, "anomaly.add-missed-exit", anomaly_id)
    assert details["live"] == {"lot": "ended", "plate_index": "released"}
    assert await city_db.fetchval("SELECT status FROM sessions WHERE id = $1", sid) == "closed"


async def test_voiding_an_open_session_ends_it_in_the_live_core(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    sid = await a_car_in_the_lot(
        api, city_db, redis_client, entered=datetime.now(UTC) - timedelta(minutes=20)
    )
    anomaly_id = await an_anomaly(city_db, sid, "low_confidence")
    before = await open_here(redis_client)

    got = await resolve(api, operator, anomaly_id, action="void", remark="a test car")

    assert got.status_code == 200, got.text
    assert await open_here(redis_client) == before - 1
    assert PLATE not in await occupancy_store.lot_sessions(redis_client, DEMO)
    assert "sid" not in await occupancy_store.plate_entry(redis_client, PLATE)
    details = await audit_details(city_db, "anomaly.void", anomaly_id)
    assert details["live"] == {"lot": "ended", "plate_index": "released"}
    assert await city_db.fetchval("SELECT status FROM sessions WHERE id = $1", sid) == "voided"


async def test_an_operator_exit_leaves_nothing_for_the_persister_to_undo(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    entered = datetime.now(UTC) - timedelta(hours=3)
    sid = await a_car_in_the_lot(api, city_db, redis_client, entered=entered)
    anomaly_id = await an_anomaly(city_db, sid, "entry_without_exit")
    exit_at = entered + timedelta(hours=1)
    got = await resolve(
        api,
        operator,
        anomaly_id,
        action="add-missed-exit",
        remark="CCTV",
        exit_at=exit_at.isoformat(),
    )
    assert got.status_code == 200, got.text

    await persist_core_events(city_db, redis_client)  # whatever the core has streamed

    row = await city_db.fetchrow("SELECT status, exit_at, flags FROM sessions WHERE id = $1", sid)
    assert row is not None
    assert (row["status"], row["exit_at"]) == ("closed", exit_at)
    assert "older_entry" not in row["flags"]
    queue = await api.get("/v1/operator/anomalies", headers=operator)
    assert [a for a in queue.json()["items"] if a["session_id"] == sid] == []


async def test_a_decision_while_the_lot_is_being_rebuilt_is_refused_and_changes_nothing(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    sid = await a_car_in_the_lot(
        api, city_db, redis_client, entered=datetime.now(UTC) - timedelta(hours=1)
    )
    anomaly_id = await an_anomaly(city_db, sid, "low_confidence")
    await redis_client.delete(keys.ready(keys.lot_tag(DEMO)))

    got = await resolve(api, operator, anomaly_id, action="void", remark="a test car")

    assert got.status_code == 503, got.text
    assert got.headers["content-type"].startswith("application/problem+json")
    assert await city_db.fetchval("SELECT status FROM sessions WHERE id = $1", sid) == "open"
    assert await city_db.fetchval("SELECT status FROM anomalies WHERE id = $1", anomaly_id) == (
        "open"
    )
    assert (await occupancy_store.lot_sessions(redis_client, DEMO))[PLATE].startswith(sid)
    assert (await occupancy_store.plate_entry(redis_client, PLATE))["sid"] == sid


async def test_fixing_the_plate_of_an_open_session_moves_it_in_the_core(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    sid = await a_car_in_the_lot(
        api, city_db, redis_client, entered=datetime.now(UTC) - timedelta(hours=1)
    )
    anomaly_id = await an_anomaly(city_db, sid, "low_confidence")
    before = await open_here(redis_client)

    got = await resolve(
        api, operator, anomaly_id, action="fix-plate", remark="misread", plate="赣B7Q128"
    )

    assert got.status_code == 200, got.text
    assert await city_db.fetchval("SELECT plate FROM sessions WHERE id = $1", sid) == "赣B7Q128"
    held = await occupancy_store.lot_sessions(redis_client, DEMO)
    assert PLATE not in held
    assert held["赣B7Q128"].startswith(sid + "|")
    assert await open_here(redis_client) == before
    assert "sid" not in await occupancy_store.plate_entry(redis_client, PLATE)
    assert (await occupancy_store.plate_entry(redis_client, "赣B7Q128"))["sid"] == sid
    details = await audit_details(city_db, "anomaly.fix-plate", anomaly_id)
    assert details["live"] == {
        "lot": "moved",
        "wrong_plate_index": "released",
        "right_plate_index": "claimed",
    }


async def test_fixing_an_open_session_to_a_plate_open_elsewhere_is_a_409(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    sid = await a_car_in_the_lot(
        api, city_db, redis_client, entered=datetime.now(UTC) - timedelta(hours=1)
    )
    other = "s-other-" + sid[-8:]
    await city_db.execute(
        "INSERT INTO sessions (id, lot_id, plate, status, entry_at) "
        "VALUES ($1, $2, '赣B7Q128', 'open', now())",
        other,
        DEMO,
    )
    anomaly_id = await an_anomaly(city_db, sid, "low_confidence")

    got = await resolve(
        api, operator, anomaly_id, action="fix-plate", remark="misread", plate="赣B7Q128"
    )

    assert got.status_code == 409, got.text
    assert await city_db.fetchval("SELECT plate FROM sessions WHERE id = $1", sid) == PLATE
    assert (await occupancy_store.lot_sessions(redis_client, DEMO))[PLATE].startswith(sid)
    assert await city_db.fetchval("SELECT status FROM anomalies WHERE id = $1", anomaly_id) == (
        "open"
    )


async def test_fixing_the_plate_of_a_closed_session_changes_its_record(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    entered = datetime.now(UTC) - timedelta(hours=3)
    sid = await a_car_in_the_lot(api, city_db, redis_client, entered=entered)
    exit_id = await an_anomaly(city_db, sid, "entry_without_exit")
    closed = await resolve(
        api,
        operator,
        exit_id,
        action="add-missed-exit",
        remark="CCTV",
        exit_at=(entered + timedelta(hours=1)).isoformat(),
    )
    assert closed.status_code == 200, closed.text
    misread = await an_anomaly(city_db, sid, "low_confidence")

    got = await resolve(
        api, operator, misread, action="fix-plate", remark="misread", plate="赣B7Q128"
    )

    assert got.status_code == 200, got.text
    assert await city_db.fetchval("SELECT plate FROM sessions WHERE id = $1", sid) == "赣B7Q128"
    details = await audit_details(city_db, "anomaly.fix-plate", misread)
    assert (details["from"], details["to"]) == (PLATE, "赣B7Q128")


async def test_a_missed_exit_in_the_future_is_refused(
    api: Client, operator: dict[str, str], city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    sid = await a_car_in_the_lot(
        api, city_db, redis_client, entered=datetime.now(UTC) - timedelta(hours=1)
    )
    anomaly_id = await an_anomaly(city_db, sid, "entry_without_exit")

    got = await resolve(
        api,
        operator,
        anomaly_id,
        action="add-missed-exit",
        remark="typo",
        exit_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    )

    assert got.status_code == 400, got.text
    assert (await occupancy_store.plate_entry(redis_client, PLATE))["sid"] == sid
