"""Ledger values and errors.

Sign convention: a posting's ``amount_fen`` is positive for a debit and
negative for a credit. A transaction balances when its postings sum to zero
per currency; an account's balance is the plain sum of its postings, so asset
and expense accounts are normally positive and revenue, liability and equity
accounts normally negative.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec

from parking.errors import ParkingError
from parking.money import Fen

DEFAULT_CURRENCY = "CNY"


class AccountKind(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"
    EXPENSE = "expense"
    EQUITY = "equity"


class TransactionKind(StrEnum):
    """The business event that moved money; one transaction per (kind, idempotency key)."""

    BILL_OPENED = "bill_opened"
    BILL_PAID = "bill_paid"
    REFUND = "refund"
    WRITE_OFF = "write_off"
    REVERSAL = "reversal"
    SETTLEMENT = "settlement"
    #: money a provider collected that no bill can take, held until finance refunds it
    SUSPENSE = "suspense"


class Account(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    kind: AccountKind


class Posting(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    #: positive = debit, negative = credit; never zero
    amount_fen: Fen
    currency: str = DEFAULT_CURRENCY


class NewTransaction(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction to post; built by ``parking.ledger.logic``, balanced by construction."""

    kind: TransactionKind
    #: with ``kind``, names the business event; a second post of the same event is a no-op
    idempotency_key: str
    #: the business object every transaction of it shares (a bill id)
    correlation_id: str
    postings: tuple[Posting, ...]
    occurred_at: datetime
    memo: str = ""
    reverses: str | None = None


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """A posted transaction, as stored."""

    id: str
    kind: TransactionKind
    idempotency_key: str
    correlation_id: str
    postings: tuple[Posting, ...]
    occurred_at: datetime
    created_at: datetime
    memo: str
    reverses: str | None


class AccountBalance(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    kind: AccountKind
    currency: str
    debit_fen: Fen
    #: the sum of the credits, as a positive number
    credit_fen: Fen
    #: debit_fen - credit_fen
    balance_fen: Fen


class TrialBalance(msgspec.Struct, frozen=True, kw_only=True):
    accounts: tuple[AccountBalance, ...]
    #: the sum of every balance; 0 whenever the ledger is intact
    total_fen: Fen


class LedgerError(ParkingError):
    """Base of the ledger's errors."""


class UnbalancedTransaction(LedgerError):
    """Postings that do not sum to zero per currency, fewer than two, or a zero amount."""


class UnknownAccount(LedgerError):
    """An account code outside the chart of accounts."""


class UnknownTransaction(LedgerError):
    def __init__(self, transaction_id: str) -> None:
        self.transaction_id = transaction_id
        super().__init__(f"no ledger transaction {transaction_id!r}")


class IdempotencyConflict(LedgerError):
    """The business event was already posted, with different postings."""

    def __init__(self, kind: TransactionKind, idempotency_key: str, existing_id: str) -> None:
        self.kind = kind
        self.idempotency_key = idempotency_key
        self.existing_id = existing_id
        super().__init__(
            f"{kind} {idempotency_key!r} was already posted as {existing_id} "
            "with different postings"
        )


class NotInTransaction(ParkingError):
    """A use case that must run inside the caller's database transaction was called outside one."""
