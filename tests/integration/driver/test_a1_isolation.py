"""Reliability matrix A1: driver B naming driver A's bill, payment, session or plate gets
the 404 of a thing that does not exist, changes nothing, and leaves an audit line.

One case per driver route that takes an id or a plate (a plate only in a body: a
route names a binding by its id, never by its plate). Alice's things are made
through the API where it can (her payment is a real order at the sandbox
provider, started as ``parking sandbox-pay`` on a free port).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sandboxkit import Client, Login, api, app_settings, bearer, sandbox

from parking.bills import service as bills
from parking.config import Settings
from parking.qr import keys as qr_keys
from parking.qr import logic as qr_logic
from parking.qr.model import QrKind
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

__all__ = ["api", "app_settings", "sandbox"]
DEMO = "GZ-DEMO-01"
ALICE, BOB = "13800000031", "13800000032"
PLATE = "赣B3A111"


async def account_of(api: Client, token: str) -> str:
    me = await api.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    account: str = me.json()["id"]
    return account


@dataclass(frozen=True)
class Alices:
    account: str
    plate: str
    vehicle_id: str
    bill_id: str
    payment_id: str
    session_id: str
    space_code: str


async def a_bill(conn: asyncpg.Connection, account: str) -> str:
    row = await conn.fetchrow("SELECT tariff_id, version FROM tariff_versions LIMIT 1")
    assert row is not None
    now = datetime.now(UTC)
    async with conn.transaction():
        bill = await bills.open_bill(
            conn,
            session_id="s-a1-" + uuid.uuid4().hex[:12],
            lot_id=DEMO,
            plate=PLATE,
            account_id=account,
            amount_fen=700,
            tariff_id=row["tariff_id"],
            tariff_version=row["version"],
            quote=b"{}",
            closed_at=now,
            now=now,
        )
    assert bill is not None
    return bill.id


async def a_street_space_code(conn: asyncpg.Connection, app_settings: Settings) -> str:
    row = await conn.fetchrow(
        "SELECT s.lot_id, s.space_id FROM spaces s JOIN lots l ON l.id = s.lot_id "
        "WHERE l.kind = 'on_street' ORDER BY s.lot_id, s.space_id LIMIT 1"
    )
    assert row is not None
    keyring = qr_keys.load_or_create(qr_keys.path_in(app_settings.stack_dir))
    return qr_logic.sign(
        qr_logic.target(QrKind.SPACE, row["lot_id"], row["space_id"]),
        keyring=keyring,
        now=datetime.now(UTC),
    )


@pytest.fixture
async def alices(
    api: Client, login: Login, city_db: asyncpg.Connection, app_settings: Settings
) -> Alices:
    """Alice's plate, a bill of hers with a payment under way, an open stay of her plate."""
    alice = await login(ALICE)
    bound = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(alice))
    assert bound.status_code == 201, bound.text
    account = await account_of(api, alice)
    bill_id = await a_bill(city_db, account)
    paying = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill_id]},
        headers={**bearer(alice), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert paying.status_code == 201, paying.text
    session_id = "s-a1-" + uuid.uuid4().hex[:12]
    await sessions.record(
        city_db,
        [
            SessionChange(
                id=session_id,
                lot_id=DEMO,
                status=SessionStatus.OPEN,
                plate=PLATE,
                entry_at=datetime.now(UTC) - timedelta(hours=1),
            )
        ],
    )
    return Alices(
        account=account,
        plate=PLATE,
        vehicle_id=bound.json()["id"],
        bill_id=bill_id,
        payment_id=paying.json()["id"],
        session_id=session_id,
        space_code=await a_street_space_code(city_db, app_settings),
    )


@dataclass(frozen=True)
class Case:
    """Bob's request for one of Alice's things, and the audit line it must leave."""

    method: str
    path: Callable[[Alices], str]
    action: str
    target: Callable[[Alices], str]
    body: Callable[[Alices], Any] | None = None
    headers: Callable[[], dict[str, str]] = dict


CASES = [
    pytest.param(
        Case(
            "GET",
            lambda a: f"/v1/me/receipts/{a.bill_id}",
            "denied:receipt",
            lambda a: f"bill:{a.bill_id}",
        ),
        id="receipt",
    ),
    pytest.param(
        Case(
            "POST",
            lambda _: "/v1/bills/pay",
            "denied:pay",
            lambda a: f"bill:{a.bill_id}",
            body=lambda a: {"bill_ids": [a.bill_id]},
            headers=lambda: {"Idempotency-Key": uuid.uuid4().hex},
        ),
        id="pay",
    ),
    pytest.param(
        Case(
            "GET",
            lambda a: f"/v1/payments/{a.payment_id}",
            "denied:payment",
            lambda a: f"payment:{a.payment_id}",
        ),
        id="payment",
    ),
    pytest.param(
        Case(
            "POST",
            lambda a: f"/v1/bills/{a.bill_id}/dispute",
            "denied:dispute",
            lambda a: f"bill:{a.bill_id}",
            body=lambda _: {"reason": "not my car"},
        ),
        id="dispute",
    ),
    pytest.param(
        Case(
            "PUT",
            lambda a: f"/v1/me/contactless/{a.vehicle_id}",
            "denied:contactless",
            lambda a: f"vehicle:{a.vehicle_id}",
            body=lambda _: {"provider": "wechat", "payer_id": "oBob"},
        ),
        id="contactless-on",
    ),
    pytest.param(
        Case(
            "POST",
            lambda a: f"/v1/me/contactless/{a.vehicle_id}/authorisation",
            "denied:contactless",
            lambda a: f"vehicle:{a.vehicle_id}",
            body=lambda _: {"provider": "wechat", "return_to": "/q/tok_A1"},
        ),
        id="contactless-authorisation",
    ),
    pytest.param(
        Case(
            "DELETE",
            lambda a: f"/v1/me/contactless/{a.vehicle_id}",
            "denied:contactless",
            lambda a: f"vehicle:{a.vehicle_id}",
        ),
        id="contactless-off",
    ),
    pytest.param(
        Case(
            "POST",
            lambda a: f"/v1/me/sessions/{a.session_id}/prepay",
            "denied:prepay",
            lambda a: a.session_id,
        ),
        id="prepay",
    ),
    pytest.param(
        Case(
            "DELETE",
            lambda a: f"/v1/me/vehicles/{a.vehicle_id}",
            "denied:vehicle.unbind",
            lambda a: f"vehicle:{a.vehicle_id}",
        ),
        id="vehicle-unbind",
    ),
    pytest.param(
        Case(
            "POST",
            lambda _: "/v1/scans/space",
            "denied:scan.space",
            lambda a: f"plate:{a.plate}",
            body=lambda a: {"code": a.space_code, "plate": a.plate},
        ),
        id="space-claim",
    ),
]


async def nothing_of_alices_changed(conn: asyncpg.Connection, alices: Alices) -> None:
    bill = await conn.fetchrow("SELECT status FROM bills WHERE id = $1", alices.bill_id)
    assert bill is not None
    assert bill["status"] == "paying"
    assert await conn.fetchval("SELECT count(*) FROM disputes") == 0
    assert (
        await conn.fetchval("SELECT count(*) FROM bills WHERE session_id = $1", alices.session_id)
        == 0
    )
    holder = await conn.fetchval(
        "SELECT account_id FROM vehicles WHERE plate = $1 AND released_at IS NULL", alices.plate
    )
    assert holder == alices.account
    assert await conn.fetchval("SELECT count(*) FROM payment_attempts") == 1


@pytest.mark.parametrize("case", CASES)
async def test_another_drivers_thing_is_a_404_that_is_audited(
    case: Case, api: Client, login: Login, alices: Alices, city_db: asyncpg.Connection
) -> None:
    bob = await login(BOB)
    bob_account = await account_of(api, bob)

    got = await api.request(
        case.method,
        case.path(alices),
        json=case.body(alices) if case.body is not None else None,
        headers={**bearer(bob), **case.headers()},
    )

    assert got.status_code == 404, got.text
    assert got.json()["type"].endswith("/not-found"), got.text
    await nothing_of_alices_changed(city_db, alices)
    lines = await city_db.fetch(
        "SELECT actor, role FROM audit_log WHERE action = $1 AND target = $2",
        case.action,
        case.target(alices),
    )
    assert [(line["actor"], line["role"]) for line in lines] == [(bob_account, "driver")]


async def test_a_bill_that_does_not_exist_is_the_same_404_without_an_audit_line(
    api: Client, login: Login, alices: Alices, city_db: asyncpg.Connection
) -> None:
    bob = await login(BOB)
    missing = "b-" + "0" * 26

    got = await api.post(f"/v1/bills/{missing}/dispute", json={"reason": "?"}, headers=bearer(bob))
    theirs = await api.post(
        f"/v1/bills/{alices.bill_id}/dispute", json={"reason": "?"}, headers=bearer(bob)
    )

    assert (got.status_code, theirs.status_code) == (404, 404)
    assert got.json()["type"] == theirs.json()["type"]
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE target = $1", f"bill:{missing}"
        )
        == 0
    )


async def test_a_vehicle_id_never_made_is_the_same_404_without_an_audit_line(
    api: Client, login: Login, alices: Alices, city_db: asyncpg.Connection
) -> None:
    bob = await login(BOB)
    missing = "veh-" + "0" * 26

    for path in ("/v1/me/vehicles/{}", "/v1/me/contactless/{}"):
        got = await api.delete(path.format(missing), headers=bearer(bob))
        theirs = await api.delete(path.format(alices.vehicle_id), headers=bearer(bob))

        assert (got.status_code, theirs.status_code) == (404, 404), (path, got.text)
        assert got.json()["type"] == theirs.json()["type"]
    assert (
        await city_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE target = $1", f"vehicle:{missing}"
        )
        == 0
    )
    await nothing_of_alices_changed(city_db, alices)
