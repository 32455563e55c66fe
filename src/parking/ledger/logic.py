"""Pure ledger decisions: the chart of accounts and the postings of each business event.

Every builder returns a transaction that ``validate`` accepts, and the service
validates again before writing, so an unbalanced transaction is refused in
Python with a clear message; the database's commit-time trigger is the
backstop for code that bypasses this module.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from parking.ledger.model import (
    DEFAULT_CURRENCY,
    AccountKind,
    NewTransaction,
    Posting,
    Transaction,
    TransactionKind,
    UnbalancedTransaction,
    UnknownAccount,
)
from parking.money import Fen

# The chart of accounts: an account code is a prefix, optionally followed by
# ":" and the lot or provider it belongs to. Codes are created on first use,
# so a new lot or provider needs no set-up; a new prefix is a line here.
RECEIVABLES = "receivables"
BANK = "bank"
WRITE_OFFS = "write_offs"
REFUNDS_PAYABLE = "refunds_payable"
EQUITY = "equity"
#: Money a provider collected for us that no bill can take (a wrong amount, an
#: order we never made, a second payment of a paid bill), held against the
#: provider's clearing account until finance refunds it. A liability: we owe
#: it back. A debit balance is the other way round: money the provider paid
#: out that no bill could take (a refund confirmed for a bill in another state).
SUSPENSE = "suspense"

_KIND_OF_PREFIX: dict[str, AccountKind] = {
    RECEIVABLES: AccountKind.ASSET,
    "clearing": AccountKind.ASSET,
    BANK: AccountKind.ASSET,
    "revenue": AccountKind.REVENUE,
    # Contra-revenue: kept apart from revenue so reports show gross fees and
    # what was given back; it carries a debit balance.
    "refunds": AccountKind.REVENUE,
    "provider_fees": AccountKind.EXPENSE,
    WRITE_OFFS: AccountKind.EXPENSE,
    REFUNDS_PAYABLE: AccountKind.LIABILITY,
    SUSPENSE: AccountKind.LIABILITY,
    EQUITY: AccountKind.EQUITY,
}
# Prefixes that need an owner (a lot or a provider) and those that must not have one.
_SCOPED = frozenset({"clearing", "revenue", "refunds", "provider_fees", SUSPENSE})

_CODE = re.compile(r"([a-z][a-z_]{0,31})(?::([A-Za-z0-9_-]{1,64}))?")
_CURRENCY = re.compile(r"[A-Z]{3}")


def revenue(lot_id: str) -> str:
    return f"revenue:{lot_id}"


def refunds(lot_id: str) -> str:
    return f"refunds:{lot_id}"


def clearing(provider: str) -> str:
    return f"clearing:{provider}"


def provider_fees(provider: str) -> str:
    return f"provider_fees:{provider}"


def suspense(provider: str) -> str:
    return f"{SUSPENSE}:{provider}"


def account_kind(code: str) -> AccountKind:
    """The kind of an account code; raises UnknownAccount outside the chart."""
    match = _CODE.fullmatch(code)
    if match is None:
        raise UnknownAccount(f"{code!r} is not an account code (prefix[:owner])")
    prefix, owner = match.group(1), match.group(2)
    kind = _KIND_OF_PREFIX.get(prefix)
    if kind is None:
        raise UnknownAccount(f"{code!r}: no account prefix {prefix!r} in the chart of accounts")
    if (prefix in _SCOPED) != (owner is not None):
        need = "needs" if prefix in _SCOPED else "takes no"
        raise UnknownAccount(f"{code!r}: account {prefix!r} {need} ':owner'")
    return kind


def validate(tx: NewTransaction) -> None:
    """Raise UnbalancedTransaction (or UnknownAccount) unless ``tx`` can be posted."""
    if len(tx.postings) < 2:
        raise UnbalancedTransaction(
            f"{tx.kind} {tx.idempotency_key!r}: double entry needs at least two postings, "
            f"got {len(tx.postings)}"
        )
    totals: Counter[str] = Counter()
    for posting in tx.postings:
        account_kind(posting.account)
        if posting.amount_fen == 0:
            raise UnbalancedTransaction(
                f"{tx.kind} {tx.idempotency_key!r}: a posting to {posting.account} is 0 fen"
            )
        if _CURRENCY.fullmatch(posting.currency) is None:
            raise UnbalancedTransaction(f"{posting.currency!r} is not an ISO 4217 currency code")
        totals[posting.currency] += posting.amount_fen
    for currency, total in totals.items():
        if total != 0:
            raise UnbalancedTransaction(
                f"{tx.kind} {tx.idempotency_key!r}: {currency} postings sum to {total} fen, not 0"
            )
    if (tx.kind is TransactionKind.REVERSAL) != (tx.reverses is not None):
        raise UnbalancedTransaction("a reversal, and only a reversal, names what it reverses")
    if tx.occurred_at.tzinfo is None:
        raise ValueError("occurred_at needs an aware datetime")


def same_postings(a: Iterable[Posting], b: Iterable[Posting]) -> bool:
    """Equal as multisets: the order of lines carries no meaning."""
    return Counter((p.account, p.currency, p.amount_fen) for p in a) == Counter(
        (p.account, p.currency, p.amount_fen) for p in b
    )


def _pair(debit: str, credit: str, amount_fen: Fen) -> tuple[Posting, ...]:
    if amount_fen <= 0:
        raise UnbalancedTransaction(f"an amount to move must be > 0 fen, got {amount_fen}")
    return (
        Posting(account=debit, amount_fen=amount_fen, currency=DEFAULT_CURRENCY),
        Posting(account=credit, amount_fen=-amount_fen, currency=DEFAULT_CURRENCY),
    )


def bill_opened(
    *, bill_id: str, lot_id: str, amount_fen: Fen, occurred_at: datetime, memo: str = ""
) -> NewTransaction:
    """The driver owes the fee, which the lot has earned: receivables / revenue:{lot}."""
    return NewTransaction(
        kind=TransactionKind.BILL_OPENED,
        idempotency_key=bill_id,
        correlation_id=bill_id,
        postings=_pair(RECEIVABLES, revenue(lot_id), amount_fen),
        occurred_at=occurred_at,
        memo=memo,
    )


def bill_paid(
    *,
    bill_id: str,
    provider: str,
    amount_fen: Fen,
    occurred_at: datetime,
    memo: str = "",
) -> NewTransaction:
    """The provider holds the money now: clearing:{provider} / receivables.

    Keyed by the bill, not the payment: a bill is paid at most once, so a
    second payment of it can never reach the ledger as a payment of the bill.
    """
    return NewTransaction(
        kind=TransactionKind.BILL_PAID,
        idempotency_key=bill_id,
        correlation_id=bill_id,
        postings=_pair(clearing(provider), RECEIVABLES, amount_fen),
        occurred_at=occurred_at,
        memo=memo,
    )


def refund(
    *,
    bill_id: str,
    lot_id: str,
    provider: str,
    refund_ref: str,
    amount_fen: Fen,
    occurred_at: datetime,
    memo: str = "",
) -> NewTransaction:
    """Money goes back through the provider that took it: refunds:{lot} / clearing:{provider}.

    Keyed by the provider's refund reference, so one bill can have several
    partial refunds and each posts exactly once.
    """
    return NewTransaction(
        kind=TransactionKind.REFUND,
        idempotency_key=f"{provider}:{refund_ref}",
        correlation_id=bill_id,
        postings=_pair(refunds(lot_id), clearing(provider), amount_fen),
        occurred_at=occurred_at,
        memo=memo,
    )


def suspense_received(
    *,
    anomaly_id: str,
    provider: str,
    amount_fen: Fen,
    occurred_at: datetime,
    memo: str = "",
) -> NewTransaction:
    """A provider collected money no bill can take: clearing:{provider} / suspense:{provider}.

    Keyed by the anomaly that records why, so however often the provider
    reports it the money is held once; the anomaly is its correlation id.
    """
    return NewTransaction(
        kind=TransactionKind.SUSPENSE,
        idempotency_key=anomaly_id,
        correlation_id=anomaly_id,
        postings=_pair(clearing(provider), suspense(provider), amount_fen),
        occurred_at=occurred_at,
        memo=memo,
    )


def suspense_refunded(
    *,
    anomaly_id: str,
    provider: str,
    refund_ref: str,
    amount_fen: Fen,
    occurred_at: datetime,
    memo: str = "",
) -> NewTransaction:
    """The provider paid out money held in suspense: suspense:{provider} / clearing:{provider}.

    Also how a refund the provider confirmed but no bill could take is
    recorded (the suspense account then shows a debit for finance). A refund
    like any other (keyed by the provider's refund reference), correlated
    with the anomaly instead of a bill.
    """
    return NewTransaction(
        kind=TransactionKind.REFUND,
        idempotency_key=f"{provider}:{refund_ref}",
        correlation_id=anomaly_id,
        postings=_pair(suspense(provider), clearing(provider), amount_fen),
        occurred_at=occurred_at,
        memo=memo,
    )


def held_in_suspense(transactions: Iterable[Transaction], provider: str) -> Fen:
    """What ``transactions`` (an anomaly's) hold in suspense:{provider}, as a positive amount."""
    account = suspense(provider)
    return -sum(p.amount_fen for tx in transactions for p in tx.postings if p.account == account)


def write_off(
    *, bill_id: str, amount_fen: Fen, occurred_at: datetime, memo: str = ""
) -> NewTransaction:
    """The receivable will not be collected: write_offs / receivables."""
    return NewTransaction(
        kind=TransactionKind.WRITE_OFF,
        idempotency_key=bill_id,
        correlation_id=bill_id,
        postings=_pair(WRITE_OFFS, RECEIVABLES, amount_fen),
        occurred_at=occurred_at,
        memo=memo,
    )


def settlement(
    *,
    provider: str,
    settlement_ref: str,
    gross_fen: Fen,
    fee_fen: Fen,
    occurred_at: datetime,
    memo: str = "",
    correlation_ref: str | None = None,
) -> NewTransaction:
    """A provider paid out its clearing balance less its fee: bank + provider_fees / clearing.

    ``correlation_ref`` ties several settlements of one statement day together (a
    later tranche settles what a resolution made matchable); ``settlement_ref`` by default.
    """
    if fee_fen < 0 or fee_fen >= gross_fen:
        raise UnbalancedTransaction(f"a fee of {fee_fen} fen on {gross_fen} fen settled")
    postings = [
        Posting(account=BANK, amount_fen=gross_fen - fee_fen),
        Posting(account=clearing(provider), amount_fen=-gross_fen),
    ]
    if fee_fen:
        postings.insert(1, Posting(account=provider_fees(provider), amount_fen=fee_fen))
    return NewTransaction(
        kind=TransactionKind.SETTLEMENT,
        idempotency_key=f"{provider}:{settlement_ref}",
        correlation_id=f"{provider}:{correlation_ref or settlement_ref}",
        postings=tuple(postings),
        occurred_at=occurred_at,
        memo=memo,
    )


def reversal(original: Transaction, *, occurred_at: datetime, memo: str = "") -> NewTransaction:
    """Cancel ``original`` by posting its negation; keyed by it, so it is reversed at most once."""
    return NewTransaction(
        kind=TransactionKind.REVERSAL,
        idempotency_key=original.id,
        correlation_id=original.correlation_id,
        postings=tuple(
            Posting(account=p.account, amount_fen=-p.amount_fen, currency=p.currency)
            for p in original.postings
        ),
        occurred_at=occurred_at,
        memo=memo,
        reverses=original.id,
    )
