"""码上反映 end to end through the API (real PostgreSQL and Redis), time driven by the
app's injected clock: each level of 三事分流, the whistle that closes only when every
department reported in, a breached clock that escalates and notifies, duplicates that
merge, bad input refused, and response-time figures equal to those computed here from
the moves the test made."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from kits import bearer, log_in
from litestar.testing import AsyncTestClient
from PIL import Image

from parking.api.app import create_app
from parking.auth import tokens
from parking.auth.model import Role
from parking.bills import service as bills
from parking.cases import clocks, logic
from parking.cases import service as cases
from parking.clock import SHANGHAI, FixedClock
from parking.config import Settings
from parking.ids import new_id
from parking.payments import anomalies as payment_anomalies
from parking.payments import disputes as payment_disputes
from parking.seed.city import DEMO_COMPANY, DEMO_LOT

T0 = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
Client = AsyncTestClient[Any]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def app(
    app_settings: Settings, redis_client: Any, clock: FixedClock
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(app_settings, clock=clock)) as client:
        yield client


def staff(
    settings: Settings, clock: FixedClock, role: Role, scope: str | None = None
) -> dict[str, str]:
    company = DEMO_COMPANY if role is Role.OPERATOR else None
    token = tokens.issue(
        settings.jwt_key,
        subject=f"{role.value}-{scope or 'x'}",
        role=role,
        now=clock.now(),
        ttl=timedelta(hours=12),
        company=company,
        scope=scope,
    )
    return bearer(token)


async def driver(app: Client, redis_client: Any, phone: str) -> dict[str, str]:
    """The phone's driver (logged in by one-time code), with a token that outlives the
    days this test's clock moves through."""
    first = bearer((await log_in(app, redis_client, phone))["access_token"])
    account = (await app.get("/v1/me", headers=first)).json()["id"]
    settings: Settings = app.app.state.infra.settings
    clock: FixedClock = app.app.state.clock
    token = tokens.issue(
        settings.jwt_key,
        subject=account,
        role=Role.DRIVER,
        now=clock.now(),
        ttl=timedelta(days=10),
    )
    return bearer(token)


async def report(app: Client, who: dict[str, str], **body: Any) -> dict[str, Any]:
    got = await app.post("/v1/reports", json={"lot_id": DEMO_LOT, **body}, headers=who)
    assert got.status_code == 201, got.text
    answer: dict[str, Any] = got.json()
    return answer


async def move(
    app: Client, who: dict[str, str], case_id: str, action: str, **body: Any
) -> dict[str, Any]:
    got = await app.post(
        f"/v1/cases/{case_id}/{action}", json={"note": f"{action} done", **body}, headers=who
    )
    assert got.status_code == 200, got.text
    view: dict[str, Any] = got.json()
    return view


async def test_a_small_case_the_lots_staff_accept_resolve_and_the_reporter_confirms(
    app: Client, redis_client: Any, app_settings: Settings, clock: FixedClock
) -> None:
    alice = await driver(app, redis_client, "13800000151")
    made = await report(
        app, alice, space_id=None, category="space_blocked", text="3号车位被杂物占了"
    )
    assert (made["level"], made["state"], made["merged"]) == ("small", "dispatched", False)
    lot_staff = staff(app_settings, clock, Role.LOT_STAFF, DEMO_LOT)
    district = staff(app_settings, clock, Role.DISTRICT_TEAM, "ZG")
    queue = (await app.get("/v1/cases", headers=lot_staff)).json()["items"]
    assert [c["id"] for c in queue] == [made["id"]]
    # the district's team does not hold it: not in its queue, 404 on the case
    assert (await app.get("/v1/cases", headers=district)).json()["items"] == []
    assert (await app.get(f"/v1/cases/{made['id']}", headers=district)).status_code == 404

    clock.advance(timedelta(minutes=12))
    await move(app, lot_staff, made["id"], "accept")
    clock.advance(timedelta(minutes=3))
    await move(app, lot_staff, made["id"], "start")
    clock.advance(timedelta(minutes=20))
    done = await move(app, lot_staff, made["id"], "resolve", note="杂物已清走")
    assert done["case"]["state"] == "resolved"
    mine = (await app.get(f"/v1/reports/{made['id']}", headers=alice)).json()
    assert (mine["state"], mine["resolution"]) == ("resolved", "杂物已清走")
    confirmed = await app.post(f"/v1/reports/{made['id']}/confirm", json={}, headers=alice)
    assert confirmed.status_code == 200
    assert confirmed.json()["state"] == "closed"
    events = (await app.get(f"/v1/cases/{made['id']}", headers=lot_staff)).json()["events"]
    assert [e["action"] for e in events] == [
        "received", "dispatched", "accept", "start", "resolve", "confirm",
    ]  # fmt: skip
    assert [e["actor"] for e in events][2:5] == ["lot_staff-GZ-DEMO-01"] * 3


async def test_a_middle_case_goes_to_the_district_team_and_a_reopen_sends_it_back(
    app: Client, redis_client: Any, app_settings: Settings, clock: FixedClock
) -> None:
    bob = await driver(app, redis_client, "13800000152")
    made = await report(app, bob, lane_id="out1", category="gate_fault", text="出口道闸不抬杆")
    assert made["level"] == "middle"
    district = staff(app_settings, clock, Role.DISTRICT_TEAM, "ZG")
    lot_staff = staff(app_settings, clock, Role.LOT_STAFF, DEMO_LOT)
    refused = await app.post(
        f"/v1/cases/{made['id']}/accept", json={"note": "x"}, headers=lot_staff
    )
    assert refused.status_code == 404  # not theirs to see
    await move(app, district, made["id"], "accept")
    await move(app, district, made["id"], "resolve", note="已重启道闸")
    reopened = await app.post(
        f"/v1/reports/{made['id']}/reopen", json={"note": "还是不抬杆"}, headers=bob
    )
    assert reopened.status_code == 200
    assert reopened.json()["state"] == "reopened"
    view = await move(app, district, made["id"], "accept")
    assert view["case"]["state"] == "accepted"


async def test_a_whistled_case_closes_only_when_every_department_reported_in_and_done(
    app: Client, redis_client: Any, app_settings: Settings, clock: FixedClock
) -> None:
    carol = await driver(app, redis_client, "13800000153")
    made = await report(app, carol, category="safety_hazard", text="地下车库顶板有裂缝")
    assert made["level"] == "big"
    coordinator = staff(app_settings, clock, Role.DISTRICT_TEAM, "ZG")
    view = (await app.get(f"/v1/cases/{made['id']}", headers=coordinator)).json()
    called = [t["holder"] for t in view["tasks"]]
    assert called == sorted(
        [
            "department:traffic_police",
            "department:urban_management",
            f"operator:{DEMO_COMPANY}",
            "district_team:ZG",
        ]
    )
    await move(app, coordinator, made["id"], "accept")
    teams = {
        "department:traffic_police": staff(app_settings, clock, Role.DEPARTMENT, "traffic_police"),
        "department:urban_management": staff(
            app_settings, clock, Role.DEPARTMENT, "urban_management"
        ),
        f"operator:{DEMO_COMPANY}": staff(app_settings, clock, Role.OPERATOR),
        "district_team:ZG": coordinator,
    }
    for holder, who in teams.items():
        reported_in = await app.post(
            f"/v1/cases/{made['id']}/tasks/accept", json={"note": "报到"}, headers=who
        )
        assert reported_in.status_code == 200, (holder, reported_in.text)
    early = await app.post(
        f"/v1/cases/{made['id']}/resolve", json={"note": "x"}, headers=coordinator
    )
    assert early.status_code == 409
    assert "report done first" in early.json()["detail"]
    for holder, who in list(teams.items())[:-1]:
        done = await app.post(
            f"/v1/cases/{made['id']}/tasks/done", json={"note": "已处理"}, headers=who
        )
        assert done.status_code == 200, (holder, done.text)
    still = await app.post(
        f"/v1/cases/{made['id']}/resolve", json={"note": "x"}, headers=coordinator
    )
    assert still.status_code == 409
    assert "district_team:ZG" in still.json()["detail"]
    await app.post(f"/v1/cases/{made['id']}/tasks/done", json={"note": "ok"}, headers=coordinator)
    resolved = await move(app, coordinator, made["id"], "resolve", note="已加固")
    assert resolved["case"]["state"] == "resolved"
    assert {t["state"] for t in resolved["tasks"]} == {"done"}


async def test_a_breached_clock_raises_the_case_and_notifies_and_72_hours_close_it(
    app: Client,
    redis_client: Any,
    app_settings: Settings,
    clock: FixedClock,
    city_db: asyncpg.Connection,
) -> None:
    dave = await driver(app, redis_client, "13800000154")
    made = await report(app, dave, category="facility_damage", text="指示牌倒了")
    assert made["level"] == "small"
    notifier = cases.LocalNotifier()
    clock.advance(timedelta(minutes=29))
    assert await clocks.tick(city_db, notifier, now=clock.now()) == {
        "escalated": 0, "reminded": 0, "closed": 0,
    }  # fmt: skip
    clock.advance(timedelta(minutes=1))
    assert (await clocks.tick(city_db, notifier, now=clock.now()))["escalated"] == 1
    district = staff(app_settings, clock, Role.DISTRICT_TEAM, "ZG")
    view = (await app.get(f"/v1/cases/{made['id']}", headers=district)).json()
    assert (view["case"]["level"], view["case"]["holder"]) == ("middle", "district_team:ZG")
    assert view["events"][-1]["action"] == "breach"
    told = await city_db.fetch(
        "SELECT recipient, kind FROM case_notifications WHERE case_id = $1 ORDER BY id",
        made["id"],
    )
    assert [(r["recipient"], r["kind"]) for r in told] == [
        (f"lot_staff:{DEMO_LOT}", "dispatched"),
        ("district_team:ZG", "dispatched"),
    ]
    # accepted and resolved; the reporter never answers: closed 72 hours later
    await move(app, district, made["id"], "accept")
    await move(app, district, made["id"], "resolve", note="已扶正")
    clock.advance(timedelta(hours=71))
    assert (await clocks.tick(city_db, notifier, now=clock.now()))["closed"] == 0
    clock.advance(timedelta(hours=1))
    assert (await clocks.tick(city_db, notifier, now=clock.now()))["closed"] == 1
    state = await city_db.fetchval("SELECT state FROM cases WHERE id = $1", made["id"])
    assert state == "closed"


async def test_near_identical_reports_of_one_place_merge_into_one_case(
    app: Client, redis_client: Any, app_settings: Settings, clock: FixedClock
) -> None:
    first = await report(
        app, await driver(app, redis_client, "13800000155"), category="illegal_parking",
        lane_id="in1", text="入口被车堵住",
    )  # fmt: skip
    clock.advance(timedelta(minutes=5))
    second_reporter = await driver(app, redis_client, "13800000156")
    second = await report(
        app, second_reporter, category="illegal_parking", lane_id="in1", text="有车堵入口"
    )
    assert (second["id"], second["merged"]) == (first["id"], True)
    # the second reporter follows the case too; another place or problem is a new case
    assert (await app.get(f"/v1/reports/{first['id']}", headers=second_reporter)).status_code == 200
    other = await report(app, second_reporter, category="illegal_parking", lane_id="out1", text="x")
    assert other["id"] != first["id"]


async def test_bad_reports_are_refused_and_nothing_is_stored(
    app: Client, redis_client: Any, city_db: asyncpg.Connection
) -> None:
    erin = await driver(app, redis_client, "13800000157")
    before = await city_db.fetchval("SELECT count(*) FROM cases")
    for body, status in (
        ({"lot_id": "NO-SUCH-LOT", "category": "other", "text": "x"}, 404),
        ({"lot_id": DEMO_LOT, "lane_id": "nope", "category": "other", "text": "x"}, 404),
        ({"lot_id": DEMO_LOT, "category": "fire", "text": "x"}, 400),
        ({"lot_id": DEMO_LOT, "category": "other", "text": ""}, 400),
        ({"category": "other", "text": "x"}, 400),
        ({"code": "forged", "category": "other", "text": "x"}, 400),
        ({"lot_id": DEMO_LOT, "category": "other", "text": "x", "extra": 1}, 400),
    ):
        got = await app.post("/v1/reports", json=body, headers=erin)
        assert got.status_code == status, (body, got.text)
        assert got.headers["content-type"].startswith("application/problem+json")
    assert await city_db.fetchval("SELECT count(*) FROM cases") == before
    # a flood from one phone: five a quarter hour, then 429
    codes = []
    for n in range(7):
        got = await app.post(
            "/v1/reports",
            json={"lot_id": DEMO_LOT, "category": "other", "text": f"问题 {n}"},
            headers=erin,
        )
        codes.append(got.status_code)
    assert codes == [201] * 5 + [429, 429]
    # another reporter's case: 404
    frank = await driver(app, redis_client, "13800000158")
    mine = (await app.get("/v1/reports", headers=erin)).json()["items"][0]["id"]
    assert (await app.get(f"/v1/reports/{mine}", headers=frank)).status_code == 404
    assert (
        await app.post(f"/v1/reports/{mine}/confirm", json={}, headers=frank)
    ).status_code == 404


async def test_the_response_time_figures_equal_those_of_the_moves_made(
    app: Client, redis_client: Any, app_settings: Settings, clock: FixedClock
) -> None:
    lot_staff = staff(app_settings, clock, Role.LOT_STAFF, DEMO_LOT)
    district = staff(app_settings, clock, Role.DISTRICT_TEAM, "ZG")
    waits = {"space_blocked": 10, "facility_damage": 45, "gate_fault": 25}
    made = {}
    for n, category in enumerate(waits):
        who = await driver(app, redis_client, f"1380000016{n}")
        made[category] = await report(app, who, category=category, text=f"问题 {category}")
    start = clock.now()
    for category, minutes in sorted(waits.items(), key=lambda kv: kv[1]):
        clock.set(start + timedelta(minutes=minutes))
        holder = district if made[category]["level"] == "middle" else lot_staff
        await move(app, holder, made[category]["id"], "accept")
    unanswered = await report(
        app, await driver(app, redis_client, "13800000169"), category="other", text="x"
    )
    city = staff(app_settings, clock, Role.CITY)
    figures = (
        await app.get(
            "/v1/city/cases/response-times",
            params={
                "from": (T0 - timedelta(hours=1)).isoformat(),
                "to": (T0 + timedelta(days=1)).isoformat(),
            },
            headers=city,
        )
    ).json()
    times = sorted(waits.values())
    assert figures["overall"]["cases"] == 4
    assert figures["overall"]["accepted"] == 3
    assert figures["overall"]["p50_minutes"] == logic.percentile(times, 0.5) == 25
    assert figures["overall"]["p90_minutes"] == 45
    assert figures["overall"]["within_target"] == pytest.approx(2 / 3)
    assert (figures["waiting"], figures["waiting_now"], figures["overdue_now"]) == (1, 1, 0)
    by_level = {g["key"]: g for g in figures["by_level"]}
    assert by_level["middle"]["p50_minutes"] == 25
    assert by_level["small"]["accepted"] == 2
    day = T0.astimezone(SHANGHAI).date().isoformat()
    assert [g["key"] for g in figures["by_day"]] == [day]
    assert figures["by_category"] == {
        "facility_damage": 1, "gate_fault": 1, "other": 1, "space_blocked": 1,
    }  # fmt: skip
    assert unanswered["state"] == "dispatched"
    # half an hour on, the unanswered case is past its accept clock; a window that
    # begins after it was received still counts it among those waiting now
    clock.advance(timedelta(minutes=30))
    later = (
        await app.get(
            "/v1/city/cases/response-times",
            params={
                "from": clock.now().isoformat(),
                "to": (clock.now() + timedelta(hours=1)).isoformat(),
            },
            headers=staff(app_settings, clock, Role.CITY),
        )
    ).json()
    assert (later["overall"]["cases"], later["waiting"]) == (0, 0)
    assert (later["waiting_now"], later["overdue_now"]) == (1, 1)
    # only the city reads them
    assert (await app.get("/v1/city/cases/response-times", headers=lot_staff)).status_code == 403


async def test_the_rules_are_read_by_staff_changed_by_operators_versioned_and_audited(
    app: Client, app_settings: Settings, clock: FixedClock, city_db: asyncpg.Connection
) -> None:
    operator = staff(app_settings, clock, Role.OPERATOR)
    current = (await app.get("/v1/case-rules", headers=operator)).json()
    assert current["version"] == 1
    rules = current["rules"]
    rules["accept_minutes"]["small"] = 15
    changed = await app.put(
        "/v1/case-rules", json={"rules": rules, "remark": "小事15分钟内签收"}, headers=operator
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    bad = {**rules, "accept_minutes": {"small": 15}}
    refused = await app.put("/v1/case-rules", json={"rules": bad, "remark": "x"}, headers=operator)
    assert refused.status_code == 400
    district = staff(app_settings, clock, Role.DISTRICT_TEAM, "ZG")
    assert (
        await app.put("/v1/case-rules", json={"rules": rules, "remark": "x"}, headers=district)
    ).status_code == 403
    audit = await city_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'case_rules.changed'"
    )
    assert audit == 1


def _jpeg_with_gps() -> bytes:
    """A small photo as a phone makes it: EXIF with a GPS position."""
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (25.0, 50.0, 0.0), "E", (114.0, 56.0, 0.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


async def test_photos_are_checked_cleaned_of_their_location_and_stored_by_content(
    app: Client,
    redis_client: Any,
    app_settings: Settings,
    clock: FixedClock,
    city_db: asyncpg.Connection,
) -> None:
    grace = await driver(app, redis_client, "13800000171")
    made = await report(app, grace, category="facility_damage", text="护栏被撞坏")
    original = _jpeg_with_gps()
    with Image.open(io.BytesIO(original)) as phone:
        assert phone.getexif().get_ifd(0x8825)  # it has a location
    jpeg = {**grace, "Content-Type": "image/jpeg"}
    added = await app.post(f"/v1/reports/{made['id']}/photos", content=original, headers=jpeg)
    assert added.status_code == 201, added.text
    ref = added.json()["ref"]
    stored = app_settings.stack_dir / "photos" / ref
    assert stored.exists()
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == ref.split("/")[1].split(".")[0]
    with Image.open(stored) as cleaned:
        assert cleaned.size == (64, 48)
        assert not cleaned.getexif()  # no EXIF at all: no location, no maker
    # the team holding it sees the photo
    holder = staff(app_settings, clock, Role.LOT_STAFF, DEMO_LOT)
    view = (await app.get(f"/v1/cases/{made['id']}", headers=holder)).json()
    assert [p["ref"] for p in view["photos"]] == [ref]
    served = await app.get(f"/v1/cases/{made['id']}/photos/{ref.split('/')[1]}", headers=holder)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.content == stored.read_bytes()

    files = {p for p in (app_settings.stack_dir / "photos").rglob("*") if p.is_file()}
    rows = await city_db.fetchval("SELECT count(*) FROM case_photos")
    for body, kind, status in (
        (b"%PDF-1.7 not a photo", "image/jpeg", 415),
        (b"GIF89a" + b"\x00" * 64, "image/gif", 415),
        (original, "text/plain", 415),
        (b"\xff\xd8\xff" + b"\x00" * (20 * 1024 * 1024), "image/jpeg", 413),
    ):
        refused = await app.post(
            f"/v1/reports/{made['id']}/photos",
            content=body,
            headers={**grace, "Content-Type": kind},
        )
        assert refused.status_code == status, (kind, refused.text[:200])
    henry = await driver(app, redis_client, "13800000172")
    elsewhere = await app.post(
        f"/v1/reports/{made['id']}/photos",
        content=original,
        headers={**henry, "Content-Type": "image/jpeg"},
    )
    assert elsewhere.status_code == 404
    assert {p for p in (app_settings.stack_dir / "photos").rglob("*") if p.is_file()} == files
    assert await city_db.fetchval("SELECT count(*) FROM case_photos") == rows
    # three photos a report at most (the same photo again is the same file, once)
    for shade in (1, 2):
        other = io.BytesIO()
        Image.new("RGB", (8, 8), (shade, shade, shade)).save(other, format="PNG")
        more = await app.post(
            f"/v1/reports/{made['id']}/photos",
            content=other.getvalue(),
            headers={**grace, "Content-Type": "image/png"},
        )
        assert more.status_code == 201, more.text
    fourth = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(fourth, format="PNG")
    too_many = await app.post(
        f"/v1/reports/{made['id']}/photos",
        content=fourth.getvalue(),
        headers={**grace, "Content-Type": "image/png"},
    )
    assert too_many.status_code == 409


async def test_a_disputed_bill_opens_a_case_which_closes_when_finance_decides(
    app: Client,
    redis_client: Any,
    app_settings: Settings,
    clock: FixedClock,
    city_db: asyncpg.Connection,
) -> None:
    ivy = await driver(app, redis_client, "13800000173")
    account = (await app.get("/v1/me", headers=ivy)).json()["id"]
    async with city_db.transaction():
        bill = await bills.open_bill(
            city_db,
            session_id="cs-test-dispute-1",
            lot_id=DEMO_LOT,
            plate="赣B15D01",
            account_id=account,
            amount_fen=1200,
            tariff_id="suizhou-zone1",
            tariff_version=1,
            quote=b"{}",
            closed_at=clock.now(),
            now=clock.now(),
        )
    assert bill is not None
    disputed = await app.post(
        f"/v1/bills/{bill.id}/dispute", json={"reason": "我只停了十分钟"}, headers=ivy
    )
    assert disputed.status_code in (200, 201), disputed.text
    notifier = cases.LocalNotifier()
    assert await clocks.watch_disputes(city_db, notifier, now=clock.now()) == {
        "opened": 1, "closed": 0,
    }  # fmt: skip
    assert await clocks.watch_disputes(city_db, notifier, now=clock.now()) == {
        "opened": 0, "closed": 0,
    }  # fmt: skip
    case = await city_db.fetchrow(
        "SELECT id, category, level, holder, lot_id, text FROM cases "
        "WHERE source = 'dispute' AND source_ref = $1",
        disputed.json()["id"],
    )
    assert case is not None
    assert (case["category"], case["level"], case["lot_id"]) == ("wrong_charge", "middle", DEMO_LOT)
    assert case["holder"] == "district_team:ZG"
    assert "我只停了十分钟" in case["text"]
    async with city_db.transaction():
        await payment_disputes.reject_dispute(
            city_db,
            disputed.json()["id"],
            by="qian.finance",
            remark="停车时长无误",
            now=clock.now(),
        )
    assert await clocks.watch_disputes(city_db, notifier, now=clock.now()) == {
        "opened": 0, "closed": 1,
    }  # fmt: skip
    state = await city_db.fetchval("SELECT state FROM cases WHERE id = $1", case["id"])
    assert state == "closed"


async def test_what_the_platform_recorded_opens_cases_and_their_resolution_closes_them(
    app_settings: Settings, clock: FixedClock, city_db: asyncpg.Connection
) -> None:
    """A payment anomaly of a bill, a device clock out of line, a gate failing three
    commands in the hour: one case each at the place; resolved causes close theirs."""
    now = clock.now()
    async with city_db.transaction():
        bill = await bills.open_bill(
            city_db, session_id="cs-test-anomaly-1", lot_id=DEMO_LOT, plate="赣B15A01",
            account_id=None, amount_fen=800, tariff_id="suizhou-zone1", tariff_version=1,
            quote=b"{}", closed_at=now, now=now,
        )  # fmt: skip
    assert bill is not None
    pan = new_id("pan", now)
    await city_db.execute(
        "INSERT INTO payment_anomalies (id, kind, dedup_key, provider, bill_id, amount_fen, "
        "expected_fen, detail, created_at) VALUES ($1, 'amount_mismatch', $1, 'wechat', $2, "
        "700, 800, 'paid 700 of 800', $3)",
        pan,
        bill.id,
        now,
    )
    await city_db.execute(
        "INSERT INTO devices (device_id, kind, lot_id, lane_id, password_hash) "
        "VALUES ('cases-gate', 'gate', $1, 'out1', 'x')",
        DEMO_LOT,
    )
    await city_db.execute(
        "INSERT INTO anomalies (id, kind, lot_id, device_id, created_at) "
        "VALUES ('device_clock_skew:cases-gate:1', 'device_clock_skew', $1, 'cases-gate', $2)",
        DEMO_LOT,
        now,
    )
    for n in range(3):
        await city_db.execute(
            "INSERT INTO anomalies (id, kind, lot_id, details, created_at) "
            "VALUES ($1, 'command_failed', $2, '{\"lane_id\": \"in1\"}', $3)",
            f"command_failed:cases-{n}",
            DEMO_LOT,
            now - timedelta(minutes=10 * n),
        )
    notifier = cases.LocalNotifier()
    assert await clocks.watch_anomalies(city_db, notifier, now=now) == {"opened": 3, "closed": 0}
    assert await clocks.watch_anomalies(city_db, notifier, now=now) == {"opened": 0, "closed": 0}
    opened = {
        r["source"]: (r["category"], r["lane_id"], r["holder"])
        for r in await city_db.fetch(
            "SELECT source, category, lane_id, holder FROM cases WHERE source <> 'report'"
        )
    }
    assert opened == {
        "payment_anomaly": ("payment_problem", None, "district_team:ZG"),
        "device_clock": ("gate_fault", "out1", "district_team:ZG"),
        "gate_failing": ("gate_fault", "in1", "district_team:ZG"),
    }
    async with city_db.transaction():
        await payment_anomalies.resolve_anomaly(
            city_db, pan, by="qian.finance", remark="差额已退", now=now
        )
    await city_db.execute(
        "UPDATE anomalies SET status = 'resolved', resolved_at = $1, resolution = 'clock set' "
        "WHERE kind = 'device_clock_skew'",
        now,
    )
    assert await clocks.watch_anomalies(city_db, notifier, now=now) == {"opened": 0, "closed": 2}
    still = await city_db.fetch("SELECT source FROM cases WHERE state <> 'closed'")
    assert [r["source"] for r in still] == ["gate_failing"]  # staff close that one


async def _verified_holder(app: Client, who: dict[str, str], operator: dict[str, str]) -> None:
    """``who`` binds PLATE and an operator approves their 行驶证 claim: the verified holder."""
    bound = await app.post("/v1/me/vehicles", json={"plate": PLATE}, headers=who)
    assert bound.status_code == 201, bound.text
    claim = await app.post(
        "/v1/me/plate-claims",
        json={"plate": PLATE, "evidence": "行驶证 360702123456", "photo_ref": "upload/xsz.jpg"},
        headers=who,
    )
    assert claim.status_code == 201, claim.text
    approved = await app.post(
        f"/v1/operator/plate-claims/{claim.json()['id']}/approve", json={}, headers=operator
    )
    assert approved.status_code == 200, approved.text


PLATE = "赣B5M321"


async def test_a_first_minor_violation_of_a_plate_is_a_reminder_and_a_repeat_is_referred(
    app: Client,
    redis_client: Any,
    app_settings: Settings,
    clock: FixedClock,
    city_db: asyncpg.Connection,
) -> None:
    holder = await driver(app, redis_client, "13800000171")
    holder_id = (await app.get("/v1/me", headers=holder)).json()["id"]
    await _verified_holder(app, holder, staff(app_settings, clock, Role.OPERATOR))
    reporter_id = (
        await app.get("/v1/me", headers=await driver(app, redis_client, "13800000172"))
    ).json()["id"]

    async def reported_and_resolved(found: str, plate: str = "赣b·5m321") -> dict[str, Any]:
        # tokens of now: the clock moves through months
        lot_staff = staff(app_settings, clock, Role.LOT_STAFF, DEMO_LOT)
        reporter = bearer(
            tokens.issue(
                app_settings.jwt_key, subject=reporter_id, role=Role.DRIVER, now=clock.now(),
                ttl=timedelta(hours=1),
            )
        )  # fmt: skip
        made = await report(
            app, reporter, category="illegal_parking", plate=plate, text="车停在消防通道"
        )
        await move(app, lot_staff, made["id"], "accept")
        # a case about a plate is resolved only with what was found on the spot
        bare = await app.post(
            f"/v1/cases/{made['id']}/resolve", json={"note": "已挪车"}, headers=lot_staff
        )
        assert bare.status_code == 400, bare.text
        assert "violation" in bare.json()["detail"]
        view = await move(app, lot_staff, made["id"], "resolve", violation=found)
        assert view["case"]["plate"] == PLATE
        return view

    first = await reported_and_resolved("minor")
    assert {k: first["violation"][k] for k in ("plate", "found", "outcome", "repeat")} == {
        "plate": PLATE, "found": "minor", "outcome": "reminder", "repeat": False,
    }  # fmt: skip
    assert first["violation"]["holder_notified"] is True
    told = await city_db.fetch(
        "SELECT recipient, kind, message FROM case_notifications WHERE case_id = $1 "
        "AND kind IN ('reminder', 'penalty_referral')",
        first["case"]["id"],
    )
    assert [(r["recipient"], r["kind"]) for r in told] == [(f"account:{holder_id}", "reminder")]
    assert "不予处罚" in told[0]["message"]
    assert first["events"][-1]["action"] == "violation"

    # not found on the spot: recorded, counts for nothing
    clock.advance(timedelta(days=10))
    nothing = await reported_and_resolved("not_found")
    assert nothing["violation"]["outcome"] == "none"

    # the same plate minor again within 12 months: referred for a penalty
    clock.advance(timedelta(days=200))
    second = await reported_and_resolved("minor", plate=PLATE)
    assert (second["violation"]["outcome"], second["violation"]["repeat"]) == ("referred", True)
    referral = await city_db.fetchval(
        "SELECT recipient FROM case_notifications WHERE case_id = $1 AND kind = 'penalty_referral'",
        second["case"]["id"],
    )
    assert referral == "department:traffic_police"

    # 12 months after the last counted one: a first violation again
    clock.advance(timedelta(days=366))
    third = await reported_and_resolved("minor")
    assert (third["violation"]["outcome"], third["violation"]["repeat"]) == ("reminder", False)
    # a serious one is referred even when first
    clock.advance(timedelta(days=400))
    serious = await reported_and_resolved("serious")
    assert (serious["violation"]["outcome"], serious["violation"]["repeat"]) == (
        "referred", False,
    )  # fmt: skip
    rows = await city_db.fetch(
        "SELECT found, outcome FROM plate_violations WHERE plate = $1 ORDER BY at", PLATE
    )
    assert [(r["found"], r["outcome"]) for r in rows] == [
        ("minor", "reminder"), ("not_found", "none"), ("minor", "referred"),
        ("minor", "reminder"), ("serious", "referred"),
    ]  # fmt: skip
    # the record is append-only
    with pytest.raises(asyncpg.PostgresError):
        await city_db.execute(
            "UPDATE plate_violations SET outcome = 'none' WHERE plate = $1", PLATE
        )


async def test_a_plate_in_a_report_is_checked(
    app: Client, redis_client: Any, app_settings: Settings, clock: FixedClock,
    city_db: asyncpg.Connection,
) -> None:  # fmt: skip
    who = await driver(app, redis_client, "13800000173")
    before = await city_db.fetchval("SELECT count(*) FROM cases")
    for body, kind in (
        ({"category": "illegal_parking", "plate": "not a plate"}, "invalid-plate"),
        ({"category": "gate_fault", "plate": PLATE}, None),
    ):
        got = await app.post(
            "/v1/reports", json={"lot_id": DEMO_LOT, "text": "x", **body}, headers=who
        )
        assert got.status_code == 400, got.text
        if kind:
            assert got.json()["type"].endswith(kind)
    assert await city_db.fetchval("SELECT count(*) FROM cases") == before
    # two plates at one place are two cases; the same plate again merges
    one = await report(app, who, category="illegal_parking", plate=PLATE, text="占道")
    other = await report(app, who, category="illegal_parking", plate="赣B00001", text="占道")
    same = await report(app, who, category="illegal_parking", plate=PLATE, text="还在")
    assert one["id"] != other["id"]
    assert (same["id"], same["merged"]) == (one["id"], True)
    # a violation is said only when resolving a case about a plate
    lot_staff = staff(app_settings, clock, Role.LOT_STAFF, DEMO_LOT)
    plain = await report(app, who, category="space_blocked", text="杂物")
    got = await app.post(
        f"/v1/cases/{plain['id']}/accept", json={"note": "x", "violation": "minor"},
        headers=lot_staff,
    )  # fmt: skip
    assert got.status_code == 400
