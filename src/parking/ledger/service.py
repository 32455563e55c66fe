"""Ledger use cases. Each runs in the caller's transaction and never commits.

The ledger is append-only double entry: posting is idempotent on the business
event, a mistake is corrected by a reversal, and the database refuses an
unbalanced transaction at commit and any UPDATE, DELETE or TRUNCATE.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parking.ids import new_id
from parking.ledger import logic, store
from parking.ledger.model import (
    DEFAULT_CURRENCY,
    Account,
    IdempotencyConflict,
    LedgerError,
    NewTransaction,
    NotInTransaction,
    Transaction,
    TransactionKind,
    TrialBalance,
    UnknownTransaction,
)
from parking.money import Fen


def require_transaction(conn: asyncpg.Connection, use_case: str) -> None:
    """Refuse to run a multi-statement use case in autocommit mode.

    Outside a transaction every statement would commit alone: a ledger
    transaction row would commit before its postings (and be refused by the
    balance trigger), a bill would change status without its ledger entry.
    """
    if not conn.is_in_transaction():
        raise NotInTransaction(f"{use_case} runs in the caller's transaction; open one first")


async def post(conn: asyncpg.Connection, tx: NewTransaction) -> str:
    """Post ``tx`` and return its id; idempotent on (kind, idempotency_key).

    A second post of the same event, also a concurrent one from another
    connection, returns the id of the first and writes nothing; if its postings
    differ it raises IdempotencyConflict. Runs in the caller's transaction,
    which must be open.
    """
    require_transaction(conn, "ledger.post")
    logic.validate(tx)
    await store.ensure_accounts(
        conn,
        [
            Account(code=code, kind=logic.account_kind(code))
            for code in {p.account for p in tx.postings}
        ],
    )
    tx_id = new_id("lt", tx.occurred_at)
    if await store.insert_transaction(conn, tx_id, tx):
        await store.insert_postings(conn, tx_id, tx.postings)
        return tx_id
    existing = await store.transaction_by_key(conn, tx.kind, tx.idempotency_key)
    if existing is None:
        # ON CONFLICT waited for the other insert to commit, so under READ
        # COMMITTED its row is visible to this next statement; under REPEATABLE
        # READ PostgreSQL raises a serialization failure before we get here.
        raise LedgerError(f"{tx.kind} {tx.idempotency_key!r} conflicted but cannot be read")
    if (
        not logic.same_postings(existing.postings, tx.postings)
        or existing.correlation_id != tx.correlation_id
        or existing.reverses != tx.reverses
    ):
        raise IdempotencyConflict(tx.kind, tx.idempotency_key, existing.id)
    return existing.id


async def reverse(
    conn: asyncpg.Connection, transaction_id: str, *, memo: str, now: datetime
) -> str:
    """Post the negation of a transaction and return the reversal's id.

    Idempotent: a transaction is reversed at most once, and reversing it again
    returns the first reversal. Runs in the caller's transaction.
    """
    require_transaction(conn, "ledger.reverse")
    original = await store.transaction_by_id(conn, transaction_id)
    if original is None:
        raise UnknownTransaction(transaction_id)
    return await post(conn, logic.reversal(original, occurred_at=now, memo=memo))


async def find(
    conn: asyncpg.Connection, kind: TransactionKind, idempotency_key: str
) -> Transaction | None:
    """The transaction posted for a business event, if any."""
    return await store.transaction_by_key(conn, kind, idempotency_key)


async def get(conn: asyncpg.Connection, transaction_id: str) -> Transaction:
    found = await store.transaction_by_id(conn, transaction_id)
    if found is None:
        raise UnknownTransaction(transaction_id)
    return found


async def transactions_of(conn: asyncpg.Connection, correlation_id: str) -> list[Transaction]:
    """Every transaction of one business object (a bill id), in the order they were posted."""
    return await store.transactions_of(conn, correlation_id)


async def trial_balance(conn: asyncpg.Connection) -> TrialBalance:
    """Balances of every account that has postings, from one snapshot.

    A full scan of the postings: fine for a daily report and for tests; a
    dashboard that needs it often should keep running balances instead.
    """
    accounts = await store.balances(conn)
    return TrialBalance(accounts=tuple(accounts), total_fen=sum(a.balance_fen for a in accounts))


async def account_balance(
    conn: asyncpg.Connection, code: str, *, currency: str = DEFAULT_CURRENCY
) -> Fen:
    """Debit-positive balance of one account (0 for an account never used)."""
    return await store.account_balance(conn, code, currency)
