"""Operators own lots (issue 10, point 8): an operator acts on its company's lots only.

Another company's lot, or a tariff, device, session or anomaly in one, is a
404 (as if it did not exist) with a ``denied:`` line in the audit log, and
nothing changes; the same request on the operator's own lot goes through. The
``city`` role reads every lot and changes none. GZ-DEMO-01 is gz-urban's
(seeded); the "other" operator works for gz-south.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.auth.model import Role
from parking.occupancy import rebuild
from parking.seed.city import DEMO_COMPANY, DEMO_LOT
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

Client = AsyncTestClient  # type: ignore[type-arg]
OTHER_COMPANY = "gz-south"
NIGHT = {
    "id": "urban-night",
    "name": "城发 夜间",
    "currency": "CNY",
    "timezone": "Asia/Shanghai",
    "bands": [
        {
            "name": "all-day",
            "from": "00:00",
            "to": "00:00",
            "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 100}],
        }
    ],
}


def own(token_for: Callable[..., str]) -> dict[str, str]:
    return bearer(token_for(Role.OPERATOR, "op-urban", company=DEMO_COMPANY))


def other(token_for: Callable[..., str]) -> dict[str, str]:
    return bearer(token_for(Role.OPERATOR, "op-south", company=OTHER_COMPANY))


async def every_lot(api: Client, headers: dict[str, str]) -> list[str]:
    """The ids of every lot the caller lists, page after page."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        query = "/v1/operator/lots?limit=100" + (f"&cursor={cursor}" if cursor else "")
        got = await api.get(query, headers=headers)
        assert got.status_code == 200, got.text
        ids += [lot["id"] for lot in got.json()["items"]]
        cursor = got.json()["next_cursor"]
        if cursor is None:
            return ids


async def denied_lines(conn: asyncpg.Connection, action: str, target: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT actor, role, details::text AS details FROM audit_log "
        "WHERE action = $1 AND target = $2",
        f"denied:{action}",
        target,
    )


async def assert_denied(conn: asyncpg.Connection, action: str, target: str) -> None:
    [line] = await denied_lines(conn, action, target)
    assert (line["actor"], line["role"]) == ("op-south", "operator")
    assert OTHER_COMPANY in line["details"]


async def test_an_operator_cannot_change_another_companys_lot_tariff_and_can_its_own(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    path = f"/v1/operator/lots/{DEMO_LOT}/tariffs/1"
    before = await city_db.fetchval(
        "SELECT tariff_id FROM lot_tariffs WHERE lot_id = $1 AND vehicle_class = 1", DEMO_LOT
    )

    refused = await api.put(path, json={"tariff_id": "ganzhou-large"}, headers=other(token_for))
    unchanged = await city_db.fetchval(
        "SELECT tariff_id FROM lot_tariffs WHERE lot_id = $1 AND vehicle_class = 1", DEMO_LOT
    )
    done = await api.put(path, json={"tariff_id": "ganzhou-large"}, headers=own(token_for))

    assert refused.status_code == 404, refused.text
    assert unchanged == before == "suizhou-zone1"
    await assert_denied(city_db, "lot.tariff", f"lot:{DEMO_LOT}")
    assert done.status_code == 204, done.text
    assert await city_db.fetchval(
        "SELECT tariff_id FROM lot_tariffs WHERE lot_id = $1 AND vehicle_class = 1", DEMO_LOT
    ) == ("ganzhou-large")


async def test_a_companys_tariff_is_versioned_and_read_by_that_company_only(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    start = datetime.now(UTC) + timedelta(days=1)
    made = await api.post(
        "/v1/operator/tariffs",
        json={"document": NIGHT, "effective_from": start.isoformat()},
        headers=own(token_for),
    )
    assert made.status_code == 201, made.text
    version = {"document": NIGHT, "effective_from": (start + timedelta(days=1)).isoformat()}

    refused = await api.post(
        "/v1/operator/tariffs/urban-night/versions", json=version, headers=other(token_for)
    )
    unread = await api.get("/v1/operator/tariffs/urban-night/versions", headers=other(token_for))
    city_tariff = await api.post(
        "/v1/operator/tariffs/ganzhou-large/versions", json=version, headers=own(token_for)
    )
    done = await api.post(
        "/v1/operator/tariffs/urban-night/versions", json=version, headers=own(token_for)
    )

    assert (refused.status_code, unread.status_code) == (404, 404)
    await assert_denied(city_db, "tariff.version", "tariff:urban-night")
    await assert_denied(city_db, "tariff.read", "tariff:urban-night")
    # The city's tariffs price every company's lots: no company versions them.
    assert city_tariff.status_code == 404
    assert done.status_code == 201, done.text
    assert await city_db.fetchval("SELECT company_id FROM tariffs WHERE id = 'urban-night'") == (
        DEMO_COMPANY
    )
    assert await city_db.fetchval(
        "SELECT count(*) FROM tariff_versions WHERE tariff_id = 'urban-night'"
    ) == (2)


async def test_an_operator_cannot_add_or_revoke_another_companys_devices(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    gate = {"lot_id": DEMO_LOT, "lane_id": "in1", "device_id": "gz-demo-01-in1-t1"}

    refused = await api.post("/v1/operator/devices", json=gate, headers=other(token_for))
    nothing = await city_db.fetchval(
        "SELECT count(*) FROM devices WHERE device_id = 'gz-demo-01-in1-t1'"
    )
    added = await api.post("/v1/operator/devices", json=gate, headers=own(token_for))
    not_revoked = await api.post(
        "/v1/operator/devices/gz-demo-01-in1-t1/revoke", headers=other(token_for)
    )
    still_live = await city_db.fetchval(
        "SELECT revoked_at IS NULL FROM devices WHERE device_id = 'gz-demo-01-in1-t1'"
    )
    theirs = await api.get("/v1/operator/devices", headers=other(token_for))
    revoked = await api.post(
        "/v1/operator/devices/gz-demo-01-in1-t1/revoke", headers=own(token_for)
    )

    assert (refused.status_code, nothing) == (404, 0)
    await assert_denied(city_db, "device.add", f"lot:{DEMO_LOT}")
    assert added.status_code == 201, added.text
    assert not_revoked.status_code == 404
    assert still_live is True
    await assert_denied(city_db, "device.revoke", "device:gz-demo-01-in1-t1")
    assert theirs.status_code == 200
    assert "gz-demo-01-in1-t1" not in {d["device_id"] for d in theirs.json()["items"]}
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None


async def an_open_session_with_an_anomaly(conn: asyncpg.Connection) -> tuple[str, str]:
    sid, anomaly_id = "s-ten-" + uuid.uuid4().hex[:10], "missed_exit:" + uuid.uuid4().hex[:8]
    entry = datetime.now(UTC) - timedelta(hours=3)
    await sessions.record(
        conn,
        [
            SessionChange(
                id=sid, lot_id=DEMO_LOT, status=SessionStatus.OPEN, plate="赣B3T456", entry_at=entry
            )
        ],
    )
    await conn.execute(
        "INSERT INTO anomalies (id, kind, lot_id, plate, session_id, created_at) "
        "VALUES ($1, 'missed_exit', $2, '赣B3T456', $3, now())",
        anomaly_id,
        DEMO_LOT,
        sid,
    )
    return sid, anomaly_id


async def test_an_operator_cannot_see_or_decide_another_companys_anomalies_and_sessions(
    api: Client,
    token_for: Callable[..., str],
    city_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
) -> None:
    await rebuild.ensure_ready(city_db, redis_client, now=datetime.now(UTC))
    sid, anomaly_id = await an_open_session_with_an_anomaly(city_db)
    exit_at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    decision: dict[str, Any] = {
        "action": "add-missed-exit",
        "remark": "出口相机故障",
        "exit_at": exit_at,
    }
    path = f"/v1/operator/anomalies/{anomaly_id}/resolve"

    queue_other = await api.get("/v1/operator/anomalies", headers=other(token_for))
    refused = await api.post(path, json=decision, headers=other(token_for))
    state = await city_db.fetchrow(
        "SELECT s.status AS session, a.status AS anomaly FROM sessions s "
        "JOIN anomalies a ON a.session_id = s.id WHERE s.id = $1",
        sid,
    )
    voided = await api.post(
        path, json={"action": "void", "remark": "试试"}, headers=other(token_for)
    )
    queue_own = await api.get("/v1/operator/anomalies", headers=own(token_for))
    done = await api.post(path, json=decision, headers=own(token_for))

    assert anomaly_id not in {a["id"] for a in queue_other.json()["items"]}
    assert (refused.status_code, voided.status_code) == (404, 404)
    assert state is not None
    assert (state["session"], state["anomaly"]) == ("open", "open")
    lines = await denied_lines(city_db, "anomaly.resolve", f"anomaly:{anomaly_id}")
    assert [(line["actor"], line["role"]) for line in lines] == [("op-south", "operator")] * 2
    assert anomaly_id in {a["id"] for a in queue_own.json()["items"]}
    assert done.status_code == 200, done.text
    assert await city_db.fetchval("SELECT status FROM sessions WHERE id = $1", sid) == "closed"


async def test_an_operator_cannot_change_or_read_another_companys_lot(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    before = await city_db.fetchval("SELECT capacity FROM lots WHERE id = $1", DEMO_LOT)
    theirs: str = await city_db.fetchval(
        "SELECT id FROM lots WHERE company_id = $1 AND kind = 'gated' ORDER BY id LIMIT 1",
        OTHER_COMPANY,
    )

    patched = await api.patch(
        f"/v1/operator/lots/{DEMO_LOT}", json={"capacity": 3}, headers=other(token_for)
    )
    lanes = await api.get(f"/v1/operator/lots/{DEMO_LOT}/lanes", headers=other(token_for))
    lane = await api.post(
        f"/v1/operator/lots/{DEMO_LOT}/lanes",
        json={"lane_id": "in7", "direction": "in"},
        headers=other(token_for),
    )
    listed = set(await every_lot(api, other(token_for)))
    own_lanes = await api.get(f"/v1/operator/lots/{theirs}/lanes", headers=other(token_for))

    assert (patched.status_code, lanes.status_code, lane.status_code) == (404, 404, 404)
    assert await city_db.fetchval("SELECT capacity FROM lots WHERE id = $1", DEMO_LOT) == before
    await assert_denied(city_db, "lot.change", f"lot:{DEMO_LOT}")
    await assert_denied(city_db, "lanes.read", f"lot:{DEMO_LOT}")
    await assert_denied(city_db, "lane.add", f"lot:{DEMO_LOT}")
    assert DEMO_LOT not in listed
    assert theirs in listed
    assert listed == {
        r["id"]
        for r in await city_db.fetch("SELECT id FROM lots WHERE company_id = $1", OTHER_COMPANY)
    }
    assert own_lanes.status_code == 200


async def test_a_missing_lot_is_a_404_without_an_audit_line(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    got = await api.get("/v1/operator/lots/NO-SUCH-LOT/lanes", headers=other(token_for))
    assert got.status_code == 404
    assert await city_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE target = 'lot:NO-SUCH-LOT'"
    ) == (0)


async def test_the_city_reads_every_companys_lots_and_changes_none(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    city = bearer(token_for(Role.CITY, "city-ops"))
    _, anomaly_id = await an_open_session_with_an_anomaly(city_db)
    every = len(await every_lot(api, city))
    reads = [
        await api.get(f"/v1/operator/lots/{DEMO_LOT}/lanes", headers=city),
        await api.get(f"/v1/operator/lots/{DEMO_LOT}/spaces", headers=city),
        await api.get(f"/v1/operator/devices?lot_id={DEMO_LOT}", headers=city),
        await api.get("/v1/operator/tariffs/suizhou-zone1/versions", headers=city),
    ]
    queue = await api.get("/v1/operator/anomalies", headers=city)
    writes = [
        await api.patch(f"/v1/operator/lots/{DEMO_LOT}", json={"capacity": 3}, headers=city),
        await api.put(
            f"/v1/operator/lots/{DEMO_LOT}/tariffs/1",
            json={"tariff_id": "ganzhou-large"},
            headers=city,
        ),
        await api.post(
            "/v1/operator/devices", json={"lot_id": DEMO_LOT, "lane_id": "in1"}, headers=city
        ),
        await api.post(
            f"/v1/operator/anomalies/{anomaly_id}/resolve",
            json={"action": "void", "remark": "x"},
            headers=city,
        ),
    ]

    assert every == await city_db.fetchval("SELECT count(*) FROM lots") == 651
    assert [r.status_code for r in reads] == [200, 200, 200, 200]
    assert anomaly_id in {a["id"] for a in queue.json()["items"]}
    assert [w.status_code for w in writes] == [403, 403, 403, 403]
    assert await city_db.fetchval("SELECT status FROM anomalies WHERE id = $1", anomaly_id) == (
        "open"
    )


async def quoted(api: Client, headers: dict[str, str], lot_id: str, plate: str) -> Any:
    got = await api.post(
        "/v1/tariffs/quote",
        json={
            "lot_id": lot_id,
            "plate": plate,
            "entry": "2026-11-27T10:00:00+08:00",
            "exit": "2026-11-27T12:00:00+08:00",
        },
        headers=headers,
    )
    assert got.status_code == 200, got.text
    return got.json()


async def test_a_companys_exemption_is_free_at_its_lots_only_and_lifted_by_it_only(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    theirs: str = await city_db.fetchval(
        "SELECT id FROM lots WHERE company_id = $1 ORDER BY id LIMIT 1", OTHER_COMPANY
    )
    south = other(token_for)
    made = await api.post(
        "/v1/operator/exemptions/plates",
        json={"plate": "赣B8E888", "reason": "南康救护车"},
        headers=south,
    )
    kind = await api.put(
        "/v1/operator/exemptions/kinds/police", json={"reason": "公务"}, headers=south
    )

    at_theirs = await quoted(api, south, theirs, "赣B8E888")
    at_demo = await quoted(api, own(token_for), DEMO_LOT, "赣B8E888")
    police_at_demo = await quoted(api, own(token_for), DEMO_LOT, "赣A0001警")
    lifted_by_other = await api.post(
        "/v1/operator/exemptions/plates/removals",
        json={"plate": "赣B8E888"},
        headers=own(token_for),
    )

    assert (made.status_code, kind.status_code) == (200, 204)
    assert (at_theirs["total_fen"], at_theirs["reason"]) == (0, "exempt:南康救护车")
    assert at_demo["total_fen"] > 0
    assert at_demo["reason"] == "tariff"
    assert police_at_demo["total_fen"] > 0
    assert lifted_by_other.status_code == 404
    assert (await quoted(api, south, theirs, "赣B8E888"))["total_fen"] == 0
    rows = await city_db.fetch("SELECT company_id FROM plate_exemptions WHERE plate = '赣B8E888'")
    assert [r["company_id"] for r in rows] == [OTHER_COMPANY]


async def test_an_exemption_from_before_companies_stays_free_everywhere(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    await city_db.execute(
        "INSERT INTO plate_exemptions (plate, reason, created_by) VALUES ('赣B9C999', '市政', 'x')"
    )
    theirs: str = await city_db.fetchval(
        "SELECT id FROM lots WHERE company_id = $1 ORDER BY id LIMIT 1", OTHER_COMPANY
    )
    lifted = await api.post(
        "/v1/operator/exemptions/plates/removals",
        json={"plate": "赣B9C999"},
        headers=own(token_for),
    )
    assert lifted.status_code == 404
    for lot_id in (DEMO_LOT, theirs):
        assert (await quoted(api, own(token_for), lot_id, "赣B9C999"))["total_fen"] == 0


async def test_a_blacklist_entry_is_changed_and_lifted_by_the_company_that_listed_it_only(
    api: Client, token_for: Callable[..., str], city_db: asyncpg.Connection
) -> None:
    path, removals, plate = "/v1/operator/blacklist", "/v1/operator/blacklist/removals", "赣B6D666"
    listed = await api.post(
        path, json={"plate": plate, "reason": "被盗车辆"}, headers=own(token_for)
    )
    rewritten = await api.post(
        path, json={"plate": plate, "reason": "误报"}, headers=other(token_for)
    )
    lifted = await api.post(removals, json={"plate": plate}, headers=other(token_for))
    entry = await city_db.fetchrow(
        "SELECT reason, company_id FROM plate_blacklist WHERE plate = '赣B6D666'"
    )
    by_owner = await api.post(removals, json={"plate": plate}, headers=own(token_for))

    assert listed.status_code == 200, listed.text
    assert (rewritten.status_code, lifted.status_code) == (404, 404)
    assert entry is not None
    assert (entry["reason"], entry["company_id"]) == ("被盗车辆", DEMO_COMPANY)
    await assert_denied_twice(city_db, "plate:赣B6D666")
    assert by_owner.status_code == 200, by_owner.text
    assert await city_db.fetchval("SELECT count(*) FROM plate_blacklist") == 0


async def assert_denied_twice(conn: asyncpg.Connection, target: str) -> None:
    lines = await conn.fetch(
        "SELECT action, actor FROM audit_log WHERE target = $1 AND action LIKE 'denied:%' "
        "ORDER BY id",
        target,
    )
    assert [(r["action"], r["actor"]) for r in lines] == [
        ("denied:blacklist.add", "op-south"),
        ("denied:blacklist.remove", "op-south"),
    ]
