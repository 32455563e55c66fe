"""Paying in the lot before the exit: what a prepayment is worth at the exit (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parking.bills.logic import Prepayment, due_at_exit, standing
from parking.bills.model import InvalidAmount

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def test_nothing_is_due_within_the_window_of_a_paid_prepayment() -> None:
    paid = [Prepayment(500, quoted_at=minutes(0), paid_at=minutes(1))]
    # The fee rose to 600 inside the window: the lot keeps the rise.
    assert due_at_exit(600, paid, exit_at=minutes(16), window=WINDOW) == 0


def test_billing_resumes_after_the_window_less_what_was_billed() -> None:
    paid = [Prepayment(500, quoted_at=minutes(0), paid_at=minutes(1))]
    assert due_at_exit(800, paid, exit_at=minutes(16) + timedelta(seconds=1), window=WINDOW) == 300


def test_the_window_runs_from_the_payment() -> None:
    stand = standing([Prepayment(500, minutes(0), minutes(5))], at=minutes(6), window=WINDOW)
    assert stand.leave_by == minutes(20)
    assert stand.billed_fen == 500


def test_an_unpaid_prepayment_opens_no_window_but_is_still_billed() -> None:
    owed = [Prepayment(500, quoted_at=minutes(0), paid_at=None)]
    assert standing(owed, at=minutes(1), window=WINDOW).leave_by is None
    # The prepay bill stays owed on its own; the stay bill is the rest.
    assert due_at_exit(700, owed, exit_at=minutes(1), window=WINDOW) == 200


def test_a_stale_quote_paid_late_covers_the_stay_up_to_the_quote_only() -> None:
    late = [Prepayment(500, quoted_at=minutes(0), paid_at=minutes(120))]
    assert standing(late, at=minutes(121), window=WINDOW).leave_by is None
    assert due_at_exit(1500, late, exit_at=minutes(121), window=WINDOW) == 1000


def test_a_payment_after_the_exit_does_not_change_what_the_exit_bills() -> None:
    after = [Prepayment(500, quoted_at=minutes(0), paid_at=minutes(10))]
    assert due_at_exit(600, after, exit_at=minutes(5), window=WINDOW) == 100


def test_every_prepayment_must_be_paid_for_the_window() -> None:
    mixed = [
        Prepayment(500, quoted_at=minutes(0), paid_at=None),
        Prepayment(200, quoted_at=minutes(60), paid_at=minutes(61)),
    ]
    assert standing(mixed, at=minutes(62), window=WINDOW).leave_by is None
    assert due_at_exit(800, mixed, exit_at=minutes(62), window=WINDOW) == 100


def test_the_newest_paid_prepayment_opens_the_window() -> None:
    both = [
        Prepayment(500, quoted_at=minutes(0), paid_at=minutes(1)),
        Prepayment(200, quoted_at=minutes(60), paid_at=minutes(61)),
    ]
    assert standing(both, at=minutes(62), window=WINDOW).leave_by == minutes(76)
    assert due_at_exit(900, both, exit_at=minutes(70), window=WINDOW) == 0


def test_no_prepayment_bills_the_whole_stay() -> None:
    assert due_at_exit(650, [], exit_at=minutes(30), window=WINDOW) == 650


def test_a_negative_fee_is_refused() -> None:
    with pytest.raises(InvalidAmount):
        due_at_exit(-1, [], exit_at=minutes(1), window=WINDOW)


prepayments = st.lists(
    st.builds(
        Prepayment,
        st.integers(1, 10_000),
        st.integers(0, 600).map(minutes),
        st.one_of(st.none(), st.integers(0, 700).map(minutes)),
    ),
    max_size=4,
)


@given(prepayments, st.integers(0, 50_000), st.integers(0, 800).map(minutes))
def test_the_exit_never_bills_more_than_the_stay_less_the_prepayments(
    paid: list[Prepayment], total: int, exit_at: datetime
) -> None:
    due = due_at_exit(total, paid, exit_at=exit_at, window=WINDOW)
    assert 0 <= due <= max(0, total - sum(p.amount_fen for p in paid))


@given(prepayments, st.integers(0, 50_000), st.integers(0, 800).map(minutes))
def test_outside_any_window_the_bills_add_up_to_the_stay(
    paid: list[Prepayment], total: int, exit_at: datetime
) -> None:
    stand = standing(paid, at=exit_at, window=WINDOW)
    due = due_at_exit(total, paid, exit_at=exit_at, window=WINDOW)
    if stand.leave_by is None or exit_at > stand.leave_by:
        assert due + stand.billed_fen == max(total, stand.billed_fen)


def test_an_unpaid_offer_subtracts_nothing_at_the_exit_and_opens_no_window() -> None:
    offer = [Prepayment(500, quoted_at=minutes(0), paid_at=None, offer=True)]
    stand = standing(offer, at=minutes(5), window=WINDOW)
    assert (stand.billed_fen, stand.settled_fen, stand.leave_by) == (500, 0, None)
    assert due_at_exit(700, offer, exit_at=minutes(5), window=WINDOW) == 700


def test_a_paid_prepayment_beside_an_offer_subtracts_only_what_was_paid() -> None:
    both = [
        Prepayment(500, quoted_at=minutes(0), paid_at=minutes(1)),
        Prepayment(200, quoted_at=minutes(40), paid_at=None, offer=True),
    ]
    assert standing(both, at=minutes(45), window=WINDOW).leave_by is None
    assert due_at_exit(900, both, exit_at=minutes(45), window=WINDOW) == 400
