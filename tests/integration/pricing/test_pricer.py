"""Pricing stays at seeded lots: tariff versions, classes, exemptions, passes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from parking.auth.model import Principal, Role
from parking.pricing import Pricer, PricingError
from parking.pricing import service as pricing
from parking.pricing.service import TariffConflict

SH = ZoneInfo("Asia/Shanghai")
OPERATOR = Principal(subject="alice", role=Role.OPERATOR, token_id="t")


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=SH)


@pytest.fixture
async def city(city_db: asyncpg.Connection) -> asyncpg.Connection:
    return city_db


@pytest.mark.parametrize(
    ("entry", "exit", "fee"),
    [
        (at(27, 10), at(27, 10, 30), 0),
        (at(27, 10), at(27, 10, 31), 300),
        (at(27, 10), at(27, 11, 1), 500),
        (at(27, 10), at(27, 13), 700),
        (at(27, 8), at(27, 18), 2000),
    ],
)
async def test_demo_lot_prices_a_small_car_by_the_suizhou_example(
    city: asyncpg.Connection, entry: datetime, exit: datetime, fee: int
) -> None:
    pricer = await Pricer.load(city)
    priced = pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=entry, exit=exit)
    assert priced.fee_fen == fee
    assert (priced.tariff_id, priced.tariff_version, priced.vehicle_class) == (
        "suizhou-zone1",
        1,
        1,
    )
    assert priced.reason == "tariff"


async def test_a_new_energy_plate_gets_the_nev_grace_and_half_price(
    city: asyncpg.Connection,
) -> None:
    pricer = await Pricer.load(city)
    within = pricer.price(lot_id="GZ-DEMO-01", plate="赣BD12345", entry=at(27, 10), exit=at(27, 12))
    assert within.fee_fen == 0
    assert within.quote is not None
    assert within.quote.within_grace
    after = pricer.price(lot_id="GZ-DEMO-01", plate="赣BD12345", entry=at(27, 10), exit=at(27, 13))
    assert after.fee_fen == 700 // 2


async def test_an_anpr_misread_is_normalised_before_pricing(city: asyncpg.Connection) -> None:
    pricer = await Pricer.load(city)
    messy = pricer.price(lot_id="GZ-DEMO-01", plate="赣b·12 345", entry=at(27, 10), exit=at(27, 13))
    assert messy.fee_fen == 700


async def test_an_override_prices_a_blue_plated_van_by_the_large_tariff(
    city: asyncpg.Connection,
) -> None:
    await city.execute(
        "INSERT INTO vehicle_class_overrides (plate, vehicle_class, reason, set_by) "
        "VALUES ('赣B12345', 2, '9-seat van', 'alice')"
    )
    pricer = await Pricer.load(city)
    priced = pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=at(27, 10), exit=at(27, 13))
    assert (priced.tariff_id, priced.vehicle_class) == ("ganzhou-large", 2)
    assert priced.fee_fen == 1000 + 2 * 400


async def test_whitelisted_plates_and_exempt_kinds_park_free_with_the_reason(
    city: asyncpg.Connection,
) -> None:
    await city.execute(
        "INSERT INTO plate_exemptions (plate, reason, created_by) "
        "VALUES ('赣B99999', 'ambulance', 'alice')"
    )
    await city.execute(
        "INSERT INTO exempt_plate_kinds (kind, reason, created_by) "
        "VALUES ('police', 'police on duty', 'alice')"
    )
    pricer = await Pricer.load(city)
    white = pricer.price(lot_id="GZ-DEMO-01", plate="赣B99999", entry=at(27, 8), exit=at(27, 18))
    assert (white.fee_fen, white.reason) == (0, "exempt:ambulance")
    police = pricer.price(lot_id="GZ-DEMO-01", plate="赣A0001警", entry=at(27, 8), exit=at(27, 18))
    assert (police.fee_fen, police.reason) == (0, "exempt:police on duty")
    ordinary = pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=at(27, 8), exit=at(27, 18))
    assert ordinary.fee_fen == 2000


async def test_a_monthly_pass_covers_its_lot_group_and_the_tail_after_it_is_priced(
    city: asyncpg.Connection,
) -> None:
    await city.execute("INSERT INTO lot_groups (id, name) VALUES ('demo', '演示')")
    await city.execute("INSERT INTO lot_group_members VALUES ('demo', 'GZ-DEMO-01')")
    await city.execute(
        "INSERT INTO monthly_passes (id, plate, group_id, valid_from, valid_until, created_by) "
        "VALUES ('mp-1', '赣B12345', 'demo', $1, $2, 'alice')",
        at(1, 0),
        at(27, 12),
    )
    pricer = await Pricer.load(city)
    covered = pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=at(27, 8), exit=at(27, 11))
    assert (covered.fee_fen, covered.reason) == (0, "monthly_pass:mp-1")
    tail = pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=at(27, 8), exit=at(27, 15))
    # 12:00 to 15:00 priced as a stay: 300 + 2 x 200.
    assert (tail.fee_fen, tail.reason) == (700, "monthly_pass_tail:mp-1")
    other_lot = await city.fetchval(
        "SELECT lot_id FROM lot_tariffs WHERE tariff_id = 'ganzhou-core-gated' LIMIT 1"
    )
    elsewhere = pricer.price(lot_id=other_lot, plate="赣B12345", entry=at(27, 8), exit=at(27, 11))
    assert elsewhere.reason == "tariff"
    assert elsewhere.fee_fen > 0


async def test_a_stay_is_priced_by_the_version_in_force_at_its_entry(
    city: asyncpg.Connection,
) -> None:
    document = (
        b'{"id": "suizhou-zone1", "name": "v2", "currency": "CNY", "timezone": "Asia/Shanghai",'
        b' "bands": [{"name": "all", "from": "00:00", "to": "00:00",'
        b' "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 1000}]}]}'
    )
    now = at(27, 9)
    async with city.transaction():
        view = await pricing.add_version(
            city,
            tariff_id="suizhou-zone1",
            document=document,
            effective_from=at(27, 12),
            by=OPERATOR,
            now=now,
        )
    assert view.version == 2
    pricer = await Pricer.load(city)
    before = pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=at(27, 11), exit=at(27, 14))
    after = pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=at(27, 12), exit=at(27, 14))
    assert (before.tariff_version, before.fee_fen) == (1, 300 + 2 * 200)
    assert (after.tariff_version, after.fee_fen) == (2, 2000)
    audit = await city.fetchrow("SELECT actor, action, target FROM audit_log")
    assert dict(audit) == {
        "actor": "alice",
        "action": "tariff.version",
        "target": "tariff:suizhou-zone1",
    }


async def test_a_version_cannot_take_effect_in_the_past(city: asyncpg.Connection) -> None:
    document = (
        await city.fetchval(
            "SELECT document::text FROM tariff_versions WHERE tariff_id = 'suizhou-zone1'"
        )
    ).encode()
    with pytest.raises(TariffConflict, match="past"):
        await pricing.add_version(
            city,
            tariff_id="suizhou-zone1",
            document=document,
            effective_from=at(27, 8),
            by=OPERATOR,
            now=at(27, 9),
        )


async def test_exit_not_after_entry_and_unknown_lots_are_errors(city: asyncpg.Connection) -> None:
    pricer = await Pricer.load(city)
    with pytest.raises(PricingError, match="not after entry"):
        pricer.price(lot_id="GZ-DEMO-01", plate="赣B12345", entry=at(27, 10), exit=at(27, 10))
    with pytest.raises(PricingError, match="no tariff"):
        pricer.price(lot_id="GZ-NOPE", plate="赣B12345", entry=at(27, 10), exit=at(27, 11))
