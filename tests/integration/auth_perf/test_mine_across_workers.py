"""What a driver holds (verified plates, sessions their scans made) is read from the
worker's copy (parking.sessions.mine) while it vouches for itself, and a change
made through one API worker reaches every other within 1 s: an unbound car is not
shown a second later, an unplated car scanned in or out shows or goes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from kits import bearer
from revocation_kit import Client, Login, RedisRelay, StartWorker, until, until_current

from parking.accounts.following import MAX_LAG_S
from parking.api.infra import infra_of
from parking.auth import tokens
from parking.auth.model import Role
from parking.config import Settings
from parking.occupancy import rebuild
from parking.qr import keys, logic
from parking.qr.model import QrKind
from parking.seed.city import DEMO_COMPANY
from parking.sessions import mine
from parking.sessions import service as sessions
from parking.sessions.mine import MineCopy
from parking.sessions.model import SessionChange, SessionStatus

DEMO = "GZ-DEMO-01"
PLATE = "赣B61234"
PHONE = "13800000061"


def copy_of(worker: Client) -> MineCopy:
    copy = infra_of(worker.app).mine
    assert copy is not None
    return copy


async def until_vouching(*workers: Client) -> None:
    for worker in workers:
        copy = copy_of(worker)
        await until(lambda copy=copy: copy.current, within_s=5, what="current")  # type: ignore[misc]


async def driver(worker: Client, login: Login) -> tuple[str, str]:
    """A driver's access token and account id, logged in through ``worker``."""
    pair: dict[str, Any] = await login(worker, PHONE)
    return pair["access_token"], pair["account_id"]


async def bind_verified(worker: Client, settings: Settings, token: str) -> str:
    """PLATE bound and verified (a claim approved by an operator); the binding's id."""
    bound = await worker.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(token))
    assert bound.status_code == 201, bound.text
    claim = await worker.post(
        "/v1/me/plate-claims",
        json={"plate": PLATE, "evidence": "行驶证 360702123456", "photo_ref": "upload/xsz.jpg"},
        headers=bearer(token),
    )
    assert claim.status_code == 201, claim.text
    operator = tokens.issue(
        settings.jwt_key,
        subject="ops-test",
        role=Role.OPERATOR,
        now=datetime.now(UTC),
        ttl=timedelta(minutes=5),
        company=DEMO_COMPANY,
    )
    approved = await worker.post(
        f"/v1/operator/plate-claims/{claim.json()['id']}/approve", json={}, headers=bearer(operator)
    )
    assert approved.status_code == 200, approved.text
    vehicle: str = bound.json()["id"]
    return vehicle


async def parked(conn: asyncpg.Connection, redis: aioredis.Redis) -> str:
    """PLATE's car inside the demo lot for an hour (in PostgreSQL and the live core),
    its binding moved back a day so the stay is the holder's."""
    await conn.execute(
        "UPDATE vehicles SET bound_at = bound_at - interval '1 day' "
        "WHERE plate = $1 AND released_at IS NULL",
        PLATE,
    )
    sid = "s-test-" + uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    await sessions.record(
        conn,
        [
            SessionChange(
                id=sid,
                lot_id=DEMO,
                status=SessionStatus.OPEN,
                plate=PLATE,
                entry_at=now - timedelta(hours=1),
            )
        ],
    )
    await rebuild.rebuild(conn, redis, now=now, force=True)
    return sid


async def shown(worker: Client, token: str) -> list[str]:
    """The session ids of the driver's home screen, through ``worker``."""
    got = await worker.get("/v1/me/sessions/current", headers=bearer(token))
    assert got.status_code == 200, got.text
    return [item["session_id"] for item in got.json()["items"]]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The accounts whose holdings a worker read from PostgreSQL."""
    accounts: list[str] = []
    read = mine.read

    async def counting(conn: asyncpg.Connection, account_id: str) -> mine.Mine:
        accounts.append(account_id)
        return await read(conn, account_id)

    monkeypatch.setattr(mine, "read", counting)
    return accounts


async def test_an_unbind_through_one_worker_hides_the_car_on_another_within_a_second(
    start_worker: StartWorker,
    login: Login,
    settings: Settings,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
) -> None:
    a, b = await start_worker(), await start_worker()
    await until_vouching(a, b)
    token, _account = await driver(a, login)
    vehicle = await bind_verified(a, settings, token)
    sid = await parked(city_db, redis_client)
    assert await shown(b, token) == [sid]
    assert await shown(a, token) == [sid]
    assert len(copy_of(b)) == 1  # b answers from its copy of the account now

    gone = await a.delete(f"/v1/me/vehicles/{vehicle}", headers=bearer(token))
    assert gone.status_code in (200, 204), gone.text
    acknowledged = time.monotonic()
    # The worker that made the change does not show the car at once.
    assert await shown(a, token) == []
    while await shown(b, token):
        assert time.monotonic() - acknowledged < MAX_LAG_S
        await asyncio.sleep(0.005)
    assert time.monotonic() - acknowledged < MAX_LAG_S


async def test_a_vouching_copy_answers_without_reading_postgresql(
    start_worker: StartWorker,
    login: Login,
    settings: Settings,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    reads: list[str],
) -> None:
    worker = await start_worker()
    await until_vouching(worker)
    token, account = await driver(worker, login)
    await bind_verified(worker, settings, token)
    sid = await parked(city_db, redis_client)
    for _ in range(10):
        assert await shown(worker, token) == [sid]
    assert reads == [account]


async def test_a_copy_that_cannot_vouch_reads_postgresql_every_time(
    start_worker: StartWorker,
    login: Login,
    settings: Settings,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    reads: list[str],
) -> None:
    a, b = await start_worker(), await start_worker()
    await until_vouching(a, b)
    token, _account = await driver(a, login)
    vehicle = await bind_verified(a, settings, token)
    sid = await parked(city_db, redis_client)
    assert await shown(b, token) == [sid]
    await copy_of(b).stop()
    before = len(reads)
    assert await shown(b, token) == [sid]
    assert len(reads) == before + 1
    gone = await a.delete(f"/v1/me/vehicles/{vehicle}", headers=bearer(token))
    assert gone.status_code in (200, 204), gone.text
    # No copy to wait for: b reads what PostgreSQL holds now.
    assert await shown(b, token) == []


async def test_changes_missed_while_the_subscription_was_down_are_not_answered_from_the_copy(
    start_worker: StartWorker,
    login: Login,
    settings: Settings,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    relay: tuple[RedisRelay, str],
) -> None:
    proxy, url = relay
    a, b = await start_worker(), await start_worker(redis_url=url)
    await until_vouching(a, b)
    token, _account = await driver(a, login)
    vehicle = await bind_verified(a, settings, token)
    sid = await parked(city_db, redis_client)
    assert await shown(b, token) == [sid]
    proxy.freeze()
    # Announced while b hears nothing: the message is lost to it.
    gone = await a.delete(f"/v1/me/vehicles/{vehicle}", headers=bearer(token))
    assert gone.status_code in (200, 204), gone.text
    proxy.drop_connections()
    proxy.thaw()
    copy = copy_of(b)
    await until(lambda: not copy.current, within_s=MAX_LAG_S + 0.5, what="given up")
    await until(lambda: copy.current, within_s=10, what="following again")
    await until_current(b)  # the denylist's copy too, so the token is checked without Redis
    assert await shown(b, token) == []


async def test_an_unplated_car_scanned_in_and_out_through_one_worker_shows_and_goes_on_another(
    start_worker: StartWorker,
    login: Login,
    settings: Settings,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
) -> None:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    a, b = await start_worker(), await start_worker()
    await until_vouching(a, b)
    token, _account = await driver(a, login)
    assert await shown(b, token) == []  # b holds the account: nothing inside

    keyring = keys.load_or_create(keys.path_in(settings.stack_dir))

    def lane(name: str) -> str:
        target = logic.target(QrKind.LANE, DEMO, name)
        return logic.sign(target, keyring=keyring, now=datetime.now(UTC))

    entered = await a.post("/v1/scans/entry", json={"code": lane("in1")}, headers=bearer(token))
    assert entered.status_code == 201, entered.text
    sid = entered.json()["session_id"]
    acknowledged = time.monotonic()
    while await shown(b, token) != [sid]:
        assert time.monotonic() - acknowledged < MAX_LAG_S
        await asyncio.sleep(0.005)

    left = await a.post("/v1/scans/exit", json={"code": lane("out1")}, headers=bearer(token))
    assert left.status_code == 200, left.text
    acknowledged = time.monotonic()
    while await shown(b, token):
        assert time.monotonic() - acknowledged < MAX_LAG_S
        await asyncio.sleep(0.005)
