"""The reconciler's small rules: when a day is due, the fee rates and the time it reads."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from parking import config
from parking.reconciliation.daily import due_day


def test_yesterday_is_due_from_the_configured_time_in_shanghai() -> None:
    # 01:59 UTC is 09:59 in Shanghai; 02:00 UTC is 10:00
    assert due_day(datetime(2026, 12, 4, 1, 59, tzinfo=UTC), (10, 0)) is None
    assert due_day(datetime(2026, 12, 4, 2, 0, tzinfo=UTC), (10, 0)) == date(2026, 12, 3)
    # 17:30 UTC on the 3rd is already 01:30 on the 4th in Shanghai
    assert due_day(datetime(2026, 12, 3, 17, 30, tzinfo=UTC), (1, 0)) == date(2026, 12, 3)


def test_fee_rates_and_the_time_are_read_from_their_variables() -> None:
    settings = config.load(
        {"PARKING_FEE_RATES": "wechat=0.55%, alipay=0.6", "PARKING_RECONCILE_AT": "09:30"}
    )
    assert settings.fee_rates == (("wechat", 5500), ("alipay", 6000))
    assert settings.fee_rate_ppm("alipay") == 6000
    assert settings.reconcile_at == (9, 30)
    with pytest.raises(config.ConfigError, match="no fee rate for 'unionpay'"):
        settings.fee_rate_ppm("unionpay")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PARKING_FEE_RATES", "wechat"),
        ("PARKING_FEE_RATES", "wechat=abc%"),
        ("PARKING_FEE_RATES", "wechat=0.123456%"),
        ("PARKING_RECONCILE_AT", "10"),
        ("PARKING_RECONCILE_AT", "25:00"),
    ],
)
def test_a_value_the_platform_cannot_use_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load({name: value})
