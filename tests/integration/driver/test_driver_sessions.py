"""Drivers' sessions, bills, receipts and contactless switches (issue 6, A1)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.api.infra import infra_of
from parking.auth import tokens
from parking.auth.model import Role
from parking.bills import service as bills
from parking.occupancy import rebuild
from parking.seed.city import DEMO_COMPANY
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[str]]
DEMO = "GZ-DEMO-01"
ALICE, BOB = "13800000011", "13800000012"


async def bind(api: Client, token: str, plate: str, *, verified: bool = True) -> str:
    """Bind the plate and (unless ``verified=False``) have it verified the way a driver
    does: a claim with the 行驶证 photo, approved by an operator. The binding's id (how
    routes name it: a plate never goes in a URL)."""
    bound = await api.post("/v1/me/vehicles", json={"plate": plate}, headers=bearer(token))
    assert bound.status_code == 201, bound.text
    if verified:
        await verify(api, token, plate)
    vehicle: str = bound.json()["id"]
    return vehicle


async def verify(api: Client, token: str, plate: str) -> None:
    claim = await api.post(
        "/v1/me/plate-claims",
        json={"plate": plate, "evidence": "行驶证 360702123456", "photo_ref": "upload/xsz.jpg"},
        headers=bearer(token),
    )
    assert claim.status_code == 201, claim.text
    operator = tokens.issue(
        infra_of(api.app).settings.jwt_key,
        subject="ops-test",
        role=Role.OPERATOR,
        now=datetime.now(UTC),
        ttl=timedelta(minutes=5),
        company=DEMO_COMPANY,
    )
    approved = await api.post(
        f"/v1/operator/plate-claims/{claim.json()['id']}/approve",
        json={},
        headers=bearer(operator),
    )
    assert approved.status_code == 200, approved.text


async def bound_since_yesterday(conn: asyncpg.Connection, plate: str) -> None:
    """History shows a plate's sessions from its binding on: move the binding back."""
    await conn.execute(
        "UPDATE vehicles SET bound_at = bound_at - interval '1 day' "
        "WHERE plate = $1 AND released_at IS NULL",
        plate,
    )


async def account_of(api: Client, token: str) -> str:
    me = await api.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    account: str = me.json()["id"]
    return account


async def open_session(
    conn: asyncpg.Connection, plate: str, *, lot: str = DEMO, entry: datetime
) -> str:
    sid = "s-test-" + uuid.uuid4().hex[:12]
    await sessions.record(
        conn,
        [SessionChange(id=sid, lot_id=lot, status=SessionStatus.OPEN, plate=plate, entry_at=entry)],
    )
    return sid


async def close_session(
    conn: asyncpg.Connection, sid: str, lot: str, *, exit_at: datetime, fee: int
) -> None:
    """Close as the persister does (which also bills the stay, in the same transaction)."""
    tariff_id, version = await a_tariff(conn)
    async with conn.transaction():
        await sessions.record(
            conn,
            [
                SessionChange(
                    id=sid,
                    lot_id=lot,
                    status=SessionStatus.CLOSED,
                    exit_at=exit_at,
                    fee_fen=fee,
                    tariff_id=tariff_id,
                    tariff_version=version,
                    pricing_reason="tariff",
                    quote=b"{}",
                )
            ],
        )


async def a_tariff(conn: asyncpg.Connection) -> tuple[str, int]:
    row = await conn.fetchrow("SELECT tariff_id, version FROM tariff_versions LIMIT 1")
    assert row is not None
    return row["tariff_id"], row["version"]


async def bill_for(
    conn: asyncpg.Connection,
    *,
    lot: str,
    plate: str,
    account: str | None,
    fen: int,
    closed_at: datetime,
) -> str:
    tariff_id, version = await a_tariff(conn)
    async with conn.transaction():
        bill = await bills.open_bill(
            conn,
            session_id="s-bill-" + uuid.uuid4().hex[:12],
            lot_id=lot,
            plate=plate,
            account_id=account,
            amount_fen=fen,
            tariff_id=tariff_id,
            tariff_version=version,
            quote=b"{}",
            closed_at=closed_at,
            now=closed_at,
        )
    assert bill is not None
    return bill.id


async def on_street_lot(conn: asyncpg.Connection) -> str:
    lot: str = await conn.fetchval(
        "SELECT id FROM lots WHERE kind = 'on_street' ORDER BY id LIMIT 1"
    )
    return lot


# ------------------------------------------------------------------ current session


async def test_the_current_session_comes_from_the_live_core_with_a_fee_quote(
    api: Client, login: Login, city_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    alice = await login(ALICE)
    await bind(api, alice, "赣B12345")
    await bound_since_yesterday(city_db, "赣B12345")
    entry = datetime.now(UTC) - timedelta(hours=3)
    sid = await open_session(city_db, "赣B12345", entry=entry)
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))

    got = await api.get("/v1/me/sessions/current", headers=bearer(alice))

    assert got.status_code == 200, got.text
    [item] = got.json()["items"]
    assert item["session_id"] == sid
    assert item["source"] == "live"
    assert item["lot_id"] == DEMO
    assert item["fee_fen"] > 0
    assert item["tariff_id"] is not None


async def test_the_current_session_falls_back_to_postgres_when_the_core_is_not_loaded(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    await bind(api, alice, "赣B12345")
    await bound_since_yesterday(city_db, "赣B12345")
    sid = await open_session(city_db, "赣B12345", entry=datetime.now(UTC) - timedelta(hours=1))

    got = await api.get("/v1/me/sessions/current", headers=bearer(alice))

    assert got.status_code == 200, got.text
    [item] = got.json()["items"]
    assert (item["session_id"], item["source"]) == (sid, "record")


async def test_a_driver_does_not_see_another_drivers_current_session(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    await bind(api, alice, "赣B12345")
    await open_session(city_db, "赣B12345", entry=datetime.now(UTC) - timedelta(hours=1))

    got = await api.get("/v1/me/sessions/current", headers=bearer(bob))

    assert got.status_code == 200
    assert got.json() == {"items": []}


# ------------------------------------------------------------------ history


async def test_history_pages_through_my_sessions_newest_first(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    await bind(api, alice, "赣B12345")
    await bound_since_yesterday(city_db, "赣B12345")
    now = datetime.now(UTC)
    made = []
    for hours in (5, 4, 3):
        sid = await open_session(
            city_db, "赣B12345", entry=now - timedelta(hours=hours, minutes=-1)
        )
        await close_session(city_db, sid, DEMO, exit_at=now - timedelta(hours=hours - 1), fee=300)
        made.append(sid)

    first = await api.get("/v1/me/sessions?limit=2", headers=bearer(alice))
    assert first.status_code == 200, first.text
    body = first.json()
    assert [s["id"] for s in body["items"]] == [made[2], made[1]]
    assert body["items"][0]["fee_fen"] == 300
    second = await api.get(
        f"/v1/me/sessions?limit=2&cursor={body['next_cursor']}", headers=bearer(alice)
    )
    assert [s["id"] for s in second.json()["items"]] == [made[0]]
    assert second.json()["next_cursor"] is None


async def test_history_hides_the_plates_previous_holders_sessions(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    vehicle = await bind(api, alice, "赣B12345")
    await bound_since_yesterday(city_db, "赣B12345")
    old = await open_session(city_db, "赣B12345", entry=datetime.now(UTC) - timedelta(hours=2))
    await close_session(city_db, old, DEMO, exit_at=datetime.now(UTC) - timedelta(hours=1), fee=100)
    gone = await api.delete(f"/v1/me/vehicles/{vehicle}", headers=bearer(alice))
    assert gone.status_code == 204, gone.text
    await bind(api, bob, "赣B12345")

    bobs = await api.get("/v1/me/sessions", headers=bearer(bob))
    alices = await api.get("/v1/me/sessions", headers=bearer(alice))

    assert bobs.json()["items"] == []
    assert [s["id"] for s in alices.json()["items"]] == [old]


async def test_a_forged_history_cursor_is_a_400(api: Client, login: Login) -> None:
    alice = await login(ALICE)
    got = await api.get("/v1/me/sessions?cursor=MTpub3QtYS1jdXJzb3I", headers=bearer(alice))
    assert got.status_code == 400
    assert got.headers["content-type"].startswith("application/problem+json")


# ------------------------------------------------------------------ bills and receipts


async def test_my_bills_cover_every_lot_of_the_city_with_the_arrears_total(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    await bind(api, alice, "赣B12345")
    account = await account_of(api, alice)
    street = await on_street_lot(city_db)
    now = datetime.now(UTC)
    gated = await bill_for(
        city_db, lot=DEMO, plate="赣B12345", account=account, fen=500, closed_at=now
    )
    kerb = await bill_for(
        city_db, lot=street, plate="赣B12345", account=None, fen=250, closed_at=now
    )
    # A bill of my plate billed to whoever held it before: arrears follow the plate.
    inherited = await bill_for(
        city_db,
        lot=DEMO,
        plate="赣B12345",
        account=await account_of(api, bob),
        fen=100,
        closed_at=now,
    )
    await bill_for(
        city_db,
        lot=DEMO,
        plate="赣B99999",
        account=await account_of(api, bob),
        fen=900,
        closed_at=now,
    )

    got = await api.get("/v1/me/bills", headers=bearer(alice))

    assert got.status_code == 200, got.text
    body = got.json()
    assert {b["id"] for b in body["items"]} == {gated, kerb, inherited}
    assert {b["lot_id"] for b in body["items"]} == {DEMO, street}
    assert body["arrears_fen"] == 850


async def test_a_receipt_shows_the_payment_of_my_paid_bill(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    await bind(api, alice, "赣B12345")
    account = await account_of(api, alice)
    now = datetime.now(UTC)
    bill_id = await bill_for(
        city_db, lot=DEMO, plate="赣B12345", account=account, fen=500, closed_at=now
    )
    unpaid = await api.get(f"/v1/me/receipts/{bill_id}", headers=bearer(alice))
    assert unpaid.status_code == 404
    async with city_db.transaction():
        await bills.mark_paid(
            city_db,
            bill_id,
            provider="wechatpay",
            payment_ref="wx-123",
            amount_fen=500,
            now=now,
            actor="test",
        )

    got = await api.get(f"/v1/me/receipts/{bill_id}", headers=bearer(alice))

    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["amount_fen"], body["payment_ref"], body["lot_id"]) == (500, "wx-123", DEMO)
    assert body["lot_name"]


async def test_another_drivers_receipt_is_a_404_and_audited(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    account = await account_of(api, alice)
    bill_id = await bill_for(
        city_db, lot=DEMO, plate="赣B12345", account=account, fen=500, closed_at=datetime.now(UTC)
    )

    got = await api.get(f"/v1/me/receipts/{bill_id}", headers=bearer(bob))

    assert got.status_code == 404
    audited = await city_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'denied:receipt' AND target = $1",
        f"bill:{bill_id}",
    )
    assert audited == 1


# ------------------------------------------------------------------ contactless


async def test_contactless_on_a_plate_that_is_not_mine_is_a_404(api: Client, login: Login) -> None:
    alice, bob = await login(ALICE), await login(BOB)
    alices = await bind(api, alice, "赣B12345")

    on = await api.put(
        f"/v1/me/contactless/{alices}",
        json={"provider": "wechatpay", "payer_id": "oBob"},
        headers=bearer(bob),
    )
    off = await api.delete(f"/v1/me/contactless/{alices}", headers=bearer(bob))
    # a plate is no binding's id: it never goes in a URL
    by_plate = await api.delete("/v1/me/contactless/赣B12345", headers=bearer(alice))

    assert (on.status_code, off.status_code) == (404, 404)
    assert by_plate.status_code == 400, by_plate.text


async def test_turning_contactless_off_for_my_plate_is_idempotent(
    api: Client, login: Login
) -> None:
    alice = await login(ALICE)
    vehicle = await bind(api, alice, "赣B12345")

    first = await api.delete(f"/v1/me/contactless/{vehicle}", headers=bearer(alice))
    again = await api.delete(f"/v1/me/contactless/{vehicle}", headers=bearer(alice))

    assert (first.status_code, again.status_code) == (204, 204)


async def test_contactless_with_an_unknown_provider_is_a_400(api: Client, login: Login) -> None:
    alice = await login(ALICE)
    vehicle = await bind(api, alice, "赣B12345")

    on = await api.put(
        f"/v1/me/contactless/{vehicle}",
        json={"provider": "nosuchpay", "payer_id": "oAlice"},
        headers=bearer(alice),
    )

    assert on.status_code == 400, on.text


async def test_a_finance_token_cannot_read_driver_sessions(
    api: Client, token_for: Callable[..., str]
) -> None:
    from parking.auth.model import Role

    got = await api.get("/v1/me/sessions/current", headers=bearer(token_for(Role.FINANCE)))
    assert got.status_code == 403
