from __future__ import annotations

import asyncpg

from parking.seed import city, service


async def _fingerprint(conn: asyncpg.Connection) -> dict[str, str]:
    out = {}
    for table, key in (
        ("districts", "code"),
        ("operator_companies", "id"),
        ("lots", "id"),
        ("lanes", "lot_id, lane_id"),
        ("spaces", "lot_id, space_id"),
        ("lot_tariffs", "lot_id, vehicle_class"),
        ("tariff_versions", "tariff_id, version"),
    ):
        out[table] = await conn.fetchval(
            f"SELECT md5(string_agg(t::text, '|' ORDER BY {key})) FROM {table} t"
        )
    return out


async def test_seed_builds_ganzhou_with_651_lots_and_112000_spaces(
    db: asyncpg.Connection,
) -> None:
    counts = await service.seed(db, city_seed=20261127, progress=lambda _: None)
    assert counts["lots"] == 651
    assert counts["spaces"] == 112_000
    assert counts["capacity"] == 112_000
    per_lot = await db.fetch(
        "SELECT l.id FROM lots l JOIN spaces s ON s.lot_id = l.id "
        "GROUP BY l.id, l.capacity HAVING count(*) <> l.capacity"
    )
    assert per_lot == []


async def test_seed_rerun_changes_nothing(db: asyncpg.Connection) -> None:
    await service.seed(db, city_seed=20261127, progress=lambda _: None)
    before = await _fingerprint(db)
    await service.seed(db, city_seed=20261127, progress=lambda _: None)
    assert await _fingerprint(db) == before


async def test_demo_lot_is_gated_with_in1_out1_and_the_suizhou_tariff(
    db: asyncpg.Connection,
) -> None:
    await service.seed(db, city_seed=20261127, progress=lambda _: None)
    lot = await db.fetchrow("SELECT * FROM lots WHERE id = 'GZ-DEMO-01'")
    assert lot is not None
    assert (lot["kind"], lot["capacity"], lot["district_code"]) == ("gated", 200, "ZG")
    lanes = await db.fetch(
        "SELECT lane_id, direction FROM lanes WHERE lot_id = 'GZ-DEMO-01' ORDER BY lane_id"
    )
    assert [(r["lane_id"], r["direction"]) for r in lanes] == [("in1", "in"), ("out1", "out")]
    tariff = await db.fetchval(
        "SELECT tariff_id FROM lot_tariffs WHERE lot_id = 'GZ-DEMO-01' AND vehicle_class = 1"
    )
    assert tariff == "suizhou-zone1"


async def test_city_covers_every_district_inside_ganzhou(db: asyncpg.Connection) -> None:
    await service.seed(db, city_seed=20261127, progress=lambda _: None)
    row = await db.fetchrow(
        "SELECT min(latitude) lat0, max(latitude) lat1, min(longitude) lon0, max(longitude) lon1,"
        " count(DISTINCT district_code) districts,"
        " count(*) FILTER (WHERE kind = 'gated') gated,"
        " count(*) FILTER (WHERE kind = 'on_street') street FROM lots"
    )
    assert row is not None
    # Ganzhou spans roughly 24.5-27.2 N and 113.9-116.6 E.
    assert row["lat0"] > 24.4
    assert row["lat1"] < 27.3
    assert row["lon0"] > 113.8
    assert row["lon1"] < 116.7
    assert row["districts"] == len(city.DISTRICTS)
    assert row["gated"] > 300
    assert row["street"] > 150
    names = {r["name"] for r in await db.fetch("SELECT name FROM districts")}
    assert {"章贡区", "南康区", "赣县区", "经开区", "蓉江新区"} <= names
    gated_without_lanes = await db.fetchval(
        "SELECT count(*) FROM lots l WHERE kind = 'gated' AND NOT EXISTS "
        "(SELECT 1 FROM lanes WHERE lot_id = l.id AND direction = 'in') "
        "OR kind = 'gated' AND NOT EXISTS "
        "(SELECT 1 FROM lanes WHERE lot_id = l.id AND direction = 'out')"
    )
    assert gated_without_lanes == 0


def test_the_same_seed_gives_the_same_city() -> None:
    assert city.build(7) == city.build(7)
    assert city.build(7) != city.build(8)


async def test_the_citys_lots_belong_to_three_companies_the_demo_lot_to_gz_urban(
    db: asyncpg.Connection,
) -> None:
    await service.seed(db, city_seed=20261127, progress=lambda _: None)
    owners = {
        r["company_id"]: r["lots"]
        for r in await db.fetch("SELECT company_id, count(*) AS lots FROM lots GROUP BY 1")
    }
    assert set(owners) == {c.id for c in city.COMPANIES}
    assert min(owners.values()) > 50
    demo = await db.fetchval("SELECT company_id FROM lots WHERE id = 'GZ-DEMO-01'")
    assert demo == city.DEMO_COMPANY == "gz-urban"
    # The seeded (city) tariffs belong to no company.
    assert await db.fetchval("SELECT count(*) FROM tariffs WHERE company_id IS NOT NULL") == 0


async def test_a_reseed_gives_an_unowned_lot_its_owner_and_moves_no_owned_lot(
    db: asyncpg.Connection,
) -> None:
    await service.seed(db, city_seed=20261127, progress=lambda _: None)
    await db.execute("UPDATE lots SET company_id = NULL WHERE id = 'GZ-DEMO-01'")
    await db.execute("UPDATE lots SET company_id = 'gz-county' WHERE id = 'GZ-JK-0001'")
    await service.seed(db, city_seed=20261127, progress=lambda _: None)
    assert await db.fetchval("SELECT company_id FROM lots WHERE id = 'GZ-DEMO-01'") == "gz-urban"
    assert await db.fetchval("SELECT company_id FROM lots WHERE id = 'GZ-JK-0001'") == "gz-county"
