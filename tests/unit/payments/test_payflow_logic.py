"""The payment flow's pure decisions: idempotency keys, settling, the sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from parking.payments import logic
from parking.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    BillShare,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotencyRecord,
    IdempotencyState,
    Proceed,
    Replay,
)
from parking.payments.port import OrderState, OrderStatus

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def attempt(**changes: object) -> Attempt:
    base = Attempt(
        id="pa-01JD3K0000000000000000000A",
        provider="wechat",
        kind=AttemptKind.NATIVE,
        out_trade_no="CB01JD3K0000000000000000000A",
        amount_fen=500,
        status=AttemptStatus.PENDING,
        payer_account_id="acc-1",
        payer_plate=None,
        idempotency_scope="account:acc-1",
        idempotency_key="k",
        code_url="weixin://x",
        ordered_at=NOW,
        transaction_id=None,
        provider_state="NOTPAY",
        failure="",
        recheck=False,
        created_at=NOW,
        expires_at=NOW + logic.ORDER_TTL,
        settled_at=None,
        updated_at=NOW,
        bills=(BillShare(bill_id="b-1", amount_fen=500),),
    )
    return msgspec.structs.replace(base, **changes)


def status(state: OrderState, word: str = "X") -> OrderStatus:
    return OrderStatus(
        provider="wechat",
        out_trade_no="CB01JD3K0000000000000000000A",
        state=state,
        provider_state=word,
        amount_fen=500,
    )


def key(state: IdempotencyState, *, digest: str = "a" * 64, age_s: float = 0) -> IdempotencyRecord:
    done = state is IdempotencyState.DONE
    return IdempotencyRecord(
        scope="account:acc-1",
        key="k",
        endpoint="POST /v1/bills/pay",
        request_hash=digest,
        state=state,
        response_status=201 if done else None,
        response_body=b"{}" if done else None,
        created_at=NOW - timedelta(seconds=age_s),
        locked_at=NOW - timedelta(seconds=age_s),
    )


def test_order_numbers_fit_every_providers_rule_and_follow_the_id() -> None:
    number = logic.out_trade_no("pa-01JD3K0000000000000000000A")
    assert number == "CB01JD3K0000000000000000000A"
    assert len(number) <= 32
    assert number.isalnum()
    assert logic.out_refund_no("rr-01JD3K0000000000000000000A").startswith("RF")


def test_a_done_key_with_the_same_body_replays_its_response() -> None:
    decision = logic.claim_decision(key(IdempotencyState.DONE), request_hash="a" * 64, now=NOW)
    assert isinstance(decision, Replay)
    assert decision.response.status == 201


def test_a_key_with_another_body_is_refused_even_while_in_flight() -> None:
    for state in IdempotencyState:
        with pytest.raises(IdempotencyKeyReused):
            logic.claim_decision(key(state), request_hash="b" * 64, now=NOW)


def test_an_in_flight_key_is_a_conflict_until_its_lease_runs_out() -> None:
    with pytest.raises(IdempotencyKeyInFlight):
        logic.claim_decision(
            key(IdempotencyState.IN_FLIGHT, age_s=5), request_hash="a" * 64, now=NOW
        )
    stale = key(IdempotencyState.IN_FLIGHT, age_s=logic.IDEMPOTENCY_LEASE.total_seconds() + 1)
    assert isinstance(logic.claim_decision(stale, request_hash="a" * 64, now=NOW), Proceed)


def test_request_hash_ignores_key_order_but_not_values() -> None:
    class Body(msgspec.Struct):
        bill_ids: list[str]
        provider: str

    a = logic.request_hash("POST /x", Body(bill_ids=["b-1"], provider="wechat"))
    b = logic.request_hash("POST /x", Body(provider="wechat", bill_ids=["b-1"]))
    c = logic.request_hash("POST /x", Body(bill_ids=["b-2"], provider="wechat"))
    assert a == b != c


def test_a_native_order_holds_its_bills_until_it_expires_a_deduction_until_its_result() -> None:
    native = attempt()
    assert logic.blocking_attempt("b-1", [native], NOW) == native
    assert logic.blocking_attempt("b-1", [native], native.expires_at) is None
    deduction = attempt(kind=AttemptKind.CONTACTLESS)
    assert logic.blocking_attempt("b-1", [deduction], NOW + timedelta(days=2)) == deduction
    assert logic.blocking_attempt("b-2", [native], NOW) is None


def test_wrong_amounts_never_settle_and_late_money_is_flagged() -> None:
    assert logic.settlement(attempt(), amount_fen=1).mismatch
    assert not logic.settlement(attempt(), amount_fen=500).late
    assert logic.settlement(
        attempt(status=AttemptStatus.EXPIRED, settled_at=NOW), amount_fen=500
    ).late
    repaid = attempt(kind=AttemptKind.CONTACTLESS, status=AttemptStatus.FAILED, settled_at=NOW)
    assert not logic.settlement(repaid, amount_fen=500).late


@pytest.mark.parametrize(
    ("state", "at", "expected"),
    [
        (OrderState.PAID, NOW, logic.Settle),
        (OrderState.REFUNDED, NOW, logic.Settle),
        (OrderState.CLOSED, NOW, logic.Expire),
        (OrderState.PENDING, NOW, logic.Leave),
        (OrderState.PENDING, NOW + timedelta(hours=1), logic.Expire),
        (OrderState.FAILED, NOW, logic.Expire),
    ],
)
def test_sweeping_a_native_order(state: OrderState, at: datetime, expected: type) -> None:
    assert isinstance(logic.sweep_decision(attempt(), status(state), at), expected)


def test_sweeping_a_never_created_order_waits_for_its_deadline() -> None:
    assert isinstance(logic.sweep_decision(attempt(), None, NOW), logic.Leave)
    late = logic.sweep_decision(attempt(), None, NOW + timedelta(hours=1))
    assert isinstance(late, logic.Expire)
    assert not late.close_first


def test_sweeping_a_deduction_fails_it_only_on_the_providers_word() -> None:
    deduction = attempt(kind=AttemptKind.CONTACTLESS)
    later = NOW + timedelta(days=1)
    assert isinstance(
        logic.sweep_decision(deduction, status(OrderState.ACCEPTED), later), logic.Leave
    )
    assert isinstance(logic.sweep_decision(deduction, status(OrderState.FAILED), NOW), logic.Fail)
