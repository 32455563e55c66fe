"""The ledger against the real PostgreSQL: balance, append-only, idempotency, crashes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parking.ledger import logic, service
from parking.ledger.model import (
    IdempotencyConflict,
    NewTransaction,
    NotInTransaction,
    Posting,
    Transaction,
    TransactionKind,
    UnbalancedTransaction,
    UnknownAccount,
    UnknownTransaction,
)

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]


def opened(
    bill_id: str = "b-1", amount_fen: int = 500, lot_id: str = "GZ-DEMO-01"
) -> NewTransaction:
    return logic.bill_opened(bill_id=bill_id, lot_id=lot_id, amount_fen=amount_fen, occurred_at=NOW)


async def post(conn: asyncpg.Connection, tx: NewTransaction) -> str:
    async with conn.transaction():
        return await service.post(conn, tx)


async def count(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def insert_raw(conn: asyncpg.Connection, tx_id: str, amounts: list[int]) -> None:
    """Write a transaction with plain SQL, bypassing the service's own checks."""
    await conn.execute(
        "INSERT INTO ledger_accounts (code, kind) VALUES ('receivables', 'asset'), "
        "('revenue:GZ-DEMO-01', 'revenue') ON CONFLICT DO NOTHING"
    )
    await conn.execute(
        "INSERT INTO ledger_transactions (id, kind, idempotency_key, correlation_id, occurred_at) "
        "VALUES ($1, 'bill_opened', $1, $1, now())",
        tx_id,
    )
    for line, amount in enumerate(amounts, start=1):
        account = "receivables" if amount > 0 else "revenue:GZ-DEMO-01"
        await conn.execute(
            "INSERT INTO ledger_postings (transaction_id, line, account_code, amount_fen) "
            "VALUES ($1, $2, $3, $4)",
            tx_id,
            line,
            account,
            amount,
        )


RAW_ID = "lt-01JD3K0000000000000000000A"


async def test_a_posted_bill_shows_in_the_trial_balance_which_sums_to_zero(
    db: asyncpg.Connection,
) -> None:
    tx_id = await post(db, opened(amount_fen=700))
    assert tx_id.startswith("lt-")
    balance = await service.trial_balance(db)
    assert balance.total_fen == 0
    assert {(a.account, a.kind.value, a.balance_fen) for a in balance.accounts} == {
        ("receivables", "asset", 700),
        ("revenue:GZ-DEMO-01", "revenue", -700),
    }
    assert await service.account_balance(db, "receivables") == 700
    assert await service.account_balance(db, "bank") == 0
    stored = await service.get(db, tx_id)
    assert stored.kind is TransactionKind.BILL_OPENED
    assert stored.postings == opened(amount_fen=700).postings


def test_logic_refuses_an_unbalanced_transaction_before_the_database() -> None:
    lopsided = NewTransaction(
        kind=TransactionKind.BILL_OPENED,
        idempotency_key="b-1",
        correlation_id="b-1",
        postings=(
            Posting(account="receivables", amount_fen=500),
            Posting(account="revenue:GZ-DEMO-01", amount_fen=-499),
        ),
        occurred_at=NOW,
    )
    with pytest.raises(UnbalancedTransaction, match="sum to 1 fen"):
        logic.validate(lopsided)
    single = NewTransaction(
        kind=TransactionKind.BILL_OPENED,
        idempotency_key="b-1",
        correlation_id="b-1",
        postings=(Posting(account="receivables", amount_fen=0),),
        occurred_at=NOW,
    )
    with pytest.raises(UnbalancedTransaction, match="at least two"):
        logic.validate(single)


def test_accounts_outside_the_chart_are_refused() -> None:
    assert logic.account_kind("clearing:wechatpay").value == "asset"
    assert logic.account_kind("refunds:GZ-DEMO-01").value == "revenue"
    for code in ("cash", "revenue", "receivables:x", "Bank", "clearing:", "revenue:a b"):
        with pytest.raises(UnknownAccount):
            logic.account_kind(code)


async def test_the_database_refuses_unbalanced_postings_at_commit(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance") as caught:
        async with db.transaction():
            await insert_raw(db, RAW_ID, [500, -499])
    assert caught.value.constraint_name == "ledger_transaction_balanced"
    assert await count(db, "ledger_transactions") == 0
    assert await count(db, "ledger_postings") == 0


async def test_the_database_refuses_a_transaction_with_fewer_than_two_postings(
    db: asyncpg.Connection,
) -> None:
    for amounts in ([], [500]):
        with pytest.raises(asyncpg.CheckViolationError, match="at least two"):
            async with db.transaction():
                await insert_raw(db, RAW_ID, amounts)
    assert await count(db, "ledger_transactions") == 0


async def test_the_database_refuses_a_posting_added_to_a_committed_transaction(
    db: asyncpg.Connection,
) -> None:
    tx_id = await post(db, opened())
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
        await db.execute(
            "INSERT INTO ledger_postings (transaction_id, line, account_code, amount_fen) "
            "VALUES ($1, 3, 'receivables', 1)",
            tx_id,
        )
    assert await count(db, "ledger_postings") == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount_fen = amount_fen * 2",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_transactions SET memo = 'edited'",
        "DELETE FROM ledger_transactions",
        "UPDATE ledger_accounts SET kind = 'expense'",
        "DELETE FROM ledger_accounts",
        "TRUNCATE ledger_postings",
        "TRUNCATE ledger_transactions, ledger_postings, bill_events",
        "TRUNCATE ledger_transactions CASCADE",
        "TRUNCATE ledger_accounts CASCADE",
    ],
)
async def test_ledger_rows_cannot_be_changed_or_removed_even_by_the_owner(
    owner_db: asyncpg.Connection, statement: str
) -> None:
    # The app role is refused these by its privileges (test_app_role.py); the
    # triggers stop the owner's own console too.
    db = owner_db
    await post(db, opened())
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    assert await count(db, "ledger_transactions") == 1
    assert await count(db, "ledger_postings") == 2
    assert (await service.trial_balance(db)).total_fen == 0


async def test_a_connection_killed_mid_transaction_leaves_nothing_and_the_retry_posts_once(
    db: asyncpg.Connection, db_url: str
) -> None:
    victim = await asyncpg.connect(db_url)
    pid = victim.get_server_pid()
    hung_up = asyncio.Event()
    victim.add_termination_listener(lambda _: hung_up.set())
    transaction = victim.transaction()
    await transaction.start()
    await service.post(victim, opened("b-killed"))
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
    # Wait until the client has seen the server hang up: committing earlier
    # races asyncpg's handling of the unsolicited FATAL message.
    await asyncio.wait_for(hung_up.wait(), timeout=10)
    with pytest.raises(asyncpg.InterfaceError, match="connection is closed"):
        await transaction.commit()
    assert await count(db, "ledger_transactions") == 0
    assert await count(db, "ledger_postings") == 0
    assert await count(db, "ledger_accounts") == 0

    retried = await post(db, opened("b-killed"))
    assert await post(db, opened("b-killed")) == retried
    assert await count(db, "ledger_transactions") == 1


async def test_the_same_event_posted_twice_is_one_transaction(db: asyncpg.Connection) -> None:
    first = await post(db, opened())
    second = await post(db, opened())
    assert first == second
    assert await count(db, "ledger_transactions") == 1
    assert await count(db, "ledger_postings") == 2
    # Also twice within one database transaction.
    async with db.transaction():
        a = await service.post(db, opened("b-2"))
        b = await service.post(db, opened("b-2"))
    assert a == b
    assert await count(db, "ledger_transactions") == 2


async def test_a_retry_waits_for_the_first_post_and_returns_its_id(
    db: asyncpg.Connection, db_url: str
) -> None:
    other = await asyncpg.connect(db_url)
    try:
        transaction = db.transaction()
        await transaction.start()
        first = await service.post(db, opened())
        retry = asyncio.create_task(post(other, opened()))
        await asyncio.sleep(0.3)
        assert not retry.done(), "the retry must wait for the first post to commit"
        await transaction.commit()
        assert await retry == first
    finally:
        await other.close()
    assert await count(db, "ledger_transactions") == 1


async def test_the_same_event_posted_concurrently_is_one_transaction(db_url: str) -> None:
    conns = [await asyncpg.connect(db_url) for _ in range(8)]
    try:
        ids = await asyncio.gather(*(post(conn, opened("b-race")) for conn in conns))
        assert len(set(ids)) == 1
        assert await count(conns[0], "ledger_transactions") == 1
        assert await count(conns[0], "ledger_postings") == 2
    finally:
        for conn in conns:
            await conn.close()


async def test_the_same_event_with_different_postings_is_a_conflict(
    db: asyncpg.Connection,
) -> None:
    first = await post(db, opened(amount_fen=500))
    with pytest.raises(IdempotencyConflict) as caught:
        await post(db, opened(amount_fen=600))
    assert caught.value.existing_id == first
    assert await count(db, "ledger_transactions") == 1


async def test_a_reversal_negates_the_original_once(db: asyncpg.Connection) -> None:
    original = await post(db, opened(amount_fen=900))
    async with db.transaction():
        reversal = await service.reverse(db, original, memo="opened in error", now=NOW)
    async with db.transaction():
        again = await service.reverse(db, original, memo="clicked twice", now=NOW)
    assert again == reversal
    stored = await service.get(db, reversal)
    assert stored.kind is TransactionKind.REVERSAL
    assert stored.reverses == original
    assert stored.correlation_id == "b-1"
    assert stored.memo == "opened in error"
    assert await service.account_balance(db, "receivables") == 0
    assert (await service.trial_balance(db)).total_fen == 0
    assert [t.id for t in await service.transactions_of(db, "b-1")] == [original, reversal]
    with pytest.raises(UnknownTransaction):
        async with db.transaction():
            await service.reverse(db, "lt-nope", memo="", now=NOW)


async def test_posting_outside_a_transaction_is_refused(db: asyncpg.Connection) -> None:
    with pytest.raises(NotInTransaction):
        await service.post(db, opened())
    assert await count(db, "ledger_transactions") == 0


async def test_a_settlement_moves_clearing_to_bank_less_the_fee(db: asyncpg.Connection) -> None:
    await post(
        db,
        logic.bill_paid(bill_id="b-1", provider="wechatpay", amount_fen=10_000, occurred_at=NOW),
    )
    settle = logic.settlement(
        provider="wechatpay",
        settlement_ref="2026-11-27",
        gross_fen=10_000,
        fee_fen=60,
        occurred_at=NOW + timedelta(days=1),
    )
    await post(db, settle)
    assert await service.account_balance(db, "clearing:wechatpay") == 0
    assert await service.account_balance(db, "bank") == 9_940
    assert await service.account_balance(db, "provider_fees:wechatpay") == 60


async def test_money_held_in_suspense_is_a_liability_posted_once_and_refunded_out(
    db: asyncpg.Connection,
) -> None:
    assert logic.account_kind("suspense:wechat").value == "liability"
    with pytest.raises(UnknownAccount):
        logic.account_kind("suspense")
    held = logic.suspense_received(
        anomaly_id="pan-1", provider="wechat", amount_fen=400, occurred_at=NOW
    )
    first = await post(db, held)
    assert await post(db, held) == first  # the same anomaly reported again holds it once
    assert await service.account_balance(db, "suspense:wechat") == -400
    assert await service.account_balance(db, "clearing:wechat") == 400
    assert logic.held_in_suspense(await service.transactions_of(db, "pan-1"), "wechat") == 400
    await post(
        db,
        logic.suspense_refunded(
            anomaly_id="pan-1",
            provider="wechat",
            refund_ref="RF1",
            amount_fen=400,
            occurred_at=NOW + timedelta(minutes=1),
        ),
    )
    assert logic.held_in_suspense(await service.transactions_of(db, "pan-1"), "wechat") == 0
    assert await service.account_balance(db, "clearing:wechat") == 0
    assert (await service.trial_balance(db)).total_fen == 0


async def test_trial_balance_cli_prints_json_that_sums_to_zero(
    db: asyncpg.Connection, db_url: str
) -> None:
    await post(db, opened(amount_fen=1_234))
    await post(
        db, logic.bill_paid(bill_id="b-1", provider="sandbox", amount_fen=1_234, occurred_at=NOW)
    )
    uv = shutil.which("uv")
    assert uv is not None
    process = await asyncio.create_subprocess_exec(
        uv,
        "run",
        "parking",
        "ledger",
        "trial-balance",
        "--json",
        cwd=REPO,
        env={**os.environ, "PARKING_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["total_fen"] == 0
    assert {a["account"]: a["balance_fen"] for a in report["accounts"]} == {
        "clearing:sandbox": 1_234,
        "receivables": 0,
        "revenue:GZ-DEMO-01": -1_234,
    }
    receivables = next(a for a in report["accounts"] if a["account"] == "receivables")
    assert (receivables["debit_fen"], receivables["credit_fen"]) == (1_234, 1_234)


_amounts = st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=6)


@given(debits=_amounts, credits=_amounts)
def test_a_reversal_of_any_balanced_transaction_balances_and_undoes_it(
    debits: list[int], credits: list[int]
) -> None:
    # Scale the credits so both sides carry the same total, then fix the rounding on one line.
    total = sum(debits)
    scaled = [max(1, c * total // sum(credits)) for c in credits]
    scaled[0] += total - sum(scaled)
    if scaled[0] <= 0:
        return
    postings = tuple(
        [Posting(account="receivables", amount_fen=d) for d in debits]
        + [Posting(account="revenue:L1", amount_fen=-c) for c in scaled]
    )
    original = NewTransaction(
        kind=TransactionKind.BILL_OPENED,
        idempotency_key="k",
        correlation_id="k",
        postings=postings,
        occurred_at=NOW,
    )
    logic.validate(original)
    stored = Transaction(
        id="lt-x",
        kind=original.kind,
        idempotency_key="k",
        correlation_id="k",
        postings=postings,
        occurred_at=NOW,
        created_at=NOW,
        memo="",
        reverses=None,
    )
    undo = logic.reversal(stored, occurred_at=NOW)
    logic.validate(undo)
    assert logic.same_postings(
        [*postings, *undo.postings],
        [*postings, *(Posting(account=p.account, amount_fen=-p.amount_fen) for p in postings)],
    )
    assert sum(p.amount_fen for p in (*postings, *undo.postings)) == 0
