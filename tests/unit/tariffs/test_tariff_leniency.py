"""Published tariffs are written by people: forms the contract allows or implies."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from parking.tariffs import decode_tariff, quote

SH = ZoneInfo("Asia/Shanghai")


def at(hh: int, mm: int = 0, day: int = 27) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=SH)


def doc(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "Shanghai-Zone-A",
        "name": "上海 一类",
        "currency": "CNY",
        "bands": [
            {
                "name": "day",
                "from": "08:00",
                "to": "24:00",
                "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 1000}],
            },
            {"name": "night", "from": "00:00", "to": "08:00", "flat": 500},
        ],
    }
    base.update(fields)
    return msgspec.json.encode(base)


def test_a_band_may_end_at_2400_meaning_midnight() -> None:
    tariff = decode_tariff(doc())
    result = quote(tariff, at(22), at(1, 0, day=28), nev=False)
    assert [c.band for c in result.charges] == ["day", "day", "night"]
    assert result.total_fen == 2500


def test_grace_without_deductible_is_not_deductible() -> None:
    tariff = decode_tariff(doc(grace={"minutes": 15}))
    assert quote(tariff, at(10), at(10, 15), nev=False).total_fen == 0
    # Billed from entry, not from entry + 15 min.
    assert quote(tariff, at(10), at(11, 5), nev=False).total_fen == 2000


def test_a_discount_only_nev_policy_keeps_the_ordinary_grace() -> None:
    tariff = decode_tariff(doc(grace={"minutes": 15, "deductible": True}, nev={"percent": 50}))
    assert quote(tariff, at(10), at(10, 15), nev=True).total_fen == 0
    # 10:15 to 11:20 billed: 2 started hours = 2000, half for an NEV.
    assert quote(tariff, at(10), at(11, 20), nev=True).total_fen == 1000
    assert quote(tariff, at(10), at(11, 20), nev=False).total_fen == 2000


def test_an_nev_grace_without_percent_is_full_price_after_the_grace() -> None:
    tariff = decode_tariff(doc(nev={"grace_minutes": 120}))
    assert quote(tariff, at(10), at(12), nev=True).total_fen == 0
    assert quote(tariff, at(10), at(12, 1), nev=True).total_fen == 3000
