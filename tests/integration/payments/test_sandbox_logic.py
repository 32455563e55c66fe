"""The sandbox provider's pure decisions (no process, no sockets)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counterparts.payments import logic
from parking.payments.wire import BEIJING


def test_retry_schedule_is_wechats_fifteen_retries_over_about_a_day() -> None:
    delays = [logic.retry_delay(n, 1.0) for n in range(1, 16)]
    assert delays[:4] == [15, 15, 30, 180]
    assert timedelta(seconds=sum(d for d in delays if d is not None)) == timedelta(
        hours=24, minutes=4
    )
    assert logic.retry_delay(16, 1.0) is None


def test_retry_schedule_scales() -> None:
    assert logic.retry_delay(1, 0.01) == pytest.approx(0.15)


def test_bill_is_ready_at_ten_beijing_time_the_next_day() -> None:
    day = date(2024, 5, 1)
    ten = datetime(2024, 5, 2, 10, 0, tzinfo=BEIJING)
    assert not logic.bill_ready(day, ten - timedelta(seconds=1))
    assert logic.bill_ready(day, ten)


@given(st.integers(min_value=1, max_value=10_000_000))
def test_fee_is_whole_fen_and_a_refund_gives_it_back(amount: int) -> None:
    fee = logic.fee_milli_fen(amount)
    assert fee % 1000 == 0
    assert abs(fee - amount * 6) <= 500
    assert logic.fee_milli_fen(-amount) == -fee
