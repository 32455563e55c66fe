"""Which bills follow a plate an operator fixed (bills.logic.move_plate)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from parking.bills.logic import move_plate
from parking.bills.model import Bill, BillStatus, PlateNotMovable

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def a_bill(status: BillStatus, *, paid: bool = False) -> Bill:
    return Bill(
        id="b-1",
        session_id="s-1",
        lot_id="GZ-DEMO-01",
        plate="赣B12345",
        account_id=None,
        amount_fen=900,
        refunded_fen=0,
        tariff_id="t",
        tariff_version=1,
        quote=msgspec.Raw(b"{}"),
        status=status,
        provider="wechat" if paid else None,
        payment_ref="pay-1" if paid else None,
        paid_at=NOW if paid else None,
        closed_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize("status", [BillStatus.OPEN, BillStatus.DISPUTED, BillStatus.WRITTEN_OFF])
def test_an_unpaid_bill_follows_the_fixed_plate(status: BillStatus) -> None:
    move_plate(a_bill(status))


def test_a_bill_with_a_payment_in_flight_waits_for_its_outcome() -> None:
    with pytest.raises(PlateNotMovable, match="payment in flight"):
        move_plate(a_bill(BillStatus.PAYING))


@pytest.mark.parametrize("status", [BillStatus.PAID, BillStatus.REFUNDED, BillStatus.DISPUTED])
def test_a_paid_bill_never_moves_to_another_plate(status: BillStatus) -> None:
    with pytest.raises(PlateNotMovable, match="refund it through a dispute first"):
        move_plate(a_bill(status, paid=True))
