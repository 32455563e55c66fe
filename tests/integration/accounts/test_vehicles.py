from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.auth.model import Role

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[dict[str, Any]]]
ALICE, BOB = "13800000001", "13800000002"
#: how routes name a binding (a plate is personal data and never goes in a URL)
VEHICLE_ID = re.compile(r"veh-[0-9A-HJKMNP-TV-Z]{26}")
CLAIMS = "/v1/me/plate-claims"


async def bind(api: Client, token: str, plate: str, **extra: object) -> Any:
    return await api.post("/v1/me/vehicles", json={"plate": plate, **extra}, headers=bearer(token))


async def test_a_bound_plate_is_normalised_and_its_class_derived(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    ordinary = await bind(api, alice, "赣b·1234o")
    assert ordinary.status_code == 201, ordinary.text
    assert VEHICLE_ID.fullmatch(ordinary.json()["id"]), ordinary.text
    assert ordinary.json() | {"bound_at": None, "id": None} == {
        "id": None,
        "plate": "赣B12340",
        "kind": "ordinary",
        "colour": "blue",
        "is_new_energy": False,
        "vehicle_class": 1,
        "class_label": "一类",
        "class_source": "plate",
        "bound_at": None,
        "trust": "unverified",
        "verified_at": None,
    }
    electric = (await bind(api, alice, "粤BD12345")).json()
    assert (electric["is_new_energy"], electric["colour"]) == (True, "green")
    truck = (await bind(api, alice, "赣B12345F")).json()
    assert (truck["kind"], truck["vehicle_class"]) == ("new_energy_large", 2)
    listed = await api.get("/v1/me/vehicles", headers=bearer(alice))
    assert [v["plate"] for v in listed.json()["items"]] == sorted(
        ["赣B12340", "粤BD12345", "赣B12345F"]
    )
    # each item carries the id its binding answered with, one id per binding
    ids = {v["plate"]: v["id"] for v in listed.json()["items"]}
    assert ids == {
        "赣B12340": ordinary.json()["id"],
        "粤BD12345": electric["id"],
        "赣B12345F": truck["id"],
    }
    assert len(set(ids.values())) == 3


async def test_a_driver_may_declare_a_higher_class_with_a_reason(
    api: Client, login: Login, city_db_url: str, token_for: Callable[..., str]
) -> None:
    alice = await login(ALICE)
    van = await bind(api, alice["access_token"], "赣B77777", vehicle_class=2, reason="9-seat van")
    assert van.status_code == 201, van.text
    assert (van.json()["vehicle_class"], van.json()["class_source"]) == (2, "driver")
    conn = await asyncpg.connect(city_db_url)
    try:
        row = await conn.fetchrow("SELECT * FROM vehicle_class_overrides WHERE plate = '赣B77777'")
    finally:
        await conn.close()
    assert row is not None
    assert (row["vehicle_class"], row["reason"], row["set_by"]) == (
        2,
        "9-seat van",
        alice["account_id"],
    )
    # The pricer now bills the plate as class 2.
    quote = await api.post(
        "/v1/tariffs/quote",
        json={
            "lot_id": "GZ-DEMO-01",
            "plate": "赣B77777",
            "entry": "2026-11-27T08:00:00+08:00",
            "exit": "2026-11-27T09:00:00+08:00",
        },
        headers=bearer(token_for(Role.OPERATOR)),
    )
    assert quote.json()["vehicle_class"] == 2
    # Unbinding takes the driver's declaration with it.
    gone = await api.delete(
        f"/v1/me/vehicles/{van.json()['id']}", headers=bearer(alice["access_token"])
    )
    assert gone.status_code == 204
    conn = await asyncpg.connect(city_db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM vehicle_class_overrides") == 0
    finally:
        await conn.close()


def quote_path(plate: str) -> str:
    return quote(plate, safe="")


async def test_a_driver_cannot_lower_a_class_or_replace_staffs(
    api: Client, login: Login, city_db_url: str
) -> None:
    alice = (await login(ALICE))["access_token"]
    lower = await bind(api, alice, "赣B12345F", vehicle_class=1, reason="it is small")
    assert lower.status_code == 422
    assert lower.json()["type"].endswith("/class-override-refused")
    conn = await asyncpg.connect(city_db_url)
    try:
        await conn.execute(
            "INSERT INTO vehicle_class_overrides (plate, vehicle_class, reason, set_by) "
            "VALUES ('赣B55555', 3, 'registration checked', 'ops-li')"
        )
    finally:
        await conn.close()
    replace = await bind(api, alice, "赣B55555", vehicle_class=4, reason="bus")
    assert replace.status_code == 422
    kept = await bind(api, alice, "赣B55555")
    assert (kept.json()["vehicle_class"], kept.json()["class_source"]) == (3, "operator")
    half = await bind(api, alice, "赣B66666", vehicle_class=2)
    assert half.status_code == 400


async def test_a_plate_held_by_another_account_is_a_409_naming_the_claim_route(
    api: Client, login: Login
) -> None:
    alice = (await login(ALICE))["access_token"]
    bob = (await login(BOB))["access_token"]
    assert (await bind(api, alice, "赣B12345")).status_code == 201
    taken = await bind(api, bob, "赣b12345")
    assert taken.status_code == 409
    problem = taken.json()
    assert problem["type"] == "https://changbo.example/problems/plate-held"
    assert "赣B12345 is bound to another account" in problem["detail"]
    assert "POST /v1/me/plate-claims with the plate" in problem["detail"]
    mine = await bind(api, alice, "赣B12345")
    assert mine.status_code == 409
    assert mine.json()["type"].endswith("/plate-already-yours")


async def test_two_accounts_binding_one_plate_at_once_get_one_binding(
    api: Client, login: Login
) -> None:
    alice = (await login(ALICE))["access_token"]
    bob = (await login(BOB))["access_token"]
    answers = await asyncio.gather(*(bind(api, t, "赣B24680") for t in (alice, bob) * 3))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409, 409]


async def test_an_account_binds_at_most_five_plates(
    api: Client, login: Login, city_db_url: str
) -> None:
    alice = await login(ALICE)
    bob = await login(BOB)
    plates = [f"赣B1000{i}" for i in range(6)]
    answers = [await bind(api, alice["access_token"], p) for p in plates]
    assert [a.status_code for a in answers] == [201] * 5 + [409]
    assert answers[-1].json()["type"].endswith("/too-many-vehicles")
    released = await api.delete(
        f"/v1/me/vehicles/{answers[0].json()['id']}", headers=bearer(alice["access_token"])
    )
    assert released.status_code == 204
    assert (await bind(api, alice["access_token"], "赣B10005")).status_code == 201
    conn = await asyncpg.connect(city_db_url)
    try:
        # The database holds both rules too, whatever the code does.
        with pytest.raises(asyncpg.CheckViolationError, match="5 is the most"):
            await conn.execute(
                "INSERT INTO vehicles (id, account_id, plate, bound_at) "
                "VALUES ('veh-01JD00000000000000000000ZZ', $1, '赣B99999', now())",
                alice["account_id"],
            )
        with pytest.raises(asyncpg.CheckViolationError, match="5 is the most"):
            await conn.execute(
                "UPDATE vehicles SET released_at = NULL, released_reason = NULL "
                "WHERE plate = '赣B10000'"
            )
        with pytest.raises(asyncpg.UniqueViolationError, match="vehicles_one_holder_per_plate"):
            await conn.execute(
                "INSERT INTO vehicles (id, account_id, plate, bound_at) "
                "VALUES ('veh-01JD00000000000000000000ZZ', $1, '赣B10001', now())",
                bob["account_id"],
            )
    finally:
        await conn.close()


async def test_the_plate_list_pages_with_an_opaque_cursor(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    plates = sorted(f"赣B2000{i}" for i in range(5))
    for plate in plates:
        assert (await bind(api, alice, plate)).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        got = await api.get("/v1/me/vehicles", params=params, headers=bearer(alice))
        assert got.status_code == 200, got.text
        body = got.json()
        seen += [v["plate"] for v in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert "赣B" not in cursor
    assert (seen, pages) == (plates, 3)
    for bad in ({"cursor": "not-a-cursor"}, {"limit": 101}, {"limit": 0}):
        refused = await api.get("/v1/me/vehicles", params=bad, headers=bearer(alice))
        assert refused.status_code == 400, (bad, refused.text)


async def unbind_denials(conn: asyncpg.Connection, vehicle_id: str) -> list[str]:
    """The actors of the audit lines of refused unbinds of ``vehicle_id``."""
    rows = await conn.fetch(
        "SELECT actor FROM audit_log WHERE action = 'denied:vehicle.unbind' AND target = $1 "
        "ORDER BY id",
        f"vehicle:{vehicle_id}",
    )
    return [r["actor"] for r in rows]


async def test_a_driver_sees_and_unbinds_only_their_own_plates(
    api: Client, login: Login, city_db: asyncpg.Connection
) -> None:
    alice = await login(ALICE)
    bob = await login(BOB)
    alices = (await bind(api, alice["access_token"], "赣B13579")).json()["id"]
    assert (await api.get("/v1/me/vehicles", headers=bearer(bob["access_token"]))).json()[
        "items"
    ] == []
    theirs = await api.delete(f"/v1/me/vehicles/{alices}", headers=bearer(bob["access_token"]))
    assert theirs.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    assert await unbind_denials(city_db, alices) == [bob["account_id"]]
    mine = await api.delete(f"/v1/me/vehicles/{alices}", headers=bearer(alice["access_token"]))
    assert mine.status_code == 204
    again = await api.delete(f"/v1/me/vehicles/{alices}", headers=bearer(alice["access_token"]))
    assert again.status_code == 404
    # Her own binding, released: no attempt on someone else's car.
    assert await unbind_denials(city_db, alices) == [bob["account_id"]]
    # Released, another account's still: a 404, audited.
    released = await api.delete(f"/v1/me/vehicles/{alices}", headers=bearer(bob["access_token"]))
    assert released.status_code == 404
    assert await unbind_denials(city_db, alices) == [bob["account_id"]] * 2
    # An id never made: the same 404, nothing to audit.
    never = "veh-" + "0" * 26
    unknown = await api.delete(f"/v1/me/vehicles/{never}", headers=bearer(bob["access_token"]))
    assert (unknown.status_code, unknown.json()["type"]) == (404, theirs.json()["type"])
    assert await unbind_denials(city_db, never) == []
    # Released, so Bob may bind it now, under a binding of his own.
    rebound = await bind(api, bob["access_token"], "赣B13579")
    assert rebound.status_code == 201
    assert rebound.json()["id"] != alices
    assert await city_db.fetchval(
        "SELECT released_at IS NOT NULL FROM vehicles WHERE id = $1", alices
    )


async def test_an_approved_claim_moves_the_plate_and_is_audited(
    api: Client, login: Login, token_for: Callable[..., str], city_db_url: str
) -> None:
    alice = await login(ALICE)
    bob = await login(BOB)
    operator = bearer(token_for(Role.OPERATOR, "ops-wang"))
    await bind(api, alice["access_token"], "赣B12345", vehicle_class=2, reason="van")
    claim = await api.post(
        CLAIMS,
        json={
            "plate": "赣B12345",
            "evidence": "行驶证 360702123456",
            "photo_ref": "upload/xsz-1.jpg",
        },
        headers=bearer(bob["access_token"]),
    )
    assert claim.status_code == 201, claim.text
    assert claim.json()["status"] == "pending"
    assert "holder_account_id" not in claim.json()
    twice = await api.post(
        CLAIMS,
        json={"plate": "赣B12345", "evidence": "again", "photo_ref": "upload/xsz-2.jpg"},
        headers=bearer(bob["access_token"]),
    )
    assert twice.status_code == 409
    queue = await api.get("/v1/operator/plate-claims", headers=operator)
    assert queue.status_code == 200, queue.text
    [listed] = queue.json()["items"]
    assert (listed["id"], listed["holder_account_id"]) == (claim.json()["id"], alice["account_id"])
    approved = await api.post(
        f"/v1/operator/plate-claims/{listed['id']}/approve", json={}, headers=operator
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == ("approved", "ops-wang")
    bobs = await api.get("/v1/me/vehicles", headers=bearer(bob["access_token"]))
    assert [(v["plate"], v["class_source"]) for v in bobs.json()["items"]] == [
        ("赣B12345", "plate")
    ]
    alices = await api.get("/v1/me/vehicles", headers=bearer(alice["access_token"]))
    assert alices.json()["items"] == []
    mine = await api.get("/v1/me/plate-claims", headers=bearer(bob["access_token"]))
    assert [c["status"] for c in mine.json()["items"]] == ["approved"]
    again = await api.post(
        f"/v1/operator/plate-claims/{listed['id']}/approve", json={}, headers=operator
    )
    assert again.status_code == 409
    conn = await asyncpg.connect(city_db_url)
    try:
        audit = await conn.fetch(
            "SELECT actor, role, action FROM audit_log WHERE target = 'plate:赣B12345' ORDER BY id"
        )
    finally:
        await conn.close()
    assert [(r["actor"], r["action"]) for r in audit] == [
        (alice["account_id"], "vehicle.bind"),
        (bob["account_id"], "plate_claim.create"),
        ("ops-wang", "plate_claim.approve"),
    ]


async def test_a_rejected_claim_needs_a_note_and_leaves_the_plate(
    api: Client, login: Login, token_for: Callable[..., str]
) -> None:
    alice = (await login(ALICE))["access_token"]
    bob = (await login(BOB))["access_token"]
    operator = bearer(token_for(Role.OPERATOR))
    await bind(api, alice, "赣B12345")
    claim = await api.post(
        CLAIMS,
        json={"plate": "赣B12345", "evidence": "photo ref 42", "photo_ref": "upload/xsz-42.jpg"},
        headers=bearer(bob),
    )
    claim_id = claim.json()["id"]
    silent = await api.post(
        f"/v1/operator/plate-claims/{claim_id}/reject", json={}, headers=operator
    )
    assert silent.status_code == 400
    rejected = await api.post(
        f"/v1/operator/plate-claims/{claim_id}/reject",
        json={"note": "registration names someone else"},
        headers=operator,
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert [
        v["plate"]
        for v in (await api.get("/v1/me/vehicles", headers=bearer(alice))).json()["items"]
    ] == ["赣B12345"]
    assert (
        await api.get("/v1/operator/plate-claims", params={"status": "pending"}, headers=operator)
    ).json()["items"] == []
    unknown = await api.post(
        "/v1/operator/plate-claims/pc-01JD0000000000000000000000/approve", json={}, headers=operator
    )
    assert unknown.status_code == 404


async def test_a_claim_on_a_free_plate_says_to_bind_it(api: Client, login: Login) -> None:
    bob = (await login(BOB))["access_token"]
    claim = await api.post(
        CLAIMS,
        json={"plate": "赣B12345", "evidence": "x", "photo_ref": "upload/x.jpg"},
        headers=bearer(bob),
    )
    assert claim.status_code == 409
    assert "bind it" in claim.json()["detail"]


# ------------------------------------------------------------------ A4, A5, A7


async def test_extra_fields_in_a_body_are_refused(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    for path, body in (
        ("/v1/me/vehicles", {"plate": "赣B12345", "status": "approved"}),
        ("/v1/me/vehicles", {"plate": "赣B12345", "account_id": "acc-x"}),
        (CLAIMS, {"plate": "赣B12345", "evidence": "x", "photo_ref": "up/x.jpg", "status": "ok"}),
        ("/v1/plate-bills", {"plate": "赣B12345", "account_id": "acc-x"}),
        ("/v1/auth/otp", {"phone": ALICE, "amount": 1}),
        ("/v1/auth/token", {"phone": ALICE, "code": "123456", "paid_at": "2026-01-01"}),
        ("/v1/qr/resolve", {"code": "x", "status": "ok"}),
    ):
        refused = await api.post(path, json=body, headers=bearer(alice))
        assert refused.status_code == 400, (path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"


async def test_a_body_over_the_route_limit_is_refused_before_parsing(
    api: Client, login: Login
) -> None:
    alice = (await login(ALICE))["access_token"]
    for path, size in (
        ("/v1/auth/otp", 3 * 1024),
        ("/v1/me/vehicles", 5 * 1024),
        (CLAIMS, 5 * 1024),
        ("/v1/plate-bills", 1024),
    ):
        padded = b'{"phone": "' + b"1" * size + b'"}'
        refused = await api.post(
            path,
            content=padded,
            headers={"content-type": "application/json"} | bearer(alice),
        )
        assert refused.status_code == 413, (path, refused.text)


JUNK_PLATES = [
    "\x00",
    "赣B1\x0023",
    "赣B12345\u200b",
    "🚗🚗🚗",
    "A" * 33,
    "",
    " ",
    "赣",
    "ＷＪ" * 20,
    "\ufeff赣B12345",
    "京A12345" + "\u0301",
]


async def test_junk_plates_are_a_typed_400(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    for plate in JUNK_PLATES:
        refused = await bind(api, alice, plate)
        assert refused.status_code == 400, (plate, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        claimed = await api.post(
            CLAIMS,
            json={"plate": plate, "evidence": "行驶证 1", "photo_ref": "upload/x.jpg"},
            headers=bearer(alice),
        )
        assert claimed.status_code == 400, (plate, claimed.text)
        assert claimed.headers["content-type"] == "application/problem+json"
        # a plate is no binding's id: the path refuses it, whatever it holds
        path = await api.delete(
            f"/v1/me/vehicles/{quote_path(plate) or '%20'}", headers=bearer(alice)
        )
        assert path.status_code == 400, (plate, path.text)


async def test_undecodable_bodies_are_a_400(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    for raw in (
        b'{"plate": "\\ud800"}',  # a lone surrogate
        b'{"plate": "\xff\xfe"}',  # not UTF-8
        b'{"plate": ',
        b"[]",
        b'{"plate": 12345}',
        b'{"plate": null}',
    ):
        for path in ("/v1/me/vehicles", "/v1/plate-bills"):
            refused = await api.post(
                path,
                content=raw,
                headers={"content-type": "application/json"} | bearer(alice),
            )
            assert refused.status_code == 400, (path, raw, refused.status_code, refused.text)


async def test_a_huge_or_malformed_vehicle_id_in_the_path_is_a_400(
    api: Client, login: Login
) -> None:
    alice = (await login(ALICE))["access_token"]
    refused = await api.delete("/v1/me/vehicles/" + "A" * 5000, headers=bearer(alice))
    assert refused.status_code == 400
    nul = await api.delete("/v1/me/vehicles/%00", headers=bearer(alice))
    assert nul.status_code == 400
    bad_utf8 = await api.delete("/v1/me/vehicles/%ff%fe", headers=bearer(alice))
    assert bad_utf8.status_code in (400, 404)
    ulid = "01JD" + "0" * 22
    for near in (
        "veh-" + "A" * 5000,
        f"veh-{ulid}%00",
        f"veh-{ulid[:-1]}",
        f"veh-{ulid}0",
        f"veh-{ulid[:-1]}I",  # not Crockford base32
        f"veh-{ulid.lower()}",
        f"pc-{ulid}",
        quote_path("赣B12345"),
    ):
        got = await api.delete(f"/v1/me/vehicles/{near}", headers=bearer(alice))
        assert got.status_code == 400, (near[:40], got.text)
        assert got.headers["content-type"] == "application/problem+json"
    # a plate too long for any route is refused in the body as well
    huge = await api.post(
        CLAIMS,
        json={"plate": "A" * 1000, "evidence": "行驶证 1", "photo_ref": "upload/x.jpg"},
        headers=bearer(alice),
    )
    assert huge.status_code == 400, huge.text
    assert huge.headers["content-type"] == "application/problem+json"


async def test_control_characters_in_free_text_are_refused(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    bob = (await login(BOB))["access_token"]
    await bind(api, alice, "赣B12345")
    for evidence in ("a\x00b", "\x07", "line\nbreak"):
        refused = await api.post(
            CLAIMS,
            json={"plate": "赣B12345", "evidence": evidence, "photo_ref": "upload/xsz.jpg"},
            headers=bearer(bob),
        )
        assert refused.status_code == 400, refused.text
    reason = await bind(api, bob, "赣B54321", vehicle_class=2, reason="van\x00")
    assert reason.status_code == 400
