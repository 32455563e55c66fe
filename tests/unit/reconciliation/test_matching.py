"""Matching a day, pure (reconciliation/logic.py): the discrepancy set is exactly what
was done to the provider's statement."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from parking.reconciliation import logic
from parking.reconciliation.model import HOLDING_DAYS, DiscrepancyKind, Line, Ours

DAY = date(2026, 12, 2)
RATE = 6000  # 0.60 %
AT = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def ours(kind: str, key: str, amount: int, *, on: date = DAY, succeeded: bool = True) -> Ours:
    return Ours(
        kind=kind,  # type: ignore[arg-type]
        match_key=key,
        out_trade_no=key if kind == "payment" else f"o{key}",
        out_refund_no=key if kind == "refund" else None,
        record_id=f"rec-{key}",
        succeeded=succeeded,
        status=("paid" if kind == "payment" else "refunded") if succeeded else "expired",
        amount_fen=amount,
        business_date=on if succeeded else None,
    )


def line_of(mine: Ours, line_no: int, **changes: object) -> Line:
    sign = 1 if mine.kind == "payment" else -1
    fields: dict[str, object] = {
        "line_no": line_no,
        "kind": mine.kind,
        "match_key": mine.match_key,
        "out_trade_no": mine.out_trade_no,
        "out_refund_no": mine.out_refund_no,
        "transaction_id": f"tx-{mine.match_key}",
        "refund_id": None,
        "state": "SUCCESS",
        "succeeded": True,
        "amount_fen": mine.amount_fen,
        "fee_milli_fen": sign * logic.expected_fee_fen(mine.amount_fen, RATE) * 1000,
        "trade_time": AT,
        "line": f"`line {line_no}",
    }
    fields.update(changes)
    if "amount_fen" in changes and "fee_milli_fen" not in changes:
        # the provider's fee is on its own amount
        fields["fee_milli_fen"] = (
            sign * logic.expected_fee_fen(int(fields["amount_fen"]), RATE) * 1000
        )  # type: ignore[call-overload]
    return Line(**fields)  # type: ignore[arg-type]


def run(
    lines: list[Line],
    mine: list[Ours],
    *,
    day: date = DAY,
    pooled: set[tuple[str, str]] | None = None,
):  # type: ignore[no-untyped-def]
    return logic.match(
        day,
        sorted(lines, key=lambda x: (x.kind, x.match_key, x.line_no)),
        sorted(mine, key=lambda x: (x.kind, x.match_key)),
        fee_rate_ppm=RATE,
        pooled=pooled or set(),
    )


def kinds(outcome) -> set[tuple[DiscrepancyKind, str]]:  # type: ignore[no-untyped-def]
    return {(f.kind, f.match_key) for f in outcome.found}


def test_a_faithful_statement_matches_everything_and_totals_the_day() -> None:
    mine = [ours("payment", "P1", 1000), ours("payment", "P2", 2500), ours("refund", "R1", 300)]
    outcome = run([line_of(m, n) for n, m in enumerate(mine, start=2)], mine)
    assert outcome.found == []
    assert outcome.waiting == []
    totals = outcome.totals
    assert (totals.lines, totals.matched, totals.refunds) == (3, 3, 1)
    assert totals.matched_fen == 1000 + 2500 - 300
    # 6 + 15 fen of fees, 2 fen given back with the refund
    assert totals.fees_fen == 6 + 15 - 2


def test_ours_not_on_the_statement_waits_then_is_missing_at_provider() -> None:
    late = ours("payment", "P9", 800, on=DAY)
    assert run([], [late]).found == []
    assert [w.match_key for w in run([], [late]).waiting] == ["P9"]
    after = run([], [late], day=DAY + timedelta(days=HOLDING_DAYS))
    assert kinds(after) == {(DiscrepancyKind.MISSING_AT_PROVIDER, "P9")}
    assert after.found[0].business_date == DAY
    # listed on the next day's statement: it clears from the pool, no discrepancy
    next_day = run(
        [line_of(late, 2)], [late], day=DAY + timedelta(days=1), pooled={("payment", "P9")}
    )
    assert next_day.found == []
    assert [w.match_key for w in next_day.cleared] == ["P9"]
    assert next_day.totals.matched_fen == 800


def test_ours_of_a_reconciled_day_listed_again_is_a_duplicate_not_paid_twice() -> None:
    earlier = ours("payment", "P4", 1200, on=DAY - timedelta(days=1))
    outcome = logic.match(
        DAY, [line_of(earlier, 2)], [earlier], fee_rate_ppm=RATE, reconciled={earlier.business_date}
    )
    assert kinds(outcome) == {(DiscrepancyKind.DUPLICATE, "P4")}
    assert (outcome.totals.matched, outcome.totals.matched_fen) == (0, 0)
    # the day before was never run: a late listing of ours is simply matched
    late = logic.match(DAY, [line_of(earlier, 2)], [earlier], fee_rate_ppm=RATE)
    assert late.found == []
    assert late.totals.matched_fen == 1200


def test_the_provider_paid_what_we_expired_is_a_status_mismatch() -> None:
    expired = ours("payment", "P3", 500, succeeded=False)
    outcome = run([line_of(expired, 2)], [expired])
    assert kinds(outcome) == {(DiscrepancyKind.STATUS_MISMATCH, "P3")}
    assert outcome.totals.matched == 0


def test_the_contracted_fee_rounds_half_up_to_the_fen() -> None:
    assert logic.expected_fee_fen(1000, 6000) == 6
    assert logic.expected_fee_fen(250, 6000) == 2  # 1.5 fen rounds half up


MUTATIONS = ("drop", "add", "amount", "duplicate", "status", "fee")
EXPECTED = {
    "drop": DiscrepancyKind.MISSING_AT_PROVIDER,
    "add": DiscrepancyKind.MISSING_INTERNALLY,
    "amount": DiscrepancyKind.AMOUNT_MISMATCH,
    "duplicate": DiscrepancyKind.DUPLICATE,
    "status": DiscrepancyKind.STATUS_MISMATCH,
    "fee": DiscrepancyKind.FEE_MISMATCH,
}


@st.composite
def days(draw: st.DrawFn) -> tuple[list[Ours], list[tuple[int, str]]]:
    n = draw(st.integers(min_value=1, max_value=40))
    amounts = draw(st.lists(st.integers(1, 500_000), min_size=n, max_size=n))
    refund = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    # ours succeeded HOLDING_DAYS before the statement's day, so a dropped line is
    # already missing at the provider (not merely waiting)
    on = DAY - timedelta(days=HOLDING_DAYS)
    mine = [
        ours("refund" if r else "payment", f"K{i:04d}", a, on=on)
        for i, (a, r) in enumerate(zip(amounts, refund, strict=True))
    ]
    picks = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    mutations = [(i, draw(st.sampled_from(MUTATIONS))) for i in picks]
    return mine, mutations


@settings(max_examples=300, deadline=None)
@given(days(), st.integers(2, 40))
def test_the_discrepancies_are_exactly_the_mutations(
    day: tuple[list[Ours], list[tuple[int, str]]], fee_off: int
) -> None:
    mine, mutations = day
    done = dict(mutations)
    lines: list[Line] = []
    expected: set[tuple[DiscrepancyKind, str]] = set()
    number = 2
    for index, record in enumerate(mine):
        mutation = done.get(index)
        if mutation is not None:
            expected.add((EXPECTED[mutation], record.match_key))
        if mutation == "drop":
            continue
        if mutation == "add":
            stranger = ours(record.kind, f"X{record.match_key}", record.amount_fen)
            lines.append(line_of(stranger, number))
            number += 1
            expected.discard((EXPECTED[mutation], record.match_key))
            expected.add((EXPECTED[mutation], stranger.match_key))
            lines.append(line_of(record, number))
        elif mutation == "amount":
            lines.append(line_of(record, number, amount_fen=record.amount_fen + 1))
        elif mutation == "status":
            lines.append(line_of(record, number, succeeded=False, state="REVOKED"))
        elif mutation == "fee":
            sign = 1 if record.kind == "payment" else -1
            fee = logic.expected_fee_fen(record.amount_fen, RATE) + fee_off
            lines.append(line_of(record, number, fee_milli_fen=sign * fee * 1000))
        else:
            lines.append(line_of(record, number))
            if mutation == "duplicate":
                number += 1
                lines.append(line_of(record, number))
        number += 1
    outcome = run(lines, mine)
    assert kinds(outcome) == expected
    assert len(outcome.found) == len(expected)
    untouched = [m for i, m in enumerate(mine) if done.get(i) in (None, "add", "duplicate", "fee")]
    assert outcome.totals.matched == len(untouched)
    assert outcome.totals.matched_fen == sum(
        m.amount_fen if m.kind == "payment" else -m.amount_fen for m in untouched
    )
