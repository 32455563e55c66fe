"""A plate is not a location (issue 10, point 7), against the real app, PostgreSQL and Redis.

The attacker of these tests binds a victim's plate (anyone may type any plate)
and tries everything the app offers a plate's holder: the binding is unverified,
so it shows no session, no history and no bill times; paying the plate's bills
stays open (amount, lot, day); a prepayment it makes is an offer that never
holds the victim's car; a dispute stays its opener's. A verified holder sees
everything from the binding on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis
from test_driver_sessions import (
    DEMO,
    Client,
    Login,
    account_of,
    bearer,
    bill_for,
    bind,
    bound_since_yesterday,
    close_session,
    open_session,
    verify,
)

from parking.api.prepay import LOT_SCAN_PER_ACCOUNT
from parking.api.sessions import PLATE_BILLS_PER_ACCOUNT
from parking.config import Settings
from parking.occupancy import keys, plate_flags, rebuild
from parking.occupancy import records as occupancy_records
from parking.qr import keys as qr_keys
from parking.qr import logic as qr_logic
from parking.qr.model import QrKind

VICTIM, ATTACKER, FRIEND = "13800000071", "13800000072", "13800000073"
PLATE = "赣B7V710"


def lot_code(settings: Settings, lot: str = DEMO) -> str:
    keyring = qr_keys.load_or_create(qr_keys.path_in(settings.stack_dir))
    return qr_logic.sign(qr_logic.target(QrKind.LOT, lot), keyring=keyring, now=datetime.now(UTC))


async def victims_car(conn: asyncpg.Connection) -> tuple[str, str, str]:
    """An earlier stay of the plate, billed and unpaid, and the car parked now:
    (the open session, the closed session, its bill)."""
    now = datetime.now(UTC)
    earlier = await open_session(conn, PLATE, entry=now - timedelta(hours=5))
    await close_session(conn, earlier, DEMO, exit_at=now - timedelta(hours=4), fee=600)
    bill: str = await conn.fetchval(
        "SELECT id FROM bills WHERE session_id = $1 AND kind = 'stay'", earlier
    )
    parked = await open_session(conn, PLATE, entry=now - timedelta(minutes=30))
    return parked, earlier, bill


async def test_an_attacker_who_binds_a_plate_sees_no_session_history_or_bill_times(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    attacker = await login(ATTACKER)
    await bind(api, attacker, PLATE, verified=False)
    # Everything of the victim's car happens after the attacker's binding.
    await city_db.execute(
        "UPDATE vehicles SET bound_at = bound_at - interval '1 day' WHERE plate = $1", PLATE
    )
    parked, _earlier, bill = await victims_car(city_db)

    vehicles = (await api.get("/v1/me/vehicles", headers=bearer(attacker))).json()
    current = await api.get("/v1/me/sessions/current", headers=bearer(attacker))
    history = await api.get("/v1/me/sessions", headers=bearer(attacker))
    mine = await api.get("/v1/me/bills", headers=bearer(attacker))
    prepay = await api.post(f"/v1/me/sessions/{parked}/prepay", headers=bearer(attacker))
    receipt = await api.get(f"/v1/me/receipts/{bill}", headers=bearer(attacker))

    assert [(v["plate"], v["trust"]) for v in vehicles["items"]] == [(PLATE, "unverified")]
    assert current.json() == {"items": []}
    assert history.json()["items"] == []
    assert (mine.json()["items"], mine.json()["arrears_fen"]) == ([], 0)
    assert (prepay.status_code, receipt.status_code) == (404, 404)
    assert await city_db.fetchval("SELECT count(*) FROM bills WHERE session_id = $1", parked) == 0
    # The stay was billed to nobody: an unverified binder is never the account billed.
    assert await city_db.fetchval("SELECT account_id FROM bills WHERE id = $1", bill) is None
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'denied:prepay' AND target = $1",
            parked,
        )
        == 1
    )


async def test_a_space_code_does_not_tell_an_unverified_binder_where_the_car_is(
    api: Client,
    login: Login,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    attacker = await login(ATTACKER)
    await bind(api, attacker, PLATE, verified=False)
    await victims_car(city_db)
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    row = await city_db.fetchrow(
        "SELECT s.lot_id, s.space_id FROM spaces s JOIN lots l ON l.id = s.lot_id "
        "WHERE l.kind = 'on_street' ORDER BY s.lot_id, s.space_id LIMIT 1"
    )
    assert row is not None
    keyring = qr_keys.load_or_create(qr_keys.path_in(settings.stack_dir))
    code = qr_logic.sign(
        qr_logic.target(QrKind.SPACE, row["lot_id"], row["space_id"]),
        keyring=keyring,
        now=datetime.now(UTC),
    )

    got = await api.post(
        "/v1/scans/space", json={"code": code, "plate": PLATE}, headers=bearer(attacker)
    )

    assert got.status_code == 409, got.text
    assert DEMO not in got.text


async def test_an_unpaid_prepayment_never_holds_the_car(
    api: Client,
    login: Login,
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    attacker = await login(ATTACKER)
    parked = await open_session(city_db, PLATE, entry=datetime.now(UTC) - timedelta(hours=2))
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))

    offered = await api.post(
        "/v1/scans/lot", json={"code": lot_code(settings), "plate": PLATE}, headers=bearer(attacker)
    )

    assert offered.status_code == 200, offered.text
    body = offered.json()
    assert (body["session_id"], body["lot_id"]) == (parked, DEMO)
    [offer] = body["due_bill_ids"]
    assert await city_db.fetchval("SELECT kind FROM bills WHERE id = $1", offer) == "prepay"
    # Nobody's arrears: the lanes' flag sync finds nothing, the plate owes nothing.
    assert await occupancy_records.arrears_since(city_db, [PLATE]) == []
    await plate_flags.refresh_arrears(city_db, redis_client, [PLATE])
    flag = await redis_client.hget(keys.plate(keys.plate_tag(PLATE), PLATE), "arrears")
    assert not flag
    owed = await api.post("/v1/plate-bills", json={"plate": PLATE}, headers=bearer(attacker))
    assert owed.status_code == 200, owed.text
    assert owed.json()["items"] == []


async def test_a_lot_code_shows_the_plates_session_in_that_lot_only(
    api: Client, login: Login, city_db: asyncpg.Connection, settings: Settings
) -> None:
    friend = await login(FRIEND)
    parked, _earlier, _bill = await victims_car(city_db)
    other = await city_db.fetchval("SELECT id FROM lots WHERE id <> $1 ORDER BY id LIMIT 1", DEMO)

    here = await api.post(
        "/v1/scans/lot", json={"code": lot_code(settings), "plate": PLATE}, headers=bearer(friend)
    )
    elsewhere = await api.post(
        "/v1/scans/lot",
        json={"code": lot_code(settings, other), "plate": PLATE},
        headers=bearer(friend),
    )

    assert here.status_code == 200, here.text
    assert (here.json()["session_id"], here.json()["lot_id"]) == (parked, DEMO)
    assert here.json()["due_fen"] == here.json()["stay_fen"] > 0
    assert elsewhere.status_code == 404, elsewhere.text
    assert DEMO not in elsewhere.text


async def test_typing_plates_is_rate_limited(
    api: Client, login: Login, city_db: asyncpg.Connection, settings: Settings
) -> None:
    friend = await login(FRIEND)
    code = lot_code(settings)
    lot_limit = LOT_SCAN_PER_ACCOUNT[0].limit
    scans = [
        await api.post(
            "/v1/scans/lot", json={"code": code, "plate": f"赣B{n:05d}"}, headers=bearer(friend)
        )
        for n in range(lot_limit + 1)
    ]
    bills_limit = PLATE_BILLS_PER_ACCOUNT[0].limit
    lookups = [
        await api.post("/v1/plate-bills", json={"plate": f"赣B{n:05d}"}, headers=bearer(friend))
        for n in range(bills_limit + 1)
    ]

    assert [s.status_code for s in scans] == [404] * lot_limit + [429]
    assert [s.status_code for s in lookups] == [200] * bills_limit + [429]
    assert int(lookups[-1].headers["Retry-After"]) > 0


async def test_a_dispute_is_visible_only_to_the_account_that_opened_it(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    victim, attacker = await login(VICTIM), await login(ATTACKER)
    vehicle = await bind(api, victim, PLATE)
    account = await account_of(api, victim)
    bill = await bill_for(
        city_db, lot=DEMO, plate=PLATE, account=account, fen=800, closed_at=datetime.now(UTC)
    )
    opened = await api.post(
        f"/v1/bills/{bill}/dispute", json={"reason": "I left at noon"}, headers=bearer(victim)
    )
    assert opened.status_code == 201, opened.text
    # The plate moves to another account (a claim approved), which then holds it verified.
    gone = await api.delete(f"/v1/me/vehicles/{vehicle}", headers=bearer(victim))
    assert gone.status_code == 204
    await bind(api, attacker, PLATE)
    await bound_since_yesterday(city_db, PLATE)

    theirs = await api.post(
        f"/v1/bills/{bill}/dispute", json={"reason": "show me"}, headers=bearer(attacker)
    )
    again = await api.post(
        f"/v1/bills/{bill}/dispute", json={"reason": "again"}, headers=bearer(victim)
    )

    assert theirs.status_code == 404, theirs.text
    assert "noon" not in theirs.text
    assert again.status_code == 201
    assert again.json()["id"] == opened.json()["id"]
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'denied:dispute' AND target = $1",
            f"bill:{bill}",
        )
        == 1
    )


async def test_the_verified_holder_sees_everything_from_the_binding_on(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    victim = await login(VICTIM)
    now = datetime.now(UTC)
    before = await open_session(city_db, PLATE, entry=now - timedelta(hours=6))
    await close_session(city_db, before, DEMO, exit_at=now - timedelta(hours=5), fee=300)
    await bind(api, victim, PLATE, verified=False)
    await city_db.execute(
        "UPDATE vehicles SET bound_at = $2 WHERE plate = $1 AND released_at IS NULL",
        PLATE,
        now - timedelta(hours=3),
    )
    after = await open_session(city_db, PLATE, entry=now - timedelta(hours=2))
    await close_session(city_db, after, DEMO, exit_at=now - timedelta(hours=1), fee=400)
    parked = await open_session(city_db, PLATE, entry=now - timedelta(minutes=20))
    unverified = await api.get("/v1/me/sessions", headers=bearer(victim))

    await verify(api, victim, PLATE)

    vehicles = (await api.get("/v1/me/vehicles", headers=bearer(victim))).json()
    current = (await api.get("/v1/me/sessions/current", headers=bearer(victim))).json()
    history = (await api.get("/v1/me/sessions", headers=bearer(victim))).json()
    mine = (await api.get("/v1/me/bills", headers=bearer(victim))).json()
    assert unverified.json()["items"] == []
    assert [v["trust"] for v in vehicles["items"]] == ["verified"]
    assert [(c["session_id"], c["lot_id"]) for c in current["items"]] == [(parked, DEMO)]
    assert [(s["id"], s["entry_at"] is not None) for s in history["items"]] == [
        (parked, True),
        (after, True),
    ]
    assert [b["session_id"] for b in mine["items"]] == [after]
    assert before not in {s["id"] for s in history["items"]}


@pytest.mark.parametrize("verified", [False, True])
async def test_a_prepayment_of_my_own_stay_needs_a_verified_plate(
    api: Client, login: Login, city_db: asyncpg.Connection, verified: bool
) -> None:
    victim = await login(VICTIM)
    await bind(api, victim, PLATE, verified=verified)
    await bound_since_yesterday(city_db, PLATE)
    parked = await open_session(city_db, PLATE, entry=datetime.now(UTC) - timedelta(hours=1))

    got = await api.post(f"/v1/me/sessions/{parked}/prepay", headers=bearer(victim))

    assert got.status_code == (200 if verified else 404), got.text
