"""Paying in the lot before the exit through the driver API (场内缴费, issue 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis
from test_driver_sessions import (
    ALICE,
    BOB,
    DEMO,
    Client,
    Login,
    bearer,
    bind,
    bound_since_yesterday,
    close_session,
    open_session,
)

from parking.bills import service as bills
from parking.occupancy import keys

PLATE = "赣B7P100"


async def pay(conn: asyncpg.Connection, bill_id: str, at: datetime) -> None:
    """What the payment flow does when the provider confirms (payments._settle)."""
    async with conn.transaction():
        bill = await bills.get(conn, bill_id)
        await bills.mark_paid(
            conn,
            bill_id,
            provider="sandbox",
            payment_ref=f"o-{bill_id}",
            amount_fen=bill.amount_fen,
            now=at,
            actor="test",
        )


async def test_prepay_bills_the_stay_so_far_and_the_window_opens_once_paid(
    api: Client, login: Login, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    alice = await login(ALICE)
    await bind(api, alice, PLATE)
    await bound_since_yesterday(city_db, PLATE)
    sid = await open_session(city_db, PLATE, entry=datetime.now(UTC) - timedelta(hours=3))

    quoted = await api.post(f"/v1/me/sessions/{sid}/prepay", headers=bearer(alice))

    assert quoted.status_code == 200, quoted.text
    body = quoted.json()
    assert body["stay_fen"] > 0
    assert body["due_fen"] == body["billed_fen"] == body["stay_fen"]
    assert body["leave_by"] is None
    assert body["exit_window_s"] == 900
    [bill_id] = body["due_bill_ids"]
    # Issue 10: unpaid, a prepay bill is an offer, not arrears, and the exit lane's
    # hint subtracts only what was paid (it used to list it and subtract it).
    mine = (await api.get("/v1/me/bills", headers=bearer(alice))).json()
    assert (mine["items"], mine["arrears_fen"]) == ([], 0)
    hint = await redis_client.get(keys.prepaid(DEMO, PLATE))
    assert hint is not None
    assert hint.decode() == f"{sid}|0|0"

    await pay(city_db, bill_id, datetime.now(UTC))
    again = await api.post(f"/v1/me/sessions/{sid}/prepay", headers=bearer(alice))

    assert again.status_code == 200, again.text
    paid = again.json()
    assert paid["due_bill_ids"] == []
    assert paid["due_fen"] == 0
    assert paid["paid_fen"] == body["stay_fen"]
    leave_by = datetime.fromisoformat(paid["leave_by"])
    assert timedelta(minutes=14) < leave_by - datetime.now(UTC) <= timedelta(minutes=15)
    hint = await redis_client.get(keys.prepaid(DEMO, PLATE))
    assert hint is not None
    assert hint.decode().split("|")[:2] == [sid, str(body["stay_fen"])]
    assert await city_db.fetchval("SELECT count(*) FROM bills WHERE session_id = $1", sid) == 1


async def test_leaving_within_the_window_leaves_nothing_owed(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    await bind(api, alice, PLATE)
    await bound_since_yesterday(city_db, PLATE)
    sid = await open_session(city_db, PLATE, entry=datetime.now(UTC) - timedelta(hours=3))
    body = (await api.post(f"/v1/me/sessions/{sid}/prepay", headers=bearer(alice))).json()
    await pay(city_db, body["due_bill_ids"][0], datetime.now(UTC))

    await close_session(
        city_db,
        sid,
        DEMO,
        exit_at=datetime.now(UTC) + timedelta(minutes=5),
        fee=body["stay_fen"] + 200,
    )

    mine = (await api.get("/v1/me/bills", headers=bearer(alice))).json()
    assert mine["items"] == []
    assert mine["arrears_fen"] == 0
    assert await bills.by_session(city_db, sid) is None


async def test_an_unpaid_prepayment_lapses_at_the_exit_which_bills_the_whole_stay(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    """Issue 10: a prepay bill is an offer until the exit (it used to stay owed, and
    the stay bill billed only the rest: 300)."""
    alice = await login(ALICE)
    await bind(api, alice, PLATE)
    await bound_since_yesterday(city_db, PLATE)
    sid = await open_session(city_db, PLATE, entry=datetime.now(UTC) - timedelta(hours=3))
    body = (await api.post(f"/v1/me/sessions/{sid}/prepay", headers=bearer(alice))).json()

    total = body["stay_fen"] + 300
    await close_session(city_db, sid, DEMO, exit_at=datetime.now(UTC), fee=total)

    mine = (await api.get("/v1/me/bills", headers=bearer(alice))).json()
    assert mine["arrears_fen"] == total
    stay = await bills.by_session(city_db, sid)
    assert stay is not None
    assert stay.amount_fen == total
    [offer] = await bills.prepayments(city_db, sid)
    assert (offer.id, str(offer.status)) == (body["due_bill_ids"][0], "written_off")
    assert [i["id"] for i in mine["items"]] == [stay.id]


async def test_another_drivers_session_is_a_404_and_audited(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    await bind(api, alice, PLATE)
    await bound_since_yesterday(city_db, PLATE)
    sid = await open_session(city_db, PLATE, entry=datetime.now(UTC) - timedelta(hours=1))

    got = await api.post(f"/v1/me/sessions/{sid}/prepay", headers=bearer(bob))
    unknown = await api.post("/v1/me/sessions/s-nothing/prepay", headers=bearer(bob))

    assert (got.status_code, unknown.status_code) == (404, 404)
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'denied:prepay' AND target = $1", sid
        )
        == 1
    )
    assert await city_db.fetchval("SELECT count(*) FROM bills WHERE session_id = $1", sid) == 0


async def test_a_session_that_has_ended_is_a_409(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    await bind(api, alice, PLATE)
    await bound_since_yesterday(city_db, PLATE)
    sid = await open_session(city_db, PLATE, entry=datetime.now(UTC) - timedelta(hours=1))
    await close_session(city_db, sid, DEMO, exit_at=datetime.now(UTC), fee=500)

    got = await api.post(f"/v1/me/sessions/{sid}/prepay", headers=bearer(alice))

    assert got.status_code == 409, got.text
