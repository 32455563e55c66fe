"""Ledger SQL (and nothing else). Every function runs in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from parking.ledger.model import (
    Account,
    AccountBalance,
    AccountKind,
    NewTransaction,
    Posting,
    Transaction,
    TransactionKind,
)
from parking.money import Fen


async def ensure_accounts(conn: asyncpg.Connection, accounts: Sequence[Account]) -> None:
    # Sorted, so two transactions creating the same new accounts lock them in
    # the same order and cannot deadlock on each other's inserts.
    await conn.executemany(
        "INSERT INTO ledger_accounts (code, kind) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING",
        sorted((a.code, a.kind.value) for a in accounts),
    )


async def insert_transaction(conn: asyncpg.Connection, tx_id: str, tx: NewTransaction) -> bool:
    """Insert the transaction row; False when (kind, idempotency_key) already exists.

    ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to
    commit or roll back and then skips, instead of raising a unique violation
    that would abort the caller's whole transaction.
    """
    inserted: str | None = await conn.fetchval(
        """INSERT INTO ledger_transactions
               (id, kind, idempotency_key, correlation_id, reverses, occurred_at, memo)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (kind, idempotency_key) DO NOTHING
           RETURNING id""",
        tx_id,
        tx.kind.value,
        tx.idempotency_key,
        tx.correlation_id,
        tx.reverses,
        tx.occurred_at,
        tx.memo,
    )
    return inserted is not None


async def insert_postings(
    conn: asyncpg.Connection, tx_id: str, postings: Sequence[Posting]
) -> None:
    await conn.executemany(
        """INSERT INTO ledger_postings (transaction_id, line, account_code, amount_fen, currency)
           VALUES ($1, $2, $3, $4, $5)""",
        [
            (tx_id, line, p.account, p.amount_fen, p.currency)
            for line, p in enumerate(postings, start=1)
        ],
    )


_SELECT_TRANSACTION = """
    SELECT t.id, t.kind, t.idempotency_key, t.correlation_id, t.reverses, t.occurred_at,
           t.created_at, t.memo,
           array_agg(p.account_code ORDER BY p.line) AS accounts,
           array_agg(p.amount_fen ORDER BY p.line) AS amounts,
           array_agg(p.currency ORDER BY p.line) AS currencies
      FROM ledger_transactions t
      JOIN ledger_postings p ON p.transaction_id = t.id
"""


def _transaction(row: asyncpg.Record) -> Transaction:
    return Transaction(
        id=row["id"],
        kind=TransactionKind(row["kind"]),
        idempotency_key=row["idempotency_key"],
        correlation_id=row["correlation_id"],
        reverses=row["reverses"],
        occurred_at=row["occurred_at"],
        created_at=row["created_at"],
        memo=row["memo"],
        postings=tuple(
            Posting(account=account, amount_fen=amount, currency=currency)
            for account, amount, currency in zip(
                row["accounts"], row["amounts"], row["currencies"], strict=True
            )
        ),
    )


async def transaction_by_id(conn: asyncpg.Connection, tx_id: str) -> Transaction | None:
    row = await conn.fetchrow(_SELECT_TRANSACTION + " WHERE t.id = $1 GROUP BY t.id", tx_id)
    return None if row is None else _transaction(row)


async def transaction_by_key(
    conn: asyncpg.Connection, kind: TransactionKind, idempotency_key: str
) -> Transaction | None:
    row = await conn.fetchrow(
        _SELECT_TRANSACTION + " WHERE t.kind = $1 AND t.idempotency_key = $2 GROUP BY t.id",
        kind.value,
        idempotency_key,
    )
    return None if row is None else _transaction(row)


async def transactions_of(conn: asyncpg.Connection, correlation_id: str) -> list[Transaction]:
    rows = await conn.fetch(
        _SELECT_TRANSACTION + " WHERE t.correlation_id = $1 GROUP BY t.id ORDER BY t.seq",
        correlation_id,
    )
    return [_transaction(row) for row in rows]


async def balances(conn: asyncpg.Connection) -> list[AccountBalance]:
    # One statement, so the balances come from one snapshot and sum to zero
    # even while other transactions commit.
    rows = await conn.fetch(
        """SELECT a.code, a.kind, p.currency,
                  coalesce(sum(p.amount_fen) FILTER (WHERE p.amount_fen > 0), 0) AS debit,
                  coalesce(-sum(p.amount_fen) FILTER (WHERE p.amount_fen < 0), 0) AS credit
             FROM ledger_postings p
             JOIN ledger_accounts a ON a.code = p.account_code
            GROUP BY a.code, a.kind, p.currency
            ORDER BY a.code, p.currency"""
    )
    return [
        AccountBalance(
            account=row["code"],
            kind=AccountKind(row["kind"]),
            currency=row["currency"],
            debit_fen=int(row["debit"]),
            credit_fen=int(row["credit"]),
            balance_fen=int(row["debit"]) - int(row["credit"]),
        )
        for row in rows
    ]


async def account_balance(conn: asyncpg.Connection, code: str, currency: str) -> Fen:
    total = await conn.fetchval(
        "SELECT coalesce(sum(amount_fen), 0) FROM ledger_postings "
        "WHERE account_code = $1 AND currency = $2",
        code,
        currency,
    )
    return int(total)
