"""Reconciliation's decisions, pure: statement rows as lines, and matching a day.

Matching walks two streams sorted by ``(kind, match_key)`` side by side, the
provider's lines and our records, so a day of a million lines is never held
whole. For each key:

- lines but no record of ours: ``missing_internally``;
- a record but no line: it waits in the holding pool for ``HOLDING_DAYS``
  business days (it may be on a later day's statement), then it is
  ``missing_at_provider`` (dated the day it succeeded with us);
- a line for ours of an earlier day that was already reconciled (and is not
  waiting in the pool): a ``duplicate`` of that day's line;
- both: the provider's state against ours (``status_mismatch``), then the
  amounts (``amount_mismatch``), then the provider's fee against the contracted
  rate (``fee_mismatch``); every line after the first for the same key is a
  ``duplicate``.

A line matched with ours (both say the money moved, same amount) counts toward
the day's settlement: payments less refunds, and their fees.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from itertools import groupby
from typing import Final

import msgspec

from parking.clock import SHANGHAI
from parking.ledger import logic as ledger_logic
from parking.ledger.model import Transaction
from parking.payments.wire.alipay import AlipayBill, BusinessType
from parking.payments.wire.wechat import TradeBillRow, TradeState
from parking.reconciliation.model import (
    FEE_TOLERANCE_FEN,
    HOLDING_DAYS,
    DiscrepancyKind,
    Found,
    Line,
    Ours,
    Outcome,
    StatementRefused,
    Totals,
    Waiting,
)

#: one million: fee rates are parts per million (0.60 % is 6000)
PPM: Final = 1_000_000


def business_date(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


# ------------------------------------------------------------------ statement rows as lines


def wechat_line(line_no: int, text: str, row: TradeBillRow, day: date) -> Line:
    """A WeChat trade bill row. A refund row (交易状态 REFUND) is the refund, matched by
    its out_refund_no; every other row is the order's payment. Raises StatementRefused
    for a row of another day."""
    _on_day(line_no, row.trade_time, day)
    if row.trade_state is TradeState.REFUND:
        if row.out_refund_no is None or row.refund_fen is None:
            raise StatementRefused(f"line {line_no}: a refund row without its refund number")
        status = row.refund_status or ""
        return Line(
            line_no=line_no,
            kind="refund",
            match_key=row.out_refund_no,
            out_trade_no=row.out_trade_no,
            out_refund_no=row.out_refund_no,
            transaction_id=row.transaction_id,
            refund_id=row.refund_id,
            state=f"REFUND:{status}",
            succeeded=status == "SUCCESS",
            amount_fen=row.refund_fen,
            fee_milli_fen=row.fee_milli_fen,
            trade_time=row.trade_time,
            line=text,
        )
    amount = (
        row.order_amount_fen
        if row.order_amount_fen is not None
        else row.settlement_total_fen + row.coupon_fen
    )
    return Line(
        line_no=line_no,
        kind="payment",
        match_key=row.out_trade_no,
        out_trade_no=row.out_trade_no,
        out_refund_no=None,
        transaction_id=row.transaction_id,
        refund_id=None,
        state=row.trade_state.value,
        succeeded=row.trade_state is TradeState.SUCCESS,
        amount_fen=amount,
        fee_milli_fen=row.fee_milli_fen,
        trade_time=row.trade_time,
        line=text,
    )


def alipay_lines(bill: AlipayBill, day: date) -> list[Line]:
    """The rows of an Alipay bill's detail file: 交易 rows are payments, 退款 rows (negative
    amounts) refunds matched by their request number. Raises StatementRefused for a row
    of another day."""
    lines = []
    for number, text, row in zip(bill.line_numbers, bill.lines, bill.rows, strict=True):
        moment = row.finished_at or row.created_at
        _on_day(number, moment, day)
        refund = row.business_type is BusinessType.REFUND
        if refund and not row.refund_request_no:
            raise StatementRefused(f"line {number}: a refund row without its request number")
        lines.append(
            Line(
                line_no=number,
                kind="refund" if refund else "payment",
                match_key=(row.refund_request_no or "") if refund else row.out_trade_no,
                out_trade_no=row.out_trade_no,
                out_refund_no=row.refund_request_no if refund else None,
                transaction_id=row.trade_no,
                refund_id=None,
                state=row.business_type.value,
                succeeded=True,
                amount_fen=abs(row.order_amount_fen),
                fee_milli_fen=row.service_fee_fen * 1000,
                trade_time=moment,
                line=text,
            )
        )
    return lines


def _on_day(line_no: int, moment: datetime, day: date) -> None:
    if business_date(moment) != day:
        raise StatementRefused(
            f"line {line_no}: dated {business_date(moment)}, the statement is for {day}"
        )


# ------------------------------------------------------------------ fees


def expected_fee_fen(amount_fen: int, rate_ppm: int) -> int:
    """The contracted fee on ``amount_fen``, rounded half up to the fen."""
    return (amount_fen * rate_ppm + PPM // 2) // PPM


def fee_is_off(line: Line, rate_ppm: int) -> bool:
    expected = expected_fee_fen(line.amount_fen, rate_ppm) * 1000
    return abs(abs(line.fee_milli_fen) - expected) > FEE_TOLERANCE_FEN * 1000


# ------------------------------------------------------------------ matching a day


def _key(item: Line | Ours) -> tuple[str, str]:
    return item.kind, item.match_key


def _merge(lines: Iterable[Line], ours: Iterable[Ours]) -> Iterator[tuple[list[Line], Ours | None]]:
    """Pairs (the lines of a key, our record of it) from both sorted streams."""
    line_groups = ((k, list(g)) for k, g in groupby(lines, key=_key))
    our_items = iter(ours)
    mine = next(our_items, None)
    group = next(line_groups, None)
    while group is not None or mine is not None:
        if mine is None or (group is not None and group[0] < _key(mine)):
            assert group is not None
            yield group[1], None
            group = next(line_groups, None)
        elif group is None or _key(mine) < group[0]:
            yield [], mine
            mine = next(our_items, None)
        else:
            yield group[1], mine
            group = next(line_groups, None)
            mine = next(our_items, None)


def _found(
    kind: DiscrepancyKind,
    day: date,
    *,
    line: Line | None,
    ours: Ours | None,
    detail: str,
) -> Found:
    anchor = line if line is not None else ours
    assert anchor is not None
    return Found(
        kind=kind,
        business_date=day,
        match_key=anchor.match_key,
        out_trade_no=anchor.out_trade_no,
        out_refund_no=anchor.out_refund_no,
        transaction_id=line.transaction_id if line else (ours.transaction_id if ours else None),
        refund_id=line.refund_id if line else None,
        record_id=ours.record_id if ours else None,
        record_kind=anchor.kind,
        ours_fen=ours.amount_fen if ours else None,
        provider_fen=line.amount_fen if line else None,
        line_no=line.line_no if line else None,
        line=line.line if line else None,
        detail=detail,
    )


class DayMatcher:
    """Matches one day group by group (``add``), then says what it found (``outcome``).

    Groups come sorted or not, from ``pairs`` (two sorted lists) or from the
    database's join of the two sides; ``pooled`` names the (kind, key) of pool
    entries the day re-checks: a line for one of them clears it.
    """

    def __init__(
        self,
        day: date,
        *,
        fee_rate_ppm: int,
        pooled: Iterable[tuple[str, str]] = (),
        reconciled: Iterable[date] = (),
    ):
        self.day = day
        self.fee_rate_ppm = fee_rate_ppm
        self.pooled = set(pooled)
        #: earlier days already run: ours of such a day, not waiting in the pool, was on
        #: that day's statement, so a line for it today is that payment again
        self.reconciled = set(reconciled)
        self.totals = Totals()
        self.found: list[Found] = []
        self.waiting: list[Waiting] = []
        self.cleared: list[Waiting] = []
        self.missing: list[Waiting] = []

    def outcome(self) -> Outcome:
        return Outcome(
            totals=self.totals,
            found=self.found,
            waiting=self.waiting,
            cleared=self.cleared,
            missing=self.missing,
        )

    def add(self, group: Sequence[Line], mine: Ours | None) -> None:
        """The lines of one key (in line order) and our record of it."""
        self.totals.lines += len(group)
        if not group:
            if mine is not None:
                self._unlisted(mine)
            return
        first, *again = group
        for extra in again:
            self.found.append(
                _found(
                    DiscrepancyKind.DUPLICATE,
                    self.day,
                    line=extra,
                    ours=mine,
                    detail=f"the same {first.kind} as line {first.line_no}",
                )
            )
        if mine is None:
            self.found.append(
                _found(
                    DiscrepancyKind.MISSING_INTERNALLY,
                    self.day,
                    line=first,
                    ours=None,
                    detail=f"no {first.kind} of ours has this number",
                )
            )
            return
        if self._listed_before(mine):
            self.found.append(
                _found(
                    DiscrepancyKind.DUPLICATE,
                    self.day,
                    line=first,
                    ours=mine,
                    detail=f"the same {first.kind} was on the statement of {mine.business_date}",
                )
            )
            return
        difference = _difference(first, mine, self.fee_rate_ppm)
        if difference is not None:
            self.found.append(
                _found(difference[0], self.day, line=first, ours=mine, detail=difference[1])
            )
            if difference[0] is not DiscrepancyKind.FEE_MISMATCH:
                return
        if not first.succeeded:
            return  # both say nothing moved
        sign = 1 if first.kind == "payment" else -1
        self.totals.matched += 1
        self.totals.matched_fen += sign * first.amount_fen
        self.totals.fees_milli_fen += first.fee_milli_fen
        if first.kind == "refund":
            self.totals.refunds += 1
            self.totals.refunds_fen += first.amount_fen
        if _key(mine) in self.pooled:
            self.cleared.append(_waiting(mine))

    def _listed_before(self, mine: Ours) -> bool:
        return (
            mine.succeeded
            and mine.business_date is not None
            and mine.business_date < self.day
            and mine.business_date in self.reconciled
            and _key(mine) not in self.pooled
        )

    def _unlisted(self, mine: Ours) -> None:
        """Ours, on no line of the day: it waits, or it has waited long enough."""
        if not mine.succeeded or mine.business_date is None:
            return  # named by no line and nothing moved: nothing to check
        entry = _waiting(mine)
        if (self.day - mine.business_date).days < HOLDING_DAYS:
            self.waiting.append(entry)
            return
        self.missing.append(entry)
        self.found.append(
            _found(
                DiscrepancyKind.MISSING_AT_PROVIDER,
                mine.business_date,
                line=None,
                ours=mine,
                detail=f"ours since {mine.business_date}; on no statement of the "
                f"{HOLDING_DAYS} days that followed",
            )
        )


def _difference(line: Line, mine: Ours, fee_rate_ppm: int) -> tuple[DiscrepancyKind, str] | None:
    """What differs between a line and our record of it, the weightiest first."""
    if line.succeeded != mine.succeeded:
        return (
            DiscrepancyKind.STATUS_MISMATCH,
            f"the provider says {line.state}, ours is {mine.status}",
        )
    if not line.succeeded:
        return None
    if line.amount_fen != mine.amount_fen:
        return (
            DiscrepancyKind.AMOUNT_MISMATCH,
            f"the provider has {line.amount_fen} fen, ours {mine.amount_fen} fen",
        )
    if fee_is_off(line, fee_rate_ppm):
        expected = expected_fee_fen(line.amount_fen, fee_rate_ppm)
        return (
            DiscrepancyKind.FEE_MISMATCH,
            f"fee {abs(line.fee_milli_fen) / 1000:g} fen, the contracted rate gives {expected} fen",
        )
    return None


def pairs(lines: Iterable[Line], ours: Iterable[Ours]) -> Iterator[tuple[list[Line], Ours | None]]:
    """(the lines of a key, our record of it) from two streams sorted by (kind, match_key)."""
    return _merge(lines, ours)


def match(
    day: date,
    lines: Iterable[Line],
    ours: Iterable[Ours],
    *,
    fee_rate_ppm: int,
    pooled: Iterable[tuple[str, str]] = (),
    reconciled: Iterable[date] = (),
) -> Outcome:
    """Match a day's statement ``lines`` against ``ours``, both sorted by (kind, match_key).

    ``ours`` holds our records the day should see: those that succeeded on ``day``,
    those waiting in the pool (``pooled`` names their (kind, key)), and any record a
    line names.
    """
    matcher = DayMatcher(day, fee_rate_ppm=fee_rate_ppm, pooled=pooled, reconciled=reconciled)
    for group, mine in pairs(lines, ours):
        matcher.add(group, mine)
    return matcher.outcome()


def _waiting(mine: Ours) -> Waiting:
    assert mine.business_date is not None
    return Waiting(
        kind=mine.kind,
        match_key=mine.match_key,
        out_trade_no=mine.out_trade_no,
        out_refund_no=mine.out_refund_no,
        business_date=mine.business_date,
        ours_fen=mine.amount_fen,
    )


class Settled(msgspec.Struct, frozen=True, kw_only=True):
    gross_fen: int
    fee_fen: int


def settled_so_far(transactions: Iterable[Transaction], provider: str) -> Settled:
    """What a day's settlement transactions took out of clearing, and the fees in them."""
    clearing = ledger_logic.clearing(provider)
    fees = ledger_logic.provider_fees(provider)
    postings = [p for tx in transactions for p in tx.postings]
    return Settled(
        gross_fen=-sum(p.amount_fen for p in postings if p.account == clearing),
        fee_fen=sum(p.amount_fen for p in postings if p.account == fees),
    )
