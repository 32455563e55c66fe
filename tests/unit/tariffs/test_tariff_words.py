"""A tariff in words, as the driver's page shows it under the lot's name."""

from __future__ import annotations

import msgspec

from parking.tariffs.decode import decode_tariff
from parking.tariffs.words import describe, yuan


def _tariff(document: dict[str, object]) -> list[str]:
    return describe(decode_tariff(msgspec.json.encode(document)))


def test_the_contract_example_reads_as_a_sign_would() -> None:
    assert _tariff(
        {
            "id": "suizhou-zone1",
            "name": "随州 一类区域 路内",
            "currency": "CNY",
            "grace": {"minutes": 30, "deductible": False},
            "bands": [
                {
                    "name": "全天",
                    "from": "00:00",
                    "to": "00:00",
                    "tiers": [
                        {"after_minutes": 0, "unit_minutes": 60, "unit_fen": 300},
                        {"after_minutes": 60, "unit_minutes": 60, "unit_fen": 200},
                    ],
                }
            ],
            "cap": {"fen": 2000, "cycle": "rolling_24h"},
            "nev": {"grace_minutes": 120, "grace_deductible": False, "percent": 50},
        }
    ) == [
        "免费停车30分钟，超时从入场起计费",
        "全天：前1小时每小时3元，之后每小时2元",
        "每24小时最高收费20元",
        "新能源车：免费停车2小时，按5折收费",
    ]


def test_day_and_night_bands_three_tiers_a_flat_night_and_a_daily_cap() -> None:
    assert _tariff(
        {
            "id": "gz-core",
            "name": "核心区",
            "currency": "CNY",
            "grace": {"minutes": 15, "deductible": True},
            "bands": [
                {
                    "name": "白天",
                    "from": "08:00",
                    "to": "20:00",
                    "tiers": [
                        {"after_minutes": 0, "unit_minutes": 30, "unit_fen": 150},
                        {"after_minutes": 120, "unit_minutes": 30, "unit_fen": 100},
                        {"after_minutes": 240, "unit_minutes": 60, "unit_fen": 150},
                    ],
                    "partial_unit": "free",
                    "segment_cap_fen": 1500,
                },
                {"name": "夜间", "from": "20:00", "to": "08:00", "flat": 500},
            ],
            "cap": {"fen": 3000, "cycle": "daily", "reset_at": "06:00"},
        }
    ) == [
        "免费停车15分钟，超时后扣除免费时长计费",
        "白天（08:00–20:00）：前2小时每30分钟1.5元，2小时至4小时每30分钟1元，"
        "之后每小时1.5元（不足一个计费单位不收费），本时段最高15元",
        "夜间（20:00–08:00）：每次5元",
        "每日（06:00起）最高收费30元",
    ]


def test_yuan_drops_what_is_zero() -> None:
    assert [yuan(f) for f in (0, 5, 50, 150, 300, 1234)] == [
        "0",
        "0.05",
        "0.5",
        "1.5",
        "3",
        "12.34",
    ]
