"""Bills against the real PostgreSQL: idempotent creation, paid once, refunds, disputes.

The state machine at the end drives random sequences of every use case and
checks the money invariants after each step.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import asyncpg
import hypothesis
import msgspec
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from parking.bills import service as bills
from parking.bills.model import (
    AmountMismatch,
    Bill,
    BillAlreadyPaid,
    BillConflict,
    BillStatus,
    IllegalBillTransition,
    InvalidAmount,
    RefundConflict,
    RefundExceedsAmount,
    RefundProviderMismatch,
)
from parking.ledger import service as ledger
from parking.ledger.model import NotInTransaction

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
LOT = "GZ-T-01"
TARIFF = "test-tariff"
QUOTE = b'{"total_fen": 500, "lines": []}'


async def build_city(conn: asyncpg.Connection) -> None:
    """The least a bill refers to: a district, a lot, a tariff version."""
    await conn.execute(
        """INSERT INTO districts (code, name, kind, latitude, longitude)
           VALUES ('ZG', '章贡区', 'district', 25.85, 114.93);
           INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude)
           VALUES ('GZ-T-01', 'test lot', 'ZG', 'gated', 100, 25.85, 114.93);
           INSERT INTO tariffs (id, name) VALUES ('test-tariff', 'test');
           INSERT INTO tariff_versions (tariff_id, version, effective_from, document, created_by)
           VALUES ('test-tariff', 1, '2026-01-01T00:00:00+08:00', '{}', 'test');"""
    )


@pytest.fixture
async def city(db: asyncpg.Connection) -> asyncpg.Connection:
    await build_city(db)
    return db


async def tx(conn: asyncpg.Connection, call: Callable[[], Awaitable[Any]]) -> Any:
    async with conn.transaction():
        return await call()


async def open_bill(
    conn: asyncpg.Connection,
    session_id: str = "s-1",
    amount_fen: int = 500,
    *,
    plate: str | None = "赣B12345",
    account_id: str | None = None,
) -> Bill:
    async with conn.transaction():
        bill = await bills.open_bill(
            conn,
            session_id=session_id,
            lot_id=LOT,
            plate=plate,
            account_id=account_id,
            amount_fen=amount_fen,
            tariff_id=TARIFF,
            tariff_version=1,
            quote=QUOTE,
            closed_at=NOW,
            now=NOW,
        )
    assert bill is not None
    return bill


async def pay(
    conn: asyncpg.Connection,
    bill: Bill,
    *,
    ref: str = "wx-1",
    provider: str = "wechatpay",
    amount_fen: int | None = None,
) -> Bill:
    async with conn.transaction():
        return await bills.mark_paid(
            conn,
            bill.id,
            provider=provider,
            payment_ref=ref,
            amount_fen=bill.amount_fen if amount_fen is None else amount_fen,
            now=NOW + timedelta(minutes=5),
            actor="wechatpay-notify",
        )


async def refund(
    conn: asyncpg.Connection,
    bill: Bill,
    amount_fen: int,
    *,
    ref: str = "rf-1",
    provider: str = "wechatpay",
) -> Bill:
    async with conn.transaction():
        return await bills.refund(
            conn,
            bill.id,
            amount_fen=amount_fen,
            provider=provider,
            refund_ref=ref,
            actor="finance:li",
            remark="overcharged",
            now=NOW + timedelta(hours=1),
        )


async def ledger_kinds(conn: asyncpg.Connection, bill_id: str) -> list[str]:
    return [t.kind.value for t in await ledger.transactions_of(conn, bill_id)]


async def assert_books_agree(conn: asyncpg.Connection) -> None:
    assert (await ledger.trial_balance(conn)).total_fen == 0
    check = await bills.receivables_check(conn)
    assert check.equal, check


async def test_open_bill_creates_the_bill_its_receivable_and_an_audit_row(
    city: asyncpg.Connection,
) -> None:
    bill = await open_bill(city, amount_fen=800)
    assert bill.id.startswith("b-")
    assert (bill.status, bill.amount_fen, bill.refunded_fen) == (BillStatus.OPEN, 800, 0)
    assert bill.quote == msgspec.Raw(b'{"lines": [], "total_fen": 500}')
    assert await ledger.account_balance(city, "receivables") == 800
    assert await ledger.account_balance(city, f"revenue:{LOT}") == -800
    assert await ledger_kinds(city, bill.id) == ["bill_opened"]
    [event] = await bills.events(city, bill.id)
    assert (event.from_status, event.to_status, event.actor) == (None, BillStatus.OPEN, "billing")
    assert event.ledger_transaction_id is not None
    await assert_books_agree(city)


async def test_open_bill_is_idempotent_on_the_session(city: asyncpg.Connection) -> None:
    first = await open_bill(city)
    second = await open_bill(city)
    assert second == first
    assert await ledger_kinds(city, first.id) == ["bill_opened"]
    with pytest.raises(BillConflict):
        await open_bill(city, amount_fen=501)
    await assert_books_agree(city)


async def test_open_bill_from_two_connections_at_once_makes_one_bill(
    city: asyncpg.Connection, db_url: str
) -> None:
    conns = [await asyncpg.connect(db_url) for _ in range(4)]
    try:
        made = await asyncio.gather(*(open_bill(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    assert len({b.id for b in made}) == 1
    assert await city.fetchval("SELECT count(*) FROM bills") == 1
    assert await ledger_kinds(city, made[0].id) == ["bill_opened"]


async def test_a_free_stay_creates_no_bill_and_a_negative_fee_is_refused(
    city: asyncpg.Connection,
) -> None:
    async def make(amount_fen: int) -> Bill | None:
        return await bills.open_bill(
            city,
            session_id="s-free",
            lot_id=LOT,
            plate=None,
            account_id=None,
            amount_fen=amount_fen,
            tariff_id=TARIFF,
            tariff_version=1,
            quote=QUOTE,
            closed_at=NOW,
            now=NOW,
        )

    assert await tx(city, lambda: make(0)) is None
    with pytest.raises(InvalidAmount):
        await tx(city, lambda: make(-1))
    assert await city.fetchval("SELECT count(*) FROM bills") == 0
    assert await city.fetchval("SELECT count(*) FROM ledger_transactions") == 0


async def test_a_bill_opened_on_a_killed_connection_leaves_no_bill_and_no_ledger_rows(
    city: asyncpg.Connection, db_url: str
) -> None:
    victim = await asyncpg.connect(db_url)
    pid = victim.get_server_pid()
    hung_up = asyncio.Event()
    victim.add_termination_listener(lambda _: hung_up.set())
    transaction = victim.transaction()
    await transaction.start()
    await bills.open_bill(
        victim,
        session_id="s-1",
        lot_id=LOT,
        plate=None,
        account_id=None,
        amount_fen=500,
        tariff_id=TARIFF,
        tariff_version=1,
        quote=QUOTE,
        closed_at=NOW,
        now=NOW,
    )
    assert await city.fetchval("SELECT pg_terminate_backend($1)", pid)
    # Wait until the client has seen the server hang up: committing earlier
    # races asyncpg's handling of the unsolicited FATAL message.
    await asyncio.wait_for(hung_up.wait(), timeout=10)
    with pytest.raises(asyncpg.InterfaceError, match="connection is closed"):
        await transaction.commit()
    for table in ("bills", "bill_events", "ledger_transactions", "ledger_postings"):
        assert await city.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    await open_bill(city)  # the retry
    await assert_books_agree(city)


async def test_ten_concurrent_payment_notifications_pay_the_bill_once(
    city: asyncpg.Connection, db_url: str
) -> None:
    bill = await open_bill(city, amount_fen=1_500)
    conns = [await asyncpg.connect(db_url) for _ in range(10)]
    try:
        replies = await asyncio.gather(*(pay(conn, bill, ref="wx-42") for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    assert {r.status for r in replies} == {BillStatus.PAID}
    assert {r.payment_ref for r in replies} == {"wx-42"}
    paid_events = [e for e in await bills.events(city, bill.id) if e.to_status is BillStatus.PAID]
    assert len(paid_events) == 1
    assert await ledger_kinds(city, bill.id) == ["bill_opened", "bill_paid"]
    assert await ledger.account_balance(city, "clearing:wechatpay") == 1_500
    await assert_books_agree(city)


async def test_a_payment_of_the_wrong_amount_changes_nothing(city: asyncpg.Connection) -> None:
    bill = await open_bill(city, amount_fen=500)
    with pytest.raises(AmountMismatch) as caught:
        await pay(city, bill, amount_fen=499)
    assert (caught.value.expected_fen, caught.value.got_fen) == (500, 499)
    assert await bills.get(city, bill.id) == bill
    assert await ledger_kinds(city, bill.id) == ["bill_opened"]


async def test_a_second_different_payment_of_a_paid_bill_is_refused(
    city: asyncpg.Connection,
) -> None:
    bill = await open_bill(city)
    paid = await pay(city, bill, ref="wx-1")
    assert await pay(city, bill, ref="wx-1") == paid  # the same notification again
    with pytest.raises(BillAlreadyPaid):
        await pay(city, bill, ref="ali-9", provider="alipay")
    assert await bills.get(city, bill.id) == paid
    await assert_books_agree(city)


async def test_a_payment_attempt_that_fails_leaves_the_bill_open_and_payable(
    city: asyncpg.Connection,
) -> None:
    bill = await open_bill(city)
    kw: dict[str, Any] = {"actor": "cashier", "now": NOW}
    paying = await tx(city, lambda: bills.mark_paying(city, bill.id, **kw))
    assert paying.status is BillStatus.PAYING
    assert await tx(city, lambda: bills.mark_paying(city, bill.id, **kw)) == paying
    reopened = await tx(city, lambda: bills.payment_failed(city, bill.id, remark="expired", **kw))
    assert reopened.status is BillStatus.OPEN
    assert (await pay(city, bill)).status is BillStatus.PAID
    statuses = [(e.from_status, e.to_status) for e in await bills.events(city, bill.id)]
    assert statuses == [
        (None, BillStatus.OPEN),
        (BillStatus.OPEN, BillStatus.PAYING),
        (BillStatus.PAYING, BillStatus.OPEN),
        (BillStatus.OPEN, BillStatus.PAID),
    ]


async def test_illegal_transitions_raise_and_change_nothing(city: asyncpg.Connection) -> None:
    kw: dict[str, Any] = {"actor": "finance:li", "remark": "", "now": NOW}
    bill = await open_bill(city, "s-open")
    with pytest.raises(IllegalBillTransition, match="never paid"):
        await refund(city, bill, 100)
    with pytest.raises(IllegalBillTransition, match="none is open"):
        await tx(city, lambda: bills.resolve_dispute(city, bill.id, **kw))

    paying = await open_bill(city, "s-paying")
    await tx(city, lambda: bills.mark_paying(city, paying.id, **kw))
    with pytest.raises(IllegalBillTransition):
        await tx(city, lambda: bills.write_off(city, paying.id, **kw))
    with pytest.raises(IllegalBillTransition):
        await tx(city, lambda: bills.dispute(city, paying.id, **kw))

    paid = await pay(city, await open_bill(city, "s-paid"))
    with pytest.raises(IllegalBillTransition):
        await tx(city, lambda: bills.mark_paying(city, paid.id, **kw))
    with pytest.raises(IllegalBillTransition):
        await tx(city, lambda: bills.payment_failed(city, paid.id, **kw))
    with pytest.raises(IllegalBillTransition, match="is paid"):
        await tx(city, lambda: bills.write_off(city, paid.id, **kw))

    gone = await open_bill(city, "s-gone")
    await tx(city, lambda: bills.write_off(city, gone.id, **kw))
    with pytest.raises(IllegalBillTransition):
        await tx(city, lambda: bills.dispute(city, gone.id, **kw))
    with pytest.raises(IllegalBillTransition):
        await tx(city, lambda: bills.mark_paying(city, gone.id, **kw))
    await assert_books_agree(city)


async def test_partial_then_full_refund_and_nothing_beyond_the_amount(
    city: asyncpg.Connection,
) -> None:
    bill = await pay(city, await open_bill(city, amount_fen=1_000))
    part = await refund(city, bill, 300, ref="rf-1")
    assert (part.status, part.refunded_fen, part.refundable_fen) == (BillStatus.REFUNDED, 300, 700)
    assert await refund(city, bill, 300, ref="rf-1") == part  # the same refund again
    with pytest.raises(RefundConflict):
        await refund(city, bill, 301, ref="rf-1")
    with pytest.raises(RefundExceedsAmount):
        await refund(city, bill, 701, ref="rf-2")
    with pytest.raises(RefundProviderMismatch):
        await refund(city, bill, 100, ref="rf-2", provider="alipay")
    with pytest.raises(InvalidAmount):
        await refund(city, bill, 0, ref="rf-2")
    full = await refund(city, bill, 700, ref="rf-2")
    assert (full.status, full.refunded_fen, full.refundable_fen) == (BillStatus.REFUNDED, 1_000, 0)
    with pytest.raises(RefundExceedsAmount):
        await refund(city, bill, 1, ref="rf-3")
    assert await ledger.account_balance(city, f"refunds:{LOT}") == 1_000
    assert await ledger.account_balance(city, "clearing:wechatpay") == 0
    assert await ledger_kinds(city, bill.id) == ["bill_opened", "bill_paid", "refund", "refund"]
    await assert_books_agree(city)


async def test_the_database_refuses_a_refund_beyond_the_amount(city: asyncpg.Connection) -> None:
    bill = await pay(city, await open_bill(city, amount_fen=1_000))
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await city.execute(
            "UPDATE bills SET status = 'refunded', refunded_fen = 1001 WHERE id = $1", bill.id
        )
    assert caught.value.constraint_name == "bills_refund_within_amount"


async def test_an_upheld_dispute_of_an_unpaid_bill_writes_it_off(city: asyncpg.Connection) -> None:
    kw: dict[str, Any] = {"actor": "finance:li", "now": NOW}
    bill = await open_bill(city, amount_fen=600)
    disputed = await tx(city, lambda: bills.dispute(city, bill.id, remark="not my car", **kw))
    assert disputed.status is BillStatus.DISPUTED
    assert [b.id for b in await bills.open_bills(city, plate=bill.plate)] == [bill.id]
    gone = await tx(city, lambda: bills.write_off(city, bill.id, remark="plate misread", **kw))
    assert gone.status is BillStatus.WRITTEN_OFF
    assert await bills.open_bills(city, plate=bill.plate) == []
    assert await ledger.account_balance(city, "write_offs") == 600
    assert await ledger.account_balance(city, "receivables") == 0
    last = (await bills.events(city, bill.id))[-1]
    assert (last.actor, last.remark, last.amount_fen) == ("finance:li", "plate misread", 600)
    await assert_books_agree(city)


async def test_a_rejected_dispute_returns_the_bill_to_where_its_money_says(
    city: asyncpg.Connection,
) -> None:
    kw: dict[str, Any] = {"actor": "finance:li", "remark": "checked the video", "now": NOW}
    unpaid = await open_bill(city, "s-1")
    await tx(city, lambda: bills.dispute(city, unpaid.id, **kw))
    assert (await tx(city, lambda: bills.resolve_dispute(city, unpaid.id, **kw))).status is (
        BillStatus.OPEN
    )
    paid = await pay(city, await open_bill(city, "s-2"), ref="wx-2")
    await tx(city, lambda: bills.dispute(city, paid.id, **kw))
    assert (await tx(city, lambda: bills.resolve_dispute(city, paid.id, **kw))).status is (
        BillStatus.PAID
    )
    await refund(city, paid, 100)
    await tx(city, lambda: bills.dispute(city, paid.id, **kw))
    back = await tx(city, lambda: bills.resolve_dispute(city, paid.id, **kw))
    assert (back.status, back.refunded_fen) == (BillStatus.REFUNDED, 100)
    await assert_books_agree(city)


async def test_a_payment_during_a_dispute_is_recorded_and_the_dispute_stays_open(
    city: asyncpg.Connection,
) -> None:
    kw: dict[str, Any] = {"actor": "driver", "remark": "", "now": NOW}
    bill = await open_bill(city)
    await tx(city, lambda: bills.dispute(city, bill.id, **kw))
    paid = await pay(city, bill)
    assert (paid.status, paid.payment_ref) == (BillStatus.DISPUTED, "wx-1")
    assert await bills.open_bills(city) == []
    await assert_books_agree(city)


async def test_a_late_payment_of_a_written_off_bill_reverses_the_write_off(
    city: asyncpg.Connection,
) -> None:
    kw: dict[str, Any] = {"actor": "finance:li", "remark": "arrears over a year", "now": NOW}
    bill = await open_bill(city, amount_fen=900)
    await tx(city, lambda: bills.write_off(city, bill.id, **kw))
    paid = await pay(city, bill)
    assert paid.status is BillStatus.PAID
    assert await ledger_kinds(city, bill.id) == [
        "bill_opened",
        "write_off",
        "reversal",
        "bill_paid",
    ]
    assert await ledger.account_balance(city, "write_offs") == 0
    assert await ledger.account_balance(city, "clearing:wechatpay") == 900
    await assert_books_agree(city)


async def test_open_bills_by_plate_and_by_account(city: asyncpg.Connection) -> None:
    a = await open_bill(city, "s-1", plate="赣B11111", account_id="u-1")
    b = await open_bill(city, "s-2", plate="赣B22222", account_id="u-1")
    await open_bill(city, "s-3", plate="赣B11111", account_id=None)
    await pay(city, await open_bill(city, "s-4", plate="赣B11111", account_id="u-1"))
    assert {x.id for x in await bills.open_bills(city, account_id="u-1")} == {a.id, b.id}
    assert len(await bills.open_bills(city, plate="赣B11111")) == 2
    assert [x.id for x in await bills.open_bills(city, plate="赣B11111", account_id="u-1")] == [
        a.id
    ]
    assert len(await bills.open_bills(city)) == 3


async def test_use_cases_refuse_to_run_outside_a_transaction(city: asyncpg.Connection) -> None:
    bill = await open_bill(city)
    with pytest.raises(NotInTransaction):
        await bills.mark_paid(
            city,
            bill.id,
            provider="sandbox",
            payment_ref="p",
            amount_fen=bill.amount_fen,
            now=NOW,
            actor="t",
        )
    assert await bills.get(city, bill.id) == bill


# --- the state machine ------------------------------------------------------------------

# What a rule may legitimately be refused with; anything else fails the test.
REFUSALS = (
    IllegalBillTransition,
    AmountMismatch,
    BillAlreadyPaid,
    RefundExceedsAmount,
    RefundProviderMismatch,
    RefundConflict,
    InvalidAmount,
)
PROVIDERS = ("wechatpay", "alipay", "sandbox")


class BillMachine(RuleBasedStateMachine):
    """Random lifecycles over one database; the invariants are checked over all of it.

    All examples share the database and never clean it (the ledger refuses
    TRUNCATE by design). Every invariant is a property of the whole database
    that must hold for the bills of earlier examples too, so the rows they
    leave make each check stronger rather than muddier; each example uses its
    own session ids, so it never touches an earlier example's bills.
    """

    loop: ClassVar[asyncio.AbstractEventLoop]
    conn: ClassVar[asyncpg.Connection]
    bills = Bundle("bills")

    def __init__(self) -> None:
        super().__init__()
        self.example = uuid.uuid4().hex[:8]
        self.sessions = itertools.count()
        self.clock = NOW
        self.opened = 0

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def now(self) -> datetime:
        self.clock += timedelta(minutes=1)
        return self.clock

    def attempt(self, bill_id: str, call: Callable[[asyncpg.Connection], Awaitable[Bill]]) -> None:
        """Run one use case in its own transaction; a refusal must leave the bill as it was."""

        async def go() -> None:
            before = await bills.get(self.conn, bill_id)
            try:
                async with self.conn.transaction():
                    after = await call(self.conn)
            except REFUSALS:
                assert await bills.get(self.conn, bill_id) == before
                return
            assert after == await bills.get(self.conn, bill_id)

        self.run(go())

    # A few bills per example, so the steps go deep into each one's life
    # (paid, refunded twice, disputed...) instead of opening many and leaving
    # them; free stays, which make no bill, do not count.
    @precondition(lambda self: self.opened < 3)
    @rule(target=bills, amount=st.integers(min_value=0, max_value=3_000))
    def open_bill(self, amount: int) -> Any:
        session = f"sm-{self.example}-{next(self.sessions)}"

        async def go() -> Bill | None:
            async with self.conn.transaction():
                return await bills.open_bill(
                    self.conn,
                    session_id=session,
                    lot_id=LOT,
                    plate=f"赣B{self.example[:5].upper()}",
                    account_id=None,
                    amount_fen=amount,
                    tariff_id=TARIFF,
                    tariff_version=1,
                    quote=QUOTE,
                    closed_at=self.clock,
                    now=self.now(),
                )

        bill = self.run(go())
        if bill is None:
            assert amount == 0
            return multiple()
        self.opened += 1
        return (session, bill.id, bill.amount_fen)

    @rule(ref=bills)
    def reopen_is_idempotent(self, ref: tuple[str, str, int]) -> None:
        session, bill_id, amount = ref

        async def go() -> Bill | None:
            async with self.conn.transaction():
                return await bills.open_bill(
                    self.conn,
                    session_id=session,
                    lot_id=LOT,
                    plate=None,
                    account_id=None,
                    amount_fen=amount,
                    tariff_id=TARIFF,
                    tariff_version=1,
                    quote=QUOTE,
                    closed_at=self.clock,
                    now=self.now(),
                )

        again = self.run(go())
        assert again is not None
        assert again.id == bill_id

    @rule(ref=bills)
    def mark_paying(self, ref: tuple[str, str, int]) -> None:
        now = self.now()
        self.attempt(ref[1], lambda c: bills.mark_paying(c, ref[1], actor="cashier", now=now))

    @rule(ref=bills)
    def payment_failed(self, ref: tuple[str, str, int]) -> None:
        now = self.now()
        self.attempt(
            ref[1],
            lambda c: bills.payment_failed(c, ref[1], actor="notify", remark="closed", now=now),
        )

    @rule(
        ref=bills,
        provider=st.sampled_from(PROVIDERS),
        payment=st.sampled_from(("p1", "p2")),
        roll=st.integers(min_value=0, max_value=9),
    )
    def mark_paid(self, ref: tuple[str, str, int], provider: str, payment: str, roll: int) -> None:
        _, bill_id, amount = ref
        off_by = {8: 1, 9: -1}.get(roll, 0)  # one notification in five has a wrong amount
        now = self.now()
        self.attempt(
            bill_id,
            lambda c: bills.mark_paid(
                c,
                bill_id,
                provider=provider,
                payment_ref=f"{bill_id}-{payment}",
                amount_fen=amount + off_by,
                now=now,
                actor="notify",
            ),
        )

    @rule(
        ref=bills,
        roll=st.integers(min_value=0, max_value=9),
        number=st.integers(min_value=0, max_value=3),
    )
    def refund(self, ref: tuple[str, str, int], roll: int, number: int) -> None:
        bill_id, amount = ref[1], ref[2]
        bill = self.run(bills.get(self.conn, bill_id))
        # Sized from what is left, so refunds often succeed and sometimes overshoot.
        left = amount - bill.refunded_fen
        # roll 0-3: a third of what is left; 4-6: all of it; 7: through a provider
        # that was not paid; 8: one fen too much; 9: nothing
        refund_fen = max(1, left // 3) if roll < 4 else left + 1 if roll == 8 else left
        if roll == 9:
            refund_fen = 0
        provider = bill.provider or "sandbox"
        if roll == 7:
            provider = next(p for p in PROVIDERS if p != provider)
        now = self.now()
        self.attempt(
            bill_id,
            lambda c: bills.refund(
                c,
                bill_id,
                amount_fen=refund_fen,
                provider=provider,
                refund_ref=f"{bill_id}-r{number}",
                actor="finance",
                remark="",
                now=now,
            ),
        )

    @rule(ref=bills)
    def dispute(self, ref: tuple[str, str, int]) -> None:
        now = self.now()
        self.attempt(
            ref[1], lambda c: bills.dispute(c, ref[1], actor="driver", remark="why", now=now)
        )

    @rule(ref=bills)
    def resolve_dispute(self, ref: tuple[str, str, int]) -> None:
        now = self.now()
        self.attempt(
            ref[1],
            lambda c: bills.resolve_dispute(c, ref[1], actor="finance", remark="ok", now=now),
        )

    @rule(ref=bills)
    def write_off(self, ref: tuple[str, str, int]) -> None:
        now = self.now()
        self.attempt(
            ref[1], lambda c: bills.write_off(c, ref[1], actor="finance", remark="old", now=now)
        )

    @invariant()
    def ledger_balances(self) -> None:
        assert self.run(ledger.trial_balance(self.conn)).total_fen == 0

    @invariant()
    def receivables_equal_the_bills_still_owed(self) -> None:
        check = self.run(bills.receivables_check(self.conn))
        assert check.equal, check

    @invariant()
    def every_bill_has_its_money_in_the_ledger(self) -> None:
        # Per bill: opened once; a bill_paid exactly when it has a payment (so
        # never two); refunds posted add up to refunded_fen; the audit trail
        # ends in the bill's status.
        wrong = self.run(
            self.conn.fetch(
                """
                SELECT b.id, b.status, b.paid_at, b.refunded_fen, t.opened, t.paid, t.refunded
                  FROM bills b
                  LEFT JOIN LATERAL (
                       SELECT count(DISTINCT lt.id) FILTER (WHERE lt.kind = 'bill_opened')
                                  AS opened,
                              count(DISTINCT lt.id) FILTER (WHERE lt.kind = 'bill_paid') AS paid,
                              coalesce(sum(p.amount_fen) FILTER (
                                  WHERE lt.kind = 'refund' AND p.amount_fen > 0), 0) AS refunded
                         FROM ledger_transactions lt
                         JOIN ledger_postings p ON p.transaction_id = lt.id
                        WHERE lt.correlation_id = b.id
                  ) t ON true
                 WHERE t.opened <> 1
                    OR t.paid <> CASE WHEN b.paid_at IS NULL THEN 0 ELSE 1 END
                    OR t.refunded <> b.refunded_fen
                    OR (SELECT to_status FROM bill_events e WHERE e.bill_id = b.id
                         ORDER BY e.id DESC LIMIT 1) <> b.status
                """
            )
        )
        assert wrong == [], [dict(r) for r in wrong]


def test_bill_lifecycles_keep_the_books_straight(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(asyncpg.connect(db_url))
        loop.run_until_complete(build_city(conn))

        class Machine(BillMachine):
            pass

        Machine.loop = loop
        Machine.conn = conn
        try:
            run_state_machine_as_test(
                Machine,
                settings=hypothesis.settings(
                    max_examples=25,
                    stateful_step_count=50,
                    deadline=None,
                    suppress_health_check=[hypothesis.HealthCheck.too_slow],
                ),
            )
        finally:
            loop.run_until_complete(conn.close())
    finally:
        loop.close()
