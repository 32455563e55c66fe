"""Paying bills: open an attempt for the bills a driver (or a friend paying by
plate) chose, ask the provider for the order, and read a payment back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from parking.bills import service as bills
from parking.bills.model import (
    Bill,
    UnknownBill,
)
from parking.errors import InvalidInput
from parking.ids import new_id
from parking.payments import logic, port, store
from parking.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    BillShare,
    IdempotencyKeyReused,
    Payer,
    PaymentInProgress,
    PaymentView,
    UnknownAttempt,
    view_of,
)
from parking.payments.notifications import give_up, settle_from_status
from parking.payments.port import (
    H5Scene,
    OrderNotFound,
    PaymentProvider,
    ProviderRejected,
)
from parking.payments.txn import SYSTEM_ACTOR, payer_owns, transaction


async def pay(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    *,
    bill_ids: Sequence[str],
    payer: Payer,
    idempotency_key: str,
    notify_url: str,
    now: datetime,
    ttl: timedelta = logic.ORDER_TTL,
    h5: H5Scene | None = None,
) -> PaymentView:
    """Create (or return again) the provider order paying ``bill_ids``: its code_url is the QR code,
    or with ``h5`` (a payment in the phone's browser) the provider's cashier page,
    which sends the browser back to ``h5.return_url``.

    Idempotent on (payer, idempotency_key): the same request again returns the
    same attempt and asks the provider for the same out_trade_no (another
    request with that key raises IdempotencyKeyReused). The bills must be the
    payer's (else UnknownBill, which the API answers 404) and owed: open, or
    paying by an order that can no longer be paid (PaymentInProgress while one
    can). Commits the attempt and marks the bills paying before calling the
    provider; raises ProviderUnavailable (retry with the same key) or
    ProviderRejected (the attempt failed, the bills are open again).
    """
    ids = sorted(set(bill_ids))
    if not ids or len(ids) > logic.MAX_BILLS_PER_PAYMENT:
        raise InvalidInput(f"pay 1 to {logic.MAX_BILLS_PER_PAYMENT} bills at a time")
    if h5 is not None and not provider.pays_in_browser:
        raise InvalidInput(f"{provider.name} cannot be paid in the browser here: pay by QR code")
    kind = AttemptKind.NATIVE if h5 is None else AttemptKind.H5
    scope = payer.scope
    async with transaction(pool) as conn:
        attempt = await store.attempt_by_idempotency_key(conn, scope, idempotency_key)
        if attempt is None:
            attempt = await open_attempt(
                conn,
                provider.name,
                ids,
                payer=payer,
                idempotency=(scope, idempotency_key),
                kind=kind,
                expires_at=now.replace(microsecond=0) + ttl,
                now=now,
            )
        elif not logic.same_request(attempt, provider=provider.name, bill_ids=ids, kind=kind):
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key!r} was used to pay other bills"
            )
        described = logic.description([await bills.get(conn, bill_id) for bill_id in ids])
    if attempt.code_url is not None or attempt.status is not AttemptStatus.PENDING:
        return view_of(attempt)
    # The attempt is committed: from here a crash is healed by a retry with the
    # same key, which finds it and asks for the same out_trade_no again.
    try:
        order = await provider.create_order(
            attempt.out_trade_no,
            attempt.amount_fen,
            described,
            notify_url,
            attach=attempt.id,
            expires_at=attempt.expires_at,
            h5=h5,
        )
    except ProviderRejected as exc:
        await _order_refused(pool, provider, attempt, exc, now=now)
        raise
    async with transaction(pool) as conn:
        await store.record_order(
            conn, attempt.id, code_url=order.code_url, provider_state="NOTPAY", now=now
        )
        recorded = await store.attempt(conn, attempt.id)
    assert recorded is not None
    return view_of(recorded)


async def open_attempt(
    conn: asyncpg.Connection,
    provider: str,
    bill_ids: Sequence[str],
    *,
    payer: Payer,
    idempotency: tuple[str, str] | None,
    kind: AttemptKind,
    expires_at: datetime,
    now: datetime,
) -> Attempt:
    owned: list[Bill] = []
    for bill_id in bill_ids:
        bill = await bills.get(conn, bill_id)
        if not await payer_owns(conn, bill, payer):
            # Not yours and not there look the same (the API answers 404).
            raise UnknownBill(bill_id)
        owned.append(bill)
    attempt_id = new_id("pa", now)
    # Lock every bill (in id order) before looking at who else pays it: a
    # concurrent pay() of the same bill waits here, then sees our attempt.
    for bill in owned:
        await bills.mark_paying(conn, bill.id, actor=f"{SYSTEM_ACTOR}:{attempt_id}", now=now)
    pending = await store.pending_attempts_of_bills(conn, bill_ids)
    for bill in owned:
        blocker = logic.blocking_attempt(bill.id, pending, now)
        if blocker is not None:
            raise PaymentInProgress(bill.id, blocker.id)
    return await store.insert_attempt(
        conn,
        attempt_id=attempt_id,
        provider=provider,
        kind=kind,
        out_trade_no=logic.out_trade_no(attempt_id),
        amount_fen=sum(bill.amount_fen for bill in owned),
        payer_account_id=payer.account_id,
        payer_plate=payer.plate,
        idempotency_scope=None if idempotency is None else idempotency[0],
        idempotency_key=None if idempotency is None else idempotency[1],
        shares=[BillShare(bill_id=bill.id, amount_fen=bill.amount_fen) for bill in owned],
        expires_at=expires_at,
        now=now,
    )


async def _order_refused(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    attempt: Attempt,
    exc: ProviderRejected,
    *,
    now: datetime,
) -> None:
    """create_order was refused. A retry of an order paid meanwhile is refused too (ORDERPAID):
    ask what the order is before giving the bills back."""
    try:
        status = await provider.query_order(attempt.out_trade_no)
    except OrderNotFound:
        status = None
    except port.ProviderError:
        return  # the sweeper finds out later
    if status is not None and status.state in port.PAID_STATES:
        await settle_from_status(pool, provider, status, now=now)
        return
    async with transaction(pool) as conn:
        locked = await store.attempt(conn, attempt.id, lock=True)
        if locked is not None and locked.status is AttemptStatus.PENDING:
            await give_up(
                conn, locked, AttemptStatus.FAILED, failure=f"{exc.code}: {exc.message}", now=now
            )


async def payment(conn: asyncpg.Connection, attempt_id: str, *, payer: Payer) -> PaymentView:
    """One of the payer's attempts (UnknownAttempt for anyone else's)."""
    found = await store.attempt(conn, attempt_id)
    if found is None:
        raise UnknownAttempt(attempt_id)
    if payer.account_id is not None:
        mine = found.payer_account_id == payer.account_id
    else:
        mine = found.payer_plate == payer.plate
    if not mine:
        raise UnknownAttempt(attempt_id)
    return view_of(found)


async def paid_by(conn: asyncpg.Connection, bill_id: str, account_id: str) -> bool:
    """Whether the account paid the bill: a receipt is its payer's."""
    return await store.paid_by(conn, bill_id, account_id)


async def exists(conn: asyncpg.Connection, attempt_id: str) -> bool:
    """Whether a payment with this id exists, whoever's (for the audit of a refusal)."""
    return await store.attempt_exists(conn, attempt_id)
