"""Scan flows with signed QR codes: unplated entry and exit, on-street space claims."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import paho.mqtt.client as mqtt
import pytest
import redis.asyncio as aioredis
from kits import bearer, flushed_redis
from litestar.testing import AsyncTestClient
from paho.mqtt.enums import CallbackAPIVersion

from parking import config
from parking.api.app import create_app
from parking.config import Settings
from parking.occupancy import rebuild
from parking.occupancy import store as occupancy_store
from parking.qr import keys, logic
from parking.qr.model import Keyring, QrKind

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[str]]
DEMO = "GZ-DEMO-01"
ALICE, BOB = "13800000021", "13800000022"


@pytest.fixture(params=["redis", "cluster"])
def on_cluster(request: pytest.FixtureRequest) -> bool:
    """Every scan flow runs on the single Redis and on the stack's Redis Cluster: the
    API's Redis client, its shared reads and its subscriptions work on both."""
    if request.param == "cluster":
        request.getfixturevalue("cluster_settings")
    return bool(request.param == "cluster")


@pytest.fixture
async def redis_client(on_cluster: bool, app_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    async with flushed_redis(app_settings.redis_url, cluster=on_cluster) as client:
        yield client


@pytest.fixture
def app_settings(settings: Settings, city_db_url: str, on_cluster: bool) -> Settings:
    cluster = {"PARKING_REDIS_CLUSTER": "1"} if on_cluster else {}
    return config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url, **cluster})


@pytest.fixture
async def api(
    app_settings: Settings, redis_client: aioredis.Redis, city_db: asyncpg.Connection
) -> AsyncIterator[Client]:
    # The live core loaded from PostgreSQL, as the gateway does at start.
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    async with AsyncTestClient(app=create_app(app_settings)) as client:
        yield client


@pytest.fixture
def keyring(app_settings: Settings) -> Keyring:
    return keys.load_or_create(keys.path_in(app_settings.stack_dir))


def lane_code(keyring: Keyring, lane: str) -> str:
    return logic.sign(logic.target(QrKind.LANE, DEMO, lane), keyring=keyring, now=datetime.now(UTC))


async def street_space(conn: asyncpg.Connection) -> tuple[str, str]:
    row = await conn.fetchrow(
        "SELECT s.lot_id, s.space_id FROM spaces s JOIN lots l ON l.id = s.lot_id "
        "WHERE l.kind = 'on_street' ORDER BY s.lot_id, s.space_id LIMIT 1"
    )
    assert row is not None
    return row["lot_id"], row["space_id"]


class Commands:
    """Subscribes to the lane command topics of the demo lot, as a gate would."""

    def __init__(self, settings: Settings) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-lane-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self.topic = f"{settings.topic_prefix}/lots/{DEMO}/lanes/+/commands"
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload))
        self.client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=1)
        self.client.connect(settings.mqtt_host, settings.mqtt_platform_port)
        self.client.loop_start()

    async def wait_for(self, needle: str, within: float = 10.0) -> tuple[str, bytes]:
        for _ in range(int(within * 10)):
            for topic, payload in self.received:
                if needle.encode() in payload:
                    return topic, payload
            await asyncio.sleep(0.1)
        raise AssertionError(f"no command containing {needle!r}: {self.received}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
async def commands(app_settings: Settings) -> AsyncIterator[Commands]:
    lane = Commands(app_settings)
    await asyncio.sleep(0.5)  # the subscription is in place before anything publishes
    try:
        yield lane
    finally:
        lane.close()


async def test_an_unplated_car_enters_by_scanning_and_the_lane_gets_the_open_command(
    api: Client, login: Login, keyring: Keyring, commands: Commands, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)

    got = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )

    assert got.status_code == 201, got.text
    body = got.json()
    assert body["command"]["action"] == "open"
    topic, _ = await commands.wait_for(body["session_id"])
    assert topic.endswith(f"/lots/{DEMO}/lanes/in1/commands")
    row = await city_db.fetchrow(
        "SELECT status, plate FROM sessions WHERE id = $1", body["session_id"]
    )
    assert row is not None
    assert (row["status"], row["plate"]) == ("open", None)


async def test_scanning_the_entry_twice_keeps_one_session(
    api: Client, login: Login, keyring: Keyring, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    code = {"code": lane_code(keyring, "in1")}

    first = await api.post("/v1/scans/entry", json=code, headers=bearer(alice))
    second = await api.post("/v1/scans/entry", json=code, headers=bearer(alice))

    assert first.json()["session_id"] == second.json()["session_id"]
    assert await city_db.fetchval("SELECT count(*) FROM sessions WHERE status = 'open'") == 1


async def test_the_exit_code_closes_prices_bills_and_opens_the_barrier(
    api: Client, login: Login, keyring: Keyring, commands: Commands, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    entered = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )
    sid = entered.json()["session_id"]
    # Three hours in the lot.
    await city_db.execute(
        "UPDATE sessions SET entry_at = entry_at - interval '3 hours' WHERE id = $1", sid
    )

    got = await api.post(
        "/v1/scans/exit", json={"code": lane_code(keyring, "out1")}, headers=bearer(alice)
    )

    assert got.status_code == 200, got.text
    body = got.json()
    assert body["status"] == "closed"
    assert body["fee_fen"] > 0
    assert body["bill_id"] is not None
    topic, _ = await commands.wait_for(f"{sid}-out")
    assert topic.endswith("/lanes/out1/commands")
    bills = await api.get("/v1/me/bills", headers=bearer(alice))
    assert [b["id"] for b in bills.json()["items"]] == [body["bill_id"]]
    again = await api.post(
        "/v1/scans/exit", json={"code": lane_code(keyring, "out1")}, headers=bearer(alice)
    )
    assert again.status_code == 404


async def test_an_exit_code_at_the_entry_is_a_typed_400(
    api: Client, login: Login, keyring: Keyring
) -> None:
    alice = await login(ALICE)
    wrong = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "out1")}, headers=bearer(alice)
    )
    forged = await api.post("/v1/scans/entry", json={"code": "q/forged"}, headers=bearer(alice))
    assert (wrong.status_code, forged.status_code) == (400, 400)


async def test_another_driver_cannot_leave_on_my_session(
    api: Client, login: Login, keyring: Keyring
) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )

    got = await api.post(
        "/v1/scans/exit", json={"code": lane_code(keyring, "out1")}, headers=bearer(bob)
    )

    assert got.status_code == 404


async def test_a_space_code_claims_the_stay_the_sensor_saw(
    api: Client,
    login: Login,
    keyring: Keyring,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
) -> None:
    alice = await login(ALICE)
    bound = await api.post("/v1/me/vehicles", json={"plate": "赣B12345"}, headers=bearer(alice))
    assert bound.status_code == 201
    lot, space = await street_space(city_db)
    code = logic.sign(
        logic.target(QrKind.SPACE, lot, space), keyring=keyring, now=datetime.now(UTC)
    )

    got = await api.post(
        "/v1/scans/space", json={"code": code, "plate": "赣B12345"}, headers=bearer(alice)
    )
    twice = await api.post(
        "/v1/scans/space", json={"code": code, "plate": "赣B12345"}, headers=bearer(alice)
    )
    current = await api.get("/v1/me/sessions/current", headers=bearer(alice))

    assert got.status_code == 201, got.text
    assert twice.status_code == 409
    [item] = current.json()["items"]
    assert (item["session_id"], item["lot_id"], item["source"]) == (
        got.json()["session_id"],
        lot,
        "live",
    )
    entry = await occupancy_store.plate_entry(redis_client, "赣B12345")
    assert entry["sid"] == got.json()["session_id"]


async def test_a_space_claim_for_a_plate_that_is_not_mine_is_a_404(
    api: Client, login: Login, keyring: Keyring, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    lot, space = await street_space(city_db)
    code = logic.sign(
        logic.target(QrKind.SPACE, lot, space), keyring=keyring, now=datetime.now(UTC)
    )

    got = await api.post(
        "/v1/scans/space", json={"code": code, "plate": "赣B99999"}, headers=bearer(alice)
    )

    assert got.status_code == 404


async def test_a_session_voided_by_an_operator_does_not_block_the_next_entry_scan(
    api: Client, login: Login, keyring: Keyring, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    code = {"code": lane_code(keyring, "in1")}
    first = await api.post("/v1/scans/entry", json=code, headers=bearer(alice))
    await city_db.execute(
        "UPDATE sessions SET status = 'voided' WHERE id = $1", first.json()["session_id"]
    )

    second = await api.post("/v1/scans/entry", json=code, headers=bearer(alice))

    assert second.status_code == 201, second.text
    assert second.json()["session_id"] != first.json()["session_id"]


async def test_an_unplated_car_counts_in_the_lots_live_sessions_until_it_leaves(
    api: Client, login: Login, keyring: Keyring, redis_client: aioredis.Redis
) -> None:
    alice = await login(ALICE)
    before = int((await occupancy_store.lot_counts(redis_client, DEMO))["sessions"])

    entered = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )
    inside = await occupancy_store.lot_counts(redis_client, DEMO)
    held = await occupancy_store.lot_sessions(redis_client, DEMO)
    left = await api.post(
        "/v1/scans/exit", json={"code": lane_code(keyring, "out1")}, headers=bearer(alice)
    )
    after = await occupancy_store.lot_counts(redis_client, DEMO)

    assert (entered.status_code, left.status_code) == (201, 200)
    assert int(inside["sessions"]) == before + 1
    [value] = [v for k, v in held.items() if k.startswith("acct:")]
    assert value.startswith(entered.json()["session_id"] + "|")
    assert int(after["sessions"]) == before


async def test_the_rebuild_restores_an_unplated_cars_session_from_postgres(
    api: Client,
    login: Login,
    keyring: Keyring,
    redis_client: aioredis.Redis,
    city_db: asyncpg.Connection,
) -> None:
    alice = await login(ALICE)
    entered = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )
    counted = (await occupancy_store.lot_counts(redis_client, DEMO))["sessions"]

    await rebuild.rebuild(city_db, redis_client, now=datetime.now(UTC), force=True)

    assert (await occupancy_store.lot_counts(redis_client, DEMO))["sessions"] == counted
    again = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )
    assert again.json()["session_id"] == entered.json()["session_id"]


async def test_one_unplated_session_per_account_across_the_city(
    api: Client, login: Login, keyring: Keyring, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    other = await city_db.fetchrow(
        "SELECT lot_id, lane_id FROM lanes WHERE direction = 'in' AND lot_id <> $1 "
        "ORDER BY lot_id LIMIT 1",
        DEMO,
    )
    assert other is not None
    elsewhere = logic.sign(
        logic.target(QrKind.LANE, other["lot_id"], other["lane_id"]),
        keyring=keyring,
        now=datetime.now(UTC),
    )
    first = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )

    second = await api.post("/v1/scans/entry", json={"code": elsewhere}, headers=bearer(alice))

    assert first.status_code == 201
    assert second.status_code == 409
    assert DEMO in second.json()["detail"]
    assert await city_db.fetchval("SELECT count(*) FROM sessions WHERE status = 'open'") == 1


async def test_a_full_lot_refuses_the_scan_with_a_409(
    api: Client, login: Login, keyring: Keyring, redis_client: aioredis.Redis
) -> None:
    alice = await login(ALICE)
    counts = await occupancy_store.lot_counts(redis_client, DEMO)
    # Every space taken, as the lanes' entries would leave it.
    await redis_client.hset(
        f"{occupancy_store.keys.lot_tag(DEMO)}:lot:{DEMO}", "sessions", counts["capacity"]
    )

    got = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )

    assert got.status_code == 409, got.text
    assert "full" in got.json()["detail"]


async def test_a_scan_while_the_core_is_not_loaded_is_a_503(
    api: Client, login: Login, keyring: Keyring, redis_client: aioredis.Redis
) -> None:
    alice = await login(ALICE)
    await redis_client.delete(occupancy_store.keys.ready(occupancy_store.keys.lot_tag(DEMO)))

    got = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )

    assert got.status_code == 503, got.text
    assert "Retry-After" in got.headers


async def test_my_unplated_car_is_my_current_session_with_its_fee(
    api: Client, login: Login, keyring: Keyring, city_db: asyncpg.Connection
) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    entered = await api.post(
        "/v1/scans/entry", json={"code": lane_code(keyring, "in1")}, headers=bearer(alice)
    )
    sid = entered.json()["session_id"]
    await city_db.execute(
        "UPDATE sessions SET entry_at = entry_at - interval '2 hours' WHERE id = $1", sid
    )

    mine = await api.get("/v1/me/sessions/current", headers=bearer(alice))
    theirs = await api.get("/v1/me/sessions/current", headers=bearer(bob))

    assert mine.status_code == 200, mine.text
    [item] = mine.json()["items"]
    assert (item["session_id"], item["plate"], item["lot_id"]) == (sid, None, DEMO)
    assert item["fee_fen"] > 0
    assert theirs.json()["items"] == []
