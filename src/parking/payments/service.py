"""Payment use cases: pay, notifications, refunds and disputes, contactless deductions.

Two kinds of use case live here:

- those that talk to a provider take the pool (``pay``, ``handle_notification``,
  ``approve_dispute``, ``refund_anomaly``, ``on_bill_opened``, ``enable_mandate``,
  and the sweeper's steps). They never hold a database transaction across a provider call:
  first a short transaction commits what is about to be asked (the attempt or
  refund request, with its fixed out_trade_no / out_refund_no), then the
  provider is called, then a second transaction records the answer. A crash
  in between leaves a committed request that a retry (or the sweeper) sends
  again with the same number, which the provider de-duplicates;
- those that only touch the database take a connection and run in the
  caller's transaction (``open_dispute``, ``reject_dispute``, ``disable_mandate``,
  the idempotency-key steps, the finance lists). They never commit.

Every status change of a bill goes through ``parking.bills.service``, which
posts its ledger transaction in the same database transaction, so a bill and
the ledger never disagree, whatever is killed when (reliability matrix P2).
Money that no bill can take (a wrong amount, an order we never made, a second
payment of a paid bill, a refund its bill cannot take) is posted here, against
suspense:{provider}, in the transaction that records its anomaly: nothing a
provider reports moving money is off the ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, cast

import asyncpg
import httpx
import msgspec
import structlog

from parking.accounts import service as accounts
from parking.bills import service as bills
from parking.bills.model import (
    Bill,
    BillAlreadyPaid,
    BillError,
    BillStatus,
    IllegalBillTransition,
    InvalidAmount,
    RefundExceedsAmount,
    UnknownBill,
)
from parking.clock import Clock
from parking.errors import Conflict, InvalidInput
from parking.ids import new_id
from parking.ledger import logic as ledger_logic
from parking.ledger import service as ledger
from parking.ledger.model import TransactionKind
from parking.payments import logic, port, store
from parking.payments.model import (
    Anomaly,
    AnomalyAction,
    AnomalyKind,
    AnomalyRefund,
    AnomalyStatus,
    Attempt,
    AttemptKind,
    AttemptStatus,
    BillShare,
    Deduction,
    DeductionStatus,
    Dispute,
    DisputeClosed,
    DisputeStatus,
    DisputeView,
    IdempotencyKeyReused,
    Mandate,
    MandateNotAuthorised,
    MandateState,
    NewAnomaly,
    NotContactless,
    NothingToRefund,
    Payer,
    PaymentInProgress,
    PaymentView,
    Proceed,
    RefundRequest,
    RefundStatus,
    Replay,
    StoredResponse,
    UnknownAnomaly,
    UnknownAttempt,
    UnknownDispute,
    UnknownProvider,
    view_of,
)
from parking.payments.port import (
    ContactlessProvider,
    NotificationReply,
    OrderNotFound,
    OrderStatus,
    PaymentClosed,
    PaymentFailed,
    PaymentProvider,
    PaymentRepaid,
    PaymentSucceeded,
    ProviderEvent,
    ProviderRejected,
    ProviderUnavailable,
    RefundFailed,
    RefundSucceeded,
    StaleNotification,
)
from parking.payments.providers import alipay, wechat
from parking.payments.wire import NotificationRejected, WireError

log = structlog.get_logger("parking.payments")

#: Names the file of an Alipay adapter configuration (there is no local Alipay sandbox).
ALIPAY_CONFIG_ENV: Final = "PARKING_ALIPAY_CONFIG"
#: The public base URL providers post notifications to (the API behind its
#: proxy); defaults to the API's own address, right for the local sandbox.
NOTIFY_BASE_ENV: Final = "PARKING_NOTIFY_BASE_URL"
#: Who the flow's own bill events and audit rows name.
SYSTEM_ACTOR: Final = "payments"
#: WeChat's refund ``reason`` is at most 80 characters.
_REFUND_REASON_MAX: Final = 80

#: Errors meaning "the database went away mid-use-case": the transaction was
#: rolled back, nothing was applied, the provider will send it again.
_DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


# --------------------------------------------------------------------------- wiring


def build_providers(
    env: Mapping[str, str], stack_dir: Path, *, http: httpx.AsyncClient, clock: Clock
) -> dict[str, PaymentProvider]:
    """The configured provider adapters by name, for the API lifespan and the sweeper process.

    This (with the API's lifespan that calls it) is where adapters are
    constructed: WeChat Pay from ``$PARKING_WECHATPAY_CONFIG`` or else the
    local sandbox's ``merchant.json``; Alipay only from ``$PARKING_ALIPAY_CONFIG``.
    A missing file leaves the provider out (logged); a broken one raises.
    """
    providers: dict[str, PaymentProvider] = {}
    path = wechat.config_path(env, stack_dir)
    if path.exists():
        adapter = wechat.WechatPayProvider.from_config(
            wechat.load_config(path), http=http, clock=clock
        )
        providers[adapter.name] = adapter
    else:
        log.warning("no WeChat Pay configuration; start the sandbox or set it", path=str(path))
    alipay_path = env.get(ALIPAY_CONFIG_ENV)
    if alipay_path:
        ali = alipay.AlipayProvider.from_config(
            alipay.load_config(Path(alipay_path)), http=http, clock=clock
        )
        providers[ali.name] = ali
    return providers


def notify_base_url(env: Mapping[str, str], *, api_host: str, api_port: int) -> str:
    return env.get(NOTIFY_BASE_ENV) or f"http://{api_host}:{api_port}"


def _contactless(provider: PaymentProvider) -> ContactlessProvider:
    if not isinstance(provider, ContactlessProvider):
        raise NotContactless(f"{provider.name} has no contactless rail")
    return provider


@asynccontextmanager
async def _transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        async with conn.transaction():
            yield conn


@asynccontextmanager
async def _connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as proxy:
        yield cast(asyncpg.Connection, proxy)


# --------------------------------------------------------------------------- idempotency keys


async def claim_idempotency_key(
    conn: asyncpg.Connection,
    *,
    scope: str,
    key: str,
    endpoint: str,
    request_hash: str,
    now: datetime,
) -> Proceed | Replay:
    """Start a request under an idempotency key (Stripe semantics). Autocommit, no transaction.

    Proceed: the key is new (or was left in flight by a crashed request past
    its lease); run the request, then ``complete_idempotency_key`` or
    ``release_idempotency_key``. Replay: answer the stored response. Raises
    IdempotencyKeyReused (another body) or IdempotencyKeyInFlight.
    The new key's row is committed before this returns, so a concurrent
    retry sees it in flight.
    """
    if await store.insert_idempotency_key(
        conn, scope=scope, key=key, endpoint=endpoint, request_hash=request_hash, now=now
    ):
        return Proceed()
    async with conn.transaction():
        existing = await store.idempotency_key(conn, scope, key, lock=True)
        if existing is None:  # released between our insert and this read: try once more
            if await store.insert_idempotency_key(
                conn, scope=scope, key=key, endpoint=endpoint, request_hash=request_hash, now=now
            ):
                return Proceed()
            raise Conflict(f"idempotency key {key!r} is changing hands; retry")
        if existing.endpoint != endpoint:
            raise IdempotencyKeyReused(f"idempotency key {key!r} was used on {existing.endpoint}")
        decision = logic.claim_decision(existing, request_hash=request_hash, now=now)
        if isinstance(decision, Proceed):
            await store.relock_idempotency_key(conn, scope, key, now)
        return decision


async def complete_idempotency_key(
    conn: asyncpg.Connection, *, scope: str, key: str, response: StoredResponse, now: datetime
) -> None:
    """Store the response every retry with the key will get (2xx, or a 4xx problem)."""
    await store.complete_idempotency_key(
        conn, scope, key, status=response.status, body=response.body, now=now
    )


async def release_idempotency_key(conn: asyncpg.Connection, *, scope: str, key: str) -> None:
    """Forget an in-flight key whose request failed for a passing reason (5xx): retry runs anew."""
    await store.release_idempotency_key(conn, scope, key)


async def prune_idempotency_keys(pool: asyncpg.Pool, *, now: datetime) -> int:
    """Forget completed keys older than IDEMPOTENCY_KEY_TTL; how many were removed."""
    async with _connection(pool) as conn:
        return await store.prune_idempotency_keys(
            conn, created_before=now - logic.IDEMPOTENCY_KEY_TTL
        )


# --------------------------------------------------------------------------- paying


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
) -> PaymentView:
    """Create (or return again) the provider order paying ``bill_ids``: its code_url is the QR code.

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
    scope = payer.scope
    async with _transaction(pool) as conn:
        attempt = await store.attempt_by_idempotency_key(conn, scope, idempotency_key)
        if attempt is None:
            attempt = await _open_attempt(
                conn,
                provider.name,
                ids,
                payer=payer,
                idempotency=(scope, idempotency_key),
                kind=AttemptKind.NATIVE,
                expires_at=now.replace(microsecond=0) + ttl,
                now=now,
            )
        elif not logic.same_request(attempt, provider=provider.name, bill_ids=ids):
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
        )
    except ProviderRejected as exc:
        await _order_refused(pool, provider, attempt, exc, now=now)
        raise
    async with _transaction(pool) as conn:
        await store.record_order(
            conn, attempt.id, code_url=order.code_url, provider_state="NOTPAY", now=now
        )
        recorded = await store.attempt(conn, attempt.id)
    assert recorded is not None
    return view_of(recorded)


async def _open_attempt(
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
        if not await _owned(conn, bill, payer):
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
    async with _transaction(pool) as conn:
        locked = await store.attempt(conn, attempt.id, lock=True)
        if locked is not None and locked.status is AttemptStatus.PENDING:
            await _give_up(
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


# --------------------------------------------------------------------------- notifications


class _Outcome(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    #: refund requests created here, to send to the provider after the commit
    refunds: tuple[str, ...] = ()


async def handle_notification(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    *,
    refund_notify_url: str | None = None,
) -> NotificationReply:
    """Verify, record once and apply one provider notification; the exact reply to send back.

    - Not authentic (bad signature, tampered body, foreign merchant): failure
      as a 401 (`PaymentProvider.rejection_reply`), nothing recorded (the
      provider re-sends; an attacker gets nothing).
    - Authentic but outside the replay window (StaleNotification): success
      only if that notification id was processed before (P5), else failure.
    - Authentic: inserted into the inbox and applied in one transaction; a
      copy (re-send, duplicate, one of ten concurrent deliveries) finds the
      inbox row and is answered success without being applied again (P3).
      Anomalies (unknown order, wrong amount, refund before payment, a refund
      the bill cannot take...) are recorded and answered success: sending them
      again would change nothing. Money in them that no bill can take is
      posted to suspense:{provider} in the same transaction.
    - The database failing mid-way rolls everything back and answers
      failure: the provider re-sends and the retry applies it (P2).
    """
    try:
        event = provider.parse_notification(headers, body, now)
    except StaleNotification as exc:
        try:
            async with _connection(pool) as conn:
                seen = await store.notification_processed(conn, provider.name, exc.notification_id)
        except _DB_ERRORS:
            seen = False
        log.warning(
            "stale notification",
            provider=provider.name,
            notification_id=exc.notification_id,
            already_processed=seen,
        )
        # Not processed before: a replay of an old capture, refused like a forgery.
        return provider.notification_reply(True) if seen else provider.rejection_reply()
    except NotificationRejected as exc:
        log.warning("notification rejected", provider=provider.name, reason=str(exc))
        return provider.rejection_reply()
    except WireError as exc:
        # Authentic-looking but undecodable: keep it for a person; answer
        # failure so the provider re-sends (the same bytes: one anomaly).
        await _record_malformed(pool, provider.name, body, str(exc), now)
        return provider.notification_reply(False)
    try:
        outcome = await _apply_notification(pool, provider.name, event, now)
    except _DB_ERRORS as exc:
        log.warning(
            "notification not applied; the provider will re-send it",
            provider=provider.name,
            notification_id=event.notification_id,
            error=repr(exc),
        )
        return provider.notification_reply(False)
    except Exception:
        log.exception(
            "notification failed", provider=provider.name, notification_id=event.notification_id
        )
        return provider.notification_reply(False)
    log.info(
        "notification",
        provider=provider.name,
        notification_id=event.notification_id,
        out_trade_no=event.out_trade_no,
        outcome=outcome.text,
    )
    for request_id in outcome.refunds:
        await submit_refund(pool, provider, request_id, notify_url=refund_notify_url, now=now)
    return provider.notification_reply(True)


async def _record_malformed(
    pool: asyncpg.Pool, provider: str, body: bytes, reason: str, now: datetime
) -> None:
    digest = hashlib.sha256(body).hexdigest()
    log.warning("malformed notification", provider=provider, sha256=digest, reason=reason)
    try:
        async with _transaction(pool) as conn:
            await _anomaly(
                conn,
                NewAnomaly(
                    kind=AnomalyKind.MALFORMED_NOTIFICATION,
                    dedup_key=f"{provider}:{digest}",
                    provider=provider,
                    detail=f"{reason} (body sha256 {digest})",
                ),
                now,
            )
    except _DB_ERRORS:
        log.warning("malformed notification not recorded", provider=provider, sha256=digest)


def _tag(event: ProviderEvent) -> str:
    return str(type(event).__struct_config__.tag)


async def _apply_notification(
    pool: asyncpg.Pool, provider: str, event: ProviderEvent, now: datetime
) -> _Outcome:
    async with _transaction(pool) as conn:
        inbox_id = await store.insert_notification(
            conn,
            provider=provider,
            notification_id=event.notification_id,
            kind=_tag(event),
            out_trade_no=event.out_trade_no,
            event=msgspec.json.encode(event),
            now=now,
        )
        if inbox_id is None:
            return _Outcome(text="duplicate")
        outcome = await _apply_event(conn, provider, event, now)
        await store.mark_notification(conn, inbox_id, outcome=outcome.text, now=now)
        return outcome


async def _apply_event(
    conn: asyncpg.Connection, provider: str, event: ProviderEvent, now: datetime
) -> _Outcome:
    match event:
        case PaymentSucceeded() | PaymentRepaid():
            return await _settle(
                conn,
                provider,
                out_trade_no=event.out_trade_no,
                amount_fen=event.amount_fen,
                transaction_id=event.transaction_id,
                provider_state=_tag(event),
                notification_id=event.notification_id,
                now=now,
            )
        case PaymentFailed():
            return await _payment_ended(
                conn, event.out_trade_no, AttemptStatus.FAILED, f"failed: {event.reason}", now
            )
        case PaymentClosed():
            return await _payment_ended(
                conn, event.out_trade_no, AttemptStatus.CLOSED, "closed by the provider", now
            )
        case RefundSucceeded():
            return await _refund_succeeded(conn, provider, event, now)
        case RefundFailed():
            return await _refund_failed(conn, provider, event, now)
        case _:
            return _Outcome(text=f"ignored:{event.event_type}"[:200])


async def _anomaly(conn: asyncpg.Connection, anomaly: NewAnomaly, now: datetime) -> Anomaly:
    recorded, created = await store.insert_anomaly(
        conn, anomaly, anomaly_id=new_id("pan", now), now=now
    )
    if created:
        log.warning(
            "payment anomaly",
            kind=anomaly.kind.value,
            provider=anomaly.provider,
            out_trade_no=anomaly.out_trade_no,
            detail=anomaly.detail,
        )
    return recorded


async def _hold_in_suspense(
    conn: asyncpg.Connection, anomaly: Anomaly, amount_fen: int, now: datetime
) -> None:
    """Post money the provider collected that no bill can take to suspense:{provider}.

    Keyed by the anomaly, so a report repeated (another notification id, the
    sweeper's query) holds it once. Nothing to hold for a non-positive amount.
    """
    if amount_fen <= 0:
        return
    await ledger.post(
        conn,
        ledger_logic.suspense_received(
            anomaly_id=anomaly.id,
            provider=anomaly.provider,
            amount_fen=amount_fen,
            occurred_at=now,
            memo=f"{anomaly.kind.value} {anomaly.out_trade_no or ''}".strip(),
        ),
    )


async def _settle(
    conn: asyncpg.Connection,
    provider: str,
    *,
    out_trade_no: str,
    amount_fen: int,
    transaction_id: str,
    provider_state: str,
    notification_id: str | None,
    now: datetime,
) -> _Outcome:
    """The provider took ``amount_fen`` for ``out_trade_no``: pay its bills, exactly once.

    The one path for a success notification, a repaid deduction and the
    sweeper's query answer. Locks the attempt, then its bills in id order.
    """
    attempt = await store.attempt_by_out_trade_no(conn, out_trade_no, lock=True)
    if attempt is None:
        anomaly = await _anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.UNKNOWN_ORDER,
                dedup_key=f"{provider}:{out_trade_no}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                amount_fen=amount_fen,
                detail=f"{provider} reports {amount_fen} fen paid (transaction "
                f"{transaction_id}) for an order we never made; held in suspense",
            ),
            now,
        )
        await _hold_in_suspense(conn, anomaly, amount_fen, now)
        return _Outcome(text="anomaly:unknown_order")
    if attempt.status is AttemptStatus.PAID:
        if attempt.transaction_id == transaction_id:
            return _Outcome(text="already_paid")
        anomaly = await _anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.DUPLICATE_PAYMENT,
                dedup_key=f"{provider}:{out_trade_no}:{transaction_id}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                attempt_id=attempt.id,
                amount_fen=amount_fen,
                detail=f"a second transaction {transaction_id} for an order paid by "
                f"{attempt.transaction_id}; held in suspense",
            ),
            now,
        )
        await _hold_in_suspense(conn, anomaly, amount_fen, now)
        return _Outcome(text="anomaly:second_transaction")
    plan = logic.settlement(attempt, amount_fen=amount_fen)
    if plan.mismatch:
        anomaly = await _anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.AMOUNT_MISMATCH,
                dedup_key=f"{provider}:{out_trade_no}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                attempt_id=attempt.id,
                amount_fen=amount_fen,
                expected_fen=attempt.amount_fen,
                detail=f"{provider} reports {amount_fen} fen paid (transaction "
                f"{transaction_id}); the order is {attempt.amount_fen} fen. Not applied; "
                "held in suspense.",
            ),
            now,
        )
        await _hold_in_suspense(conn, anomaly, amount_fen, now)
        if attempt.status is AttemptStatus.PENDING:
            await _give_up(
                conn,
                attempt,
                AttemptStatus.FAILED,
                failure=f"notified {amount_fen} fen for a {attempt.amount_fen} fen order",
                now=now,
            )
        return _Outcome(text="anomaly:amount_mismatch")
    applied: list[BillShare] = []
    duplicates: list[BillShare] = []
    for share in sorted(attempt.bills, key=lambda s: s.bill_id):
        try:
            await bills.mark_paid(
                conn,
                share.bill_id,
                provider=provider,
                payment_ref=attempt.out_trade_no,
                amount_fen=share.amount_fen,
                now=now,
                actor=f"{SYSTEM_ACTOR}:{provider}",
                remark=f"transaction {transaction_id}",
            )
            applied.append(share)
        except (BillAlreadyPaid, IllegalBillTransition):
            # Raised before anything was written: another payment paid it.
            duplicates.append(share)
    await store.set_attempt_status(
        conn,
        attempt.id,
        AttemptStatus.PAID,
        now=now,
        transaction_id=transaction_id,
        provider_state=provider_state,
    )
    deduction = await store.deduction_of_attempt(conn, attempt.id)
    if deduction is not None:
        await store.update_deduction(conn, deduction.id, status=DeductionStatus.SUCCEEDED, now=now)
    refunds: list[str] = []
    if plan.late and applied:
        await _anomaly(
            conn,
            NewAnomaly(
                kind=AnomalyKind.PAID_AFTER_CLOSE,
                dedup_key=f"{provider}:{out_trade_no}",
                provider=provider,
                out_trade_no=out_trade_no,
                notification_id=notification_id,
                attempt_id=attempt.id,
                amount_fen=sum(s.amount_fen for s in applied),
                action=AnomalyAction.APPLIED,
                detail=f"paid while {attempt.status.value}; applied to the bills still owed",
                resolved=True,
            ),
            now,
        )
    if duplicates:
        refunds.append(
            await _refund_duplicate(
                conn, provider, attempt, duplicates, notification_id=notification_id, now=now
            )
        )
    text = "paid" if not duplicates else f"paid:{len(duplicates)}_duplicate"
    return _Outcome(text=text, refunds=tuple(refunds))


async def _refund_duplicate(
    conn: asyncpg.Connection,
    provider: str,
    attempt: Attempt,
    duplicates: Sequence[BillShare],
    *,
    notification_id: str | None,
    now: datetime,
) -> str:
    """Record the duplicate payment and the refund that returns it (sent after the commit)."""
    amount = sum(share.amount_fen for share in duplicates)
    anomaly = await _anomaly(
        conn,
        NewAnomaly(
            kind=AnomalyKind.DUPLICATE_PAYMENT,
            dedup_key=f"{provider}:{attempt.out_trade_no}",
            provider=provider,
            out_trade_no=attempt.out_trade_no,
            notification_id=notification_id,
            attempt_id=attempt.id,
            bill_id=duplicates[0].bill_id,
            amount_fen=amount,
            action=AnomalyAction.AUTO_REFUND,
            detail="already paid by another payment: "
            + ", ".join(share.bill_id for share in duplicates),
        ),
        now,
    )
    await _hold_in_suspense(conn, anomaly, amount, now)
    request_id = new_id("rr", now)
    request = await store.insert_refund_request(
        conn,
        request_id=request_id,
        bill_id=None,
        attempt_id=attempt.id,
        provider=provider,
        out_trade_no=attempt.out_trade_no,
        out_refund_no=logic.out_refund_no(request_id),
        amount_fen=amount,
        status=RefundStatus.APPROVED,
        reason="重复支付退款",
        requested_by=SYSTEM_ACTOR,
        decided_by=SYSTEM_ACTOR,
        remark=f"automatic refund of a duplicate payment ({anomaly.id})",
        dispute_id=None,
        anomaly_id=anomaly.id,
        now=now,
    )
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="refund.duplicate_payment",
        target=f"payment:{attempt.id}",
        details={"anomaly_id": anomaly.id, "refund_request_id": request.id, "amount_fen": amount},
    )
    return request.id


async def _give_up(
    conn: asyncpg.Connection,
    attempt: Attempt,
    status: AttemptStatus,
    *,
    failure: str,
    now: datetime,
    recheck: bool = False,
) -> None:
    """The attempt will not be paid (as far as we know): end it, give its bills back.

    A bill goes back to open only if it is still paying and no other pending
    attempt holds it (that one's own ending gives it back).
    """
    await store.set_attempt_status(
        conn, attempt.id, status, now=now, failure=failure, recheck=recheck
    )
    deduction = await store.deduction_of_attempt(conn, attempt.id)
    if deduction is not None and deduction.status in (
        DeductionStatus.REQUESTED,
        DeductionStatus.ACCEPTED,
    ):
        await store.update_deduction(conn, deduction.id, status=DeductionStatus.FAILED, now=now)
    others = [
        other
        for other in await store.pending_attempts_of_bills(conn, attempt.bill_ids)
        if other.id != attempt.id
    ]
    for share in sorted(attempt.bills, key=lambda s: s.bill_id):
        if any(share.bill_id in other.bill_ids for other in others):
            continue
        bill = await bills.get(conn, share.bill_id)
        if not logic.returns_to_open(bill):
            continue
        try:
            await bills.payment_failed(
                conn,
                bill.id,
                actor=f"{SYSTEM_ACTOR}:{attempt.provider}",
                remark=f"{attempt.out_trade_no} {status.value}: {failure}"[:2000],
                now=now,
            )
        except IllegalBillTransition:
            continue  # paid or disputed since we looked; raised before any write


async def _payment_ended(
    conn: asyncpg.Connection,
    out_trade_no: str,
    status: AttemptStatus,
    reason: str,
    now: datetime,
) -> _Outcome:
    attempt = await store.attempt_by_out_trade_no(conn, out_trade_no, lock=True)
    if attempt is None:
        return _Outcome(text="ignored:unknown_order")
    if attempt.status is not AttemptStatus.PENDING:
        return _Outcome(text=f"ignored:{attempt.status.value}")
    await _give_up(conn, attempt, status, failure=reason, now=now)
    return _Outcome(text=status.value)


async def settle_from_status(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    status: OrderStatus,
    *,
    now: datetime,
    refund_notify_url: str | None = None,
) -> str:
    """Apply a paid order the provider reported on a query, exactly as its notification would."""
    async with _transaction(pool) as conn:
        outcome = await _settle(
            conn,
            provider.name,
            out_trade_no=status.out_trade_no,
            amount_fen=status.amount_fen,
            transaction_id=status.transaction_id or status.out_trade_no,
            provider_state=status.provider_state,
            notification_id=None,
            now=now,
        )
    for request_id in outcome.refunds:
        await submit_refund(pool, provider, request_id, notify_url=refund_notify_url, now=now)
    return outcome.text


async def end_attempt(
    pool: asyncpg.Pool,
    attempt_id: str,
    status: AttemptStatus,
    *,
    reason: str,
    now: datetime,
    recheck: bool = False,
) -> bool:
    """End a pending attempt (expired, failed, closed) and give its bills back; False if it
    was no longer pending (a notification settled it meanwhile)."""
    async with _transaction(pool) as conn:
        attempt = await store.attempt(conn, attempt_id, lock=True)
        if attempt is None or attempt.status is not AttemptStatus.PENDING:
            return False
        await _give_up(conn, attempt, status, failure=reason, now=now, recheck=recheck)
        return True


async def stop_recheck(pool: asyncpg.Pool, attempt_id: str, *, now: datetime) -> None:
    async with _transaction(pool) as conn:
        await store.set_recheck(conn, attempt_id, False, now)


# --------------------------------------------------------------------------- refunds


async def _refund_succeeded(
    conn: asyncpg.Connection, provider: str, event: RefundSucceeded, now: datetime
) -> _Outcome:
    request = await store.refund_request_by_no(conn, event.out_refund_no, lock=True)
    if request is None:
        attempt = await store.attempt_by_out_trade_no(conn, event.out_trade_no)
        kind = (
            AnomalyKind.REFUND_BEFORE_PAYMENT
            if attempt is not None and attempt.status is not AttemptStatus.PAID
            else AnomalyKind.UNKNOWN_REFUND
        )
        anomaly = await _anomaly(
            conn,
            NewAnomaly(
                kind=kind,
                dedup_key=f"{provider}:{event.out_refund_no or event.out_trade_no}",
                provider=provider,
                out_trade_no=event.out_trade_no,
                out_refund_no=event.out_refund_no,
                notification_id=event.notification_id,
                attempt_id=None if attempt is None else attempt.id,
                amount_fen=event.refund_fen,
                detail=(
                    f"refund {event.out_refund_no} of {event.refund_fen} fen for "
                    f"{event.out_trade_no}, which is "
                    + ("unknown" if attempt is None else attempt.status.value)
                    + "; no bill changed, the money paid out is posted to suspense"
                ),
            ),
            now,
        )
        if event.out_refund_no and event.refund_fen:
            # Money left the provider's clearing balance all the same (a refund
            # made in the merchant console): on the ledger, against suspense.
            await _paid_out_of_suspense(
                conn, anomaly, refund_ref=event.out_refund_no, amount_fen=event.refund_fen, now=now
            )
        return _Outcome(text=f"anomaly:{kind.value}")
    return await _complete_refund(conn, request, provider_refund_id=event.refund_id, now=now)


async def _refund_failed(
    conn: asyncpg.Connection, provider: str, event: RefundFailed, now: datetime
) -> _Outcome:
    request = await store.refund_request_by_no(conn, event.out_refund_no, lock=True)
    detail = f"refund {event.out_refund_no} ended {event.state.value} at {provider}"
    if request is not None and request.status is RefundStatus.APPROVED:
        await _refund_request_failed(
            conn, request, detail=detail, last_error=event.state.value, now=now
        )
        return _Outcome(text="refund_failed")
    await _anomaly(
        conn,
        NewAnomaly(
            kind=AnomalyKind.REFUND_FAILED if request is not None else AnomalyKind.UNKNOWN_REFUND,
            dedup_key=f"{provider}:{event.out_refund_no}",
            provider=provider,
            out_trade_no=event.out_trade_no,
            out_refund_no=event.out_refund_no,
            notification_id=event.notification_id,
            bill_id=None if request is None else request.bill_id,
            amount_fen=event.refund_fen,
            detail=detail,
        ),
        now,
    )
    return _Outcome(text="anomaly:refund_failed")


async def _refund_request_failed(
    conn: asyncpg.Connection, request: RefundRequest, *, detail: str, last_error: str, now: datetime
) -> None:
    """The provider will not pay an approved refund out: fail it, record an anomaly, and
    reopen the dispute it carried out, so finance decides again (approve anew, or reject
    and the bill is paid again) instead of the bill staying disputed for ever.
    In the caller's transaction, under the request's row lock."""
    await store.update_refund_request(
        conn, request.id, status=RefundStatus.FAILED, now=now, last_error=last_error
    )
    await _refund_failure_anomaly(conn, request, detail, now)
    if request.dispute_id is None:
        return
    reopened = await store.reopen_dispute(conn, request.dispute_id)
    if reopened is None:
        return  # decided otherwise meanwhile, or the driver opened another dispute
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="dispute.reopened",
        target=f"bill:{reopened.bill_id}",
        details={
            "dispute_id": reopened.id,
            "remark": f"refund {request.out_refund_no} failed: {detail}"[:2000],
            "refund_request_id": request.id,
        },
    )


async def _paid_out_of_suspense(
    conn: asyncpg.Connection, anomaly: Anomaly, *, refund_ref: str, amount_fen: int, now: datetime
) -> None:
    """Post a refund the provider paid that no bill takes: suspense:{provider} / clearing.

    Idempotent on the refund reference, like every refund: if that reference is
    on the ledger already (it moved a bill), nothing more is posted.
    """
    if await ledger.find(conn, TransactionKind.REFUND, f"{anomaly.provider}:{refund_ref}"):
        return
    await ledger.post(
        conn,
        ledger_logic.suspense_refunded(
            anomaly_id=anomaly.id,
            provider=anomaly.provider,
            refund_ref=refund_ref,
            amount_fen=amount_fen,
            occurred_at=now,
            memo=f"{anomaly.kind.value} {anomaly.out_trade_no or ''}".strip(),
        ),
    )


async def _complete_refund(
    conn: asyncpg.Connection,
    request: RefundRequest,
    *,
    provider_refund_id: str | None,
    now: datetime,
) -> _Outcome:
    """The provider paid the refund out: move the bill (and post the ledger's refund), once.

    A refund of money held in suspense (an anomaly's, no bill) posts back out of
    suspense. A bill that can no longer take the refund (an unexpected state)
    does not stop it: see ``_refund_unapplied``.
    """
    if request.status is RefundStatus.REFUNDED:
        return _Outcome(text="already_refunded")
    if request.bill_id is not None:
        try:
            await bills.refund(
                conn,
                request.bill_id,
                amount_fen=request.amount_fen,
                provider=request.provider,
                refund_ref=request.out_refund_no,
                actor=f"finance:{request.decided_by}" if request.decided_by else SYSTEM_ACTOR,
                remark=request.remark or request.reason,
                now=now,
            )
        except BillError as exc:
            # Raised before anything was written (bills.refund checks first).
            return await _refund_unapplied(
                conn, request, exc, provider_refund_id=provider_refund_id, now=now
            )
        if request.dispute_id is not None:
            await _reapprove_dispute(conn, request, now)
    else:
        assert request.anomaly_id is not None  # refund_requests_subject_check
        held = await store.anomaly(conn, request.anomaly_id)
        assert held is not None
        await _paid_out_of_suspense(
            conn, held, refund_ref=request.out_refund_no, amount_fen=request.amount_fen, now=now
        )
    if request.anomaly_id is not None:
        await store.resolve_anomaly(
            conn,
            request.anomaly_id,
            by=SYSTEM_ACTOR,
            remark=f"refunded {request.amount_fen} fen as {request.out_refund_no}",
            now=now,
        )
    await store.update_refund_request(
        conn,
        request.id,
        status=RefundStatus.REFUNDED,
        now=now,
        provider_refund_id=provider_refund_id,
        submitted=True,
    )
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="refund.completed",
        target=_refund_target(request),
        details={
            "refund_request_id": request.id,
            "out_refund_no": request.out_refund_no,
            "amount_fen": request.amount_fen,
            "dispute_id": request.dispute_id,
            "anomaly_id": request.anomaly_id,
        },
    )
    return _Outcome(text="refunded")


def _refund_target(request: RefundRequest) -> str:
    if request.bill_id is not None:
        return f"bill:{request.bill_id}"
    if request.attempt_id is not None:
        return f"payment:{request.attempt_id}"
    return f"payment_anomaly:{request.anomaly_id}"


async def _refund_unapplied(
    conn: asyncpg.Connection,
    request: RefundRequest,
    error: BillError,
    *,
    provider_refund_id: str | None,
    now: datetime,
) -> _Outcome:
    """The provider confirmed a refund its bill can no longer take (refunded meanwhile by
    another refund, never paid, in another state).

    The money did leave: it is posted against suspense, the request is closed
    as refunded (so neither the provider's re-sends nor the sweeper ask again)
    and an open anomaly tells finance. Answered as taken.
    """
    assert request.bill_id is not None
    bill = await bills.get(conn, request.bill_id)
    kind = (
        AnomalyKind.REFUND_BEFORE_PAYMENT if bill.paid_at is None else AnomalyKind.REFUND_UNAPPLIED
    )
    anomaly = await _anomaly(
        conn,
        NewAnomaly(
            kind=kind,
            dedup_key=f"{request.provider}:{request.out_refund_no}",
            provider=request.provider,
            out_trade_no=request.out_trade_no,
            out_refund_no=request.out_refund_no,
            attempt_id=request.attempt_id,
            bill_id=request.bill_id,
            amount_fen=request.amount_fen,
            detail=f"the provider refunded {request.amount_fen} fen as {request.out_refund_no}, "
            f"but bill {bill.id} ({bill.status.value}, {bill.refunded_fen} of "
            f"{bill.amount_fen} fen refunded) cannot take it: {error}; posted to suspense",
        ),
        now,
    )
    await _paid_out_of_suspense(
        conn, anomaly, refund_ref=request.out_refund_no, amount_fen=request.amount_fen, now=now
    )
    await store.update_refund_request(
        conn,
        request.id,
        status=RefundStatus.REFUNDED,
        now=now,
        provider_refund_id=provider_refund_id,
        submitted=True,
        last_error=f"not applied to the bill: {error}",
    )
    await store.audit(
        conn,
        at=now,
        actor=SYSTEM_ACTOR,
        role="system",
        action="refund.unapplied",
        target=f"bill:{bill.id}",
        details={
            "refund_request_id": request.id,
            "out_refund_no": request.out_refund_no,
            "amount_fen": request.amount_fen,
            "anomaly_id": anomaly.id,
            "bill_status": bill.status.value,
        },
    )
    return _Outcome(text=f"anomaly:{kind.value}")


async def _reapprove_dispute(
    conn: asyncpg.Connection, request: RefundRequest, now: datetime
) -> None:
    """A refund reported failed (its dispute reopened) was paid out after all: the money
    decided the dispute, so it is approved again, by the system, with this refund."""
    assert request.dispute_id is not None
    dispute = await store.dispute(conn, request.dispute_id, lock=True)
    if dispute is None or dispute.status is not DisputeStatus.OPEN:
        return
    remark = f"refund {request.out_refund_no} was paid out after all"
    decided = await store.decide_dispute(
        conn,
        dispute.id,
        status=DisputeStatus.APPROVED,
        by=SYSTEM_ACTOR,
        remark=remark,
        refund_fen=request.amount_fen,
        now=now,
    )
    await _audit_decision(
        conn, decided, by=SYSTEM_ACTOR, remark=remark, now=now, refund_request_id=request.id
    )


async def _order_total(conn: asyncpg.Connection, request: RefundRequest) -> int:
    """The order's total the provider wants with a refund: our attempt's amount, or for an
    order we never made, what the provider reported it collected."""
    if request.attempt_id is not None:
        attempt = await store.attempt(conn, request.attempt_id)
        if attempt is not None:
            return attempt.amount_fen
    if request.anomaly_id is not None:
        anomaly = await store.anomaly(conn, request.anomaly_id)
        if anomaly is not None and anomaly.amount_fen:
            return anomaly.amount_fen
    raise InvalidInput(f"refund request {request.id} names no order total")


async def submit_refund(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    request_id: str,
    *,
    notify_url: str | None,
    now: datetime,
) -> RefundStatus:
    """Send a committed refund request to the provider (again) and record its answer.

    Idempotent on out_refund_no at the provider: a request that timed out is
    sent again with the same number and refunds once. ProviderUnavailable
    leaves it approved for the sweeper; a refusal fails it (anomaly, and its
    dispute reopened). Returns the request's status afterwards.
    """
    async with _connection(pool) as conn:
        request = await store.refund_request(conn, request_id)
        if request is None:
            raise InvalidInput(f"no refund request {request_id!r}")
        total_fen = await _order_total(conn, request)
    if request.status is not RefundStatus.APPROVED:
        return request.status
    try:
        if request.submitted_at is None:
            answer = await provider.refund(
                request.out_trade_no,
                request.out_refund_no,
                request.amount_fen,
                total_fen,
                (request.reason or "退款")[:_REFUND_REASON_MAX],
                notify_url=notify_url,
            )
        else:
            answer = await provider.query_refund(request.out_trade_no, request.out_refund_no)
    except ProviderUnavailable as exc:
        async with _transaction(pool) as conn:
            await store.update_refund_request(
                conn, request.id, status=RefundStatus.APPROVED, now=now, last_error=str(exc)
            )
        return RefundStatus.APPROVED
    except ProviderRejected as exc:
        async with _transaction(pool) as conn:
            locked = await store.refund_request(conn, request.id, lock=True)
            if locked is not None and locked.status is RefundStatus.APPROVED:
                await _refund_request_failed(
                    conn, locked, detail=str(exc), last_error=str(exc), now=now
                )
                return RefundStatus.FAILED
            return RefundStatus.APPROVED if locked is None else locked.status
    async with _transaction(pool) as conn:
        return await _record_refund_answer(conn, request.id, answer, now)


async def _refund_failure_anomaly(
    conn: asyncpg.Connection, request: RefundRequest, detail: str, now: datetime
) -> None:
    await _anomaly(
        conn,
        NewAnomaly(
            kind=AnomalyKind.REFUND_FAILED,
            dedup_key=f"{request.provider}:{request.out_refund_no}",
            provider=request.provider,
            out_trade_no=request.out_trade_no,
            out_refund_no=request.out_refund_no,
            bill_id=request.bill_id,
            amount_fen=request.amount_fen,
            detail=detail,
        ),
        now,
    )


async def _record_refund_answer(
    conn: asyncpg.Connection, request_id: str, answer: port.RefundStatus, now: datetime
) -> RefundStatus:
    request = await store.refund_request(conn, request_id, lock=True)
    assert request is not None
    if request.status is not RefundStatus.APPROVED:
        return request.status
    if answer.state is port.RefundState.SUCCEEDED:
        await _complete_refund(conn, request, provider_refund_id=answer.refund_id, now=now)
        return RefundStatus.REFUNDED
    if answer.state is port.RefundState.PROCESSING:
        await store.update_refund_request(
            conn,
            request.id,
            status=RefundStatus.APPROVED,
            now=now,
            provider_refund_id=answer.refund_id,
            submitted=True,
            last_error="",
        )
        return RefundStatus.APPROVED
    await _refund_request_failed(
        conn,
        request,
        detail=f"the provider answered {answer.provider_state}",
        last_error=answer.provider_state,
        now=now,
    )
    return RefundStatus.FAILED


async def refund_requests_to_sweep(
    pool: asyncpg.Pool, *, updated_before: datetime, limit: int
) -> list[RefundRequest]:
    async with _connection(pool) as conn:
        return await store.refund_requests_to_sweep(
            conn, updated_before=updated_before, limit=limit
        )


async def touch_refund_request(pool: asyncpg.Pool, request_id: str, *, now: datetime) -> None:
    async with _transaction(pool) as conn:
        await store.touch_refund_request(conn, request_id, now)


async def note_refund_error(
    pool: asyncpg.Pool, request_id: str, error: str, *, now: datetime
) -> None:
    """Keep on the request why the sweeper could not send or query it this time."""
    async with _transaction(pool) as conn:
        await store.note_refund_error(conn, request_id, error, now)


# --------------------------------------------------------------------------- disputes


async def open_dispute(
    conn: asyncpg.Connection, bill_id: str, *, account_id: str, reason: str, now: datetime
) -> DisputeView:
    """The driver contests one of their bills (UnknownBill for anyone else's). In the caller's
    transaction. Idempotent: a bill with an open dispute of theirs returns it; a dispute
    another account opened is UnknownBill too (only its opener ever sees it)."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("a dispute needs a reason")
    bill = await bills.get(conn, bill_id)
    if not await _disputable(conn, bill, account_id):
        raise UnknownBill(bill_id)
    existing = await store.open_dispute_of_bill(conn, bill_id)
    if existing is not None:
        if existing.opened_by != account_id:
            # Another account's dispute (the plate changed hands): its reason is theirs.
            raise UnknownBill(bill_id)
        return await _dispute_view(conn, existing)
    await bills.dispute(conn, bill_id, actor=f"driver:{account_id}", remark=reason, now=now)
    dispute = await store.insert_dispute(
        conn,
        dispute_id=new_id("dp", now),
        bill_id=bill_id,
        reason=reason,
        opened_by=account_id,
        now=now,
    )
    if dispute is None:
        raise Conflict(f"bill {bill_id} was disputed concurrently")
    await store.audit(
        conn,
        at=now,
        actor=account_id,
        role="driver",
        action="dispute.opened",
        target=f"bill:{bill_id}",
        details={"dispute_id": dispute.id, "reason": reason},
    )
    return await _dispute_view(conn, dispute)


async def _dispute_view(conn: asyncpg.Connection, dispute: Dispute) -> DisputeView:
    bill = await bills.get(conn, dispute.bill_id)
    refund = await store.refund_request_of_dispute(conn, dispute.id)
    return DisputeView(
        id=dispute.id,
        bill_id=dispute.bill_id,
        bill_amount_fen=bill.amount_fen,
        bill_status=bill.status.value,
        reason=dispute.reason,
        opened_by=dispute.opened_by,
        opened_at=dispute.opened_at,
        status=dispute.status,
        decided_by=dispute.decided_by,
        decided_at=dispute.decided_at,
        remark=dispute.remark,
        refund_fen=dispute.refund_fen,
        refund_status=None if refund is None else refund.status,
        written_off=dispute.status is DisputeStatus.APPROVED
        and refund is None
        and bill.status is BillStatus.WRITTEN_OFF,
    )


async def dispute_view(conn: asyncpg.Connection, dispute_id: str) -> DisputeView:
    dispute = await store.dispute(conn, dispute_id)
    if dispute is None:
        raise UnknownDispute(dispute_id)
    return await _dispute_view(conn, dispute)


async def disputes(
    conn: asyncpg.Connection, *, status: DisputeStatus | None = DisputeStatus.OPEN, limit: int = 100
) -> list[DisputeView]:
    return [
        await _dispute_view(conn, d) for d in await store.disputes(conn, status=status, limit=limit)
    ]


def _remark(remark: str) -> str:
    remark = remark.strip()
    if not remark:
        raise InvalidInput("a decision needs a remark")
    return remark


async def approve_dispute(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    dispute_id: str,
    *,
    by: str,
    remark: str,
    amount_fen: int | None = None,
    notify_base_url: str | None = None,
    now: datetime,
) -> DisputeView:
    """Uphold a dispute. A paid bill gets a refund of ``amount_fen`` (None: all that is left)
    through the provider that took the money, with a stable out_refund_no; the bill
    moves (and the ledger's refund posts) when the provider confirms, now or by
    notification. An unpaid bill is written off instead (in full only).
    Audited with ``by`` and ``remark``. Approving an approved dispute returns it.
    """
    remark = _remark(remark)
    async with _transaction(pool) as conn:
        dispute = await store.dispute(conn, dispute_id, lock=True)
        if dispute is None:
            raise UnknownDispute(dispute_id)
        if dispute.status is DisputeStatus.APPROVED:
            return await _dispute_view(conn, dispute)
        if dispute.status is not DisputeStatus.OPEN:
            raise DisputeClosed(f"dispute {dispute_id} was {dispute.status.value}")
        bill = await bills.get(conn, dispute.bill_id)
        if bill.paid_at is None:
            if amount_fen is not None and amount_fen != bill.amount_fen:
                raise InvalidInput("an unpaid bill is upheld by writing it off in full")
            await bills.write_off(conn, bill.id, actor=f"finance:{by}", remark=remark, now=now)
            decided = await store.decide_dispute(
                conn,
                dispute_id,
                status=DisputeStatus.APPROVED,
                by=by,
                remark=remark,
                refund_fen=None,
                now=now,
            )
            await _audit_decision(conn, decided, by=by, remark=remark, now=now, written_off=True)
            return await _dispute_view(conn, decided)
        refundable = await _refundable_fen(conn, bill)
        refund = refundable if amount_fen is None else amount_fen
        if refund <= 0:
            raise InvalidAmount(f"a refund must be > 0 fen, got {refund}")
        if refund > refundable:
            raise RefundExceedsAmount(bill.id, refundable_fen=refundable, requested_fen=refund)
        attempt = await _paying_attempt(conn, bill)
        provider = providers.get(attempt.provider)
        if provider is None:
            raise UnknownProvider(attempt.provider)
        request_id = await _approved_refund(
            conn,
            bill,
            attempt,
            amount_fen=refund,
            reason=dispute.reason,
            requested_by=dispute.opened_by,
            decided_by=by,
            remark=remark,
            dispute_id=dispute.id,
            now=now,
        )
        decided = await store.decide_dispute(
            conn,
            dispute_id,
            status=DisputeStatus.APPROVED,
            by=by,
            remark=remark,
            refund_fen=refund,
            now=now,
        )
        await _audit_decision(
            conn, decided, by=by, remark=remark, now=now, refund_request_id=request_id
        )
    notify = None if notify_base_url is None else logic.notify_url(notify_base_url, provider.name)
    await submit_refund(pool, provider, request_id, notify_url=notify, now=now)
    async with _connection(pool) as conn:
        return await dispute_view(conn, dispute_id)


async def reject_dispute(
    conn: asyncpg.Connection, dispute_id: str, *, by: str, remark: str, now: datetime
) -> DisputeView:
    """Reject a dispute: the bill returns to open, paid or refunded as its money says.

    Audited with ``by`` and ``remark``. In the caller's transaction.
    """
    remark = _remark(remark)
    dispute = await store.dispute(conn, dispute_id, lock=True)
    if dispute is None:
        raise UnknownDispute(dispute_id)
    if dispute.status is not DisputeStatus.OPEN:
        raise DisputeClosed(f"dispute {dispute_id} was {dispute.status.value}")
    await bills.resolve_dispute(
        conn, dispute.bill_id, actor=f"finance:{by}", remark=remark, now=now
    )
    decided = await store.decide_dispute(
        conn,
        dispute_id,
        status=DisputeStatus.REJECTED,
        by=by,
        remark=remark,
        refund_fen=None,
        now=now,
    )
    await _audit_decision(conn, decided, by=by, remark=remark, now=now)
    return await _dispute_view(conn, decided)


async def _audit_decision(
    conn: asyncpg.Connection,
    dispute: Dispute,
    *,
    by: str,
    remark: str,
    now: datetime,
    refund_request_id: str | None = None,
    written_off: bool = False,
) -> None:
    await store.audit(
        conn,
        at=now,
        actor=by,
        role="finance",
        action=f"dispute.{dispute.status.value}",
        target=f"bill:{dispute.bill_id}",
        details={
            "dispute_id": dispute.id,
            "remark": remark,
            "refund_fen": dispute.refund_fen,
            "refund_request_id": refund_request_id,
            "written_off": written_off,
        },
    )


# --------------------------------------------------------------------------- anomalies


async def anomalies(
    conn: asyncpg.Connection, *, status: AnomalyStatus | None = AnomalyStatus.OPEN, limit: int = 100
) -> list[Anomaly]:
    """Newest first."""
    return await store.anomalies(conn, status=status, limit=limit)


async def resolve_anomaly(
    conn: asyncpg.Connection, anomaly_id: str, *, by: str, remark: str, now: datetime
) -> Anomaly:
    """A person looked at it and says why it is settled. Audited. In the caller's transaction."""
    remark = _remark(remark)
    found = await store.anomaly(conn, anomaly_id, lock=True)
    if found is None:
        raise UnknownAnomaly(anomaly_id)
    if found.status is AnomalyStatus.OPEN:
        await store.resolve_anomaly(conn, anomaly_id, by=by, remark=remark, now=now)
        await store.audit(
            conn,
            at=now,
            actor=by,
            role="finance",
            action="payment_anomaly.resolved",
            target=f"payment_anomaly:{anomaly_id}",
            details={"remark": remark, "kind": found.kind.value},
        )
    resolved = await store.anomaly(conn, anomaly_id)
    assert resolved is not None
    return resolved


async def refund_anomaly(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    anomaly_id: str,
    *,
    by: str,
    remark: str,
    notify_base_url: str | None = None,
    now: datetime,
) -> AnomalyRefund:
    """Give back, through the provider that collected it, the money an anomaly holds in
    suspense (a wrong amount, an order we never made, a second payment of a paid bill).

    Finance's decision, audited with ``by`` and ``remark``. Refunds all the
    anomaly holds that no refund request is returning already (NothingToRefund
    when that is nothing), with a stable out_refund_no. Suspense is debited
    when the provider confirms (now or by notification), which also resolves
    the anomaly; a refund the provider refuses leaves it open to try again.
    """
    remark = _remark(remark)
    async with _transaction(pool) as conn:
        anomaly = await store.anomaly(conn, anomaly_id, lock=True)
        if anomaly is None:
            raise UnknownAnomaly(anomaly_id)
        provider = providers.get(anomaly.provider)
        if provider is None:
            raise UnknownProvider(anomaly.provider)
        held = ledger_logic.held_in_suspense(
            await ledger.transactions_of(conn, anomaly.id), anomaly.provider
        )
        in_flight = sum(
            r.amount_fen for r in await store.refund_requests_in_flight_of_anomaly(conn, anomaly.id)
        )
        amount = held - in_flight
        if amount <= 0 or anomaly.out_trade_no is None:
            raise NothingToRefund(
                f"payment anomaly {anomaly_id} holds no money in suspense that is not being "
                f"refunded (held {held} fen, being refunded {in_flight} fen)"
            )
        request_id = new_id("rr", now)
        request = await store.insert_refund_request(
            conn,
            request_id=request_id,
            bill_id=None,
            attempt_id=anomaly.attempt_id,
            provider=anomaly.provider,
            out_trade_no=anomaly.out_trade_no,
            out_refund_no=logic.out_refund_no(request_id),
            amount_fen=amount,
            status=RefundStatus.APPROVED,
            reason="款项无法入账，原路退回",
            requested_by=by,
            decided_by=by,
            remark=remark,
            dispute_id=None,
            anomaly_id=anomaly.id,
            now=now,
        )
        total = await _order_total(conn, request)
        if amount > total:
            raise NothingToRefund(
                f"payment anomaly {anomaly_id} holds {amount} fen, more than the order's "
                f"{total} fen: refund it in the provider's console and resolve the anomaly"
            )
        await store.audit(
            conn,
            at=now,
            actor=by,
            role="finance",
            action="payment_anomaly.refund",
            target=f"payment_anomaly:{anomaly.id}",
            details={
                "remark": remark,
                "kind": anomaly.kind.value,
                "refund_request_id": request.id,
                "out_trade_no": anomaly.out_trade_no,
                "amount_fen": amount,
            },
        )
    notify = None if notify_base_url is None else logic.notify_url(notify_base_url, provider.name)
    status = await submit_refund(pool, provider, request.id, notify_url=notify, now=now)
    async with _connection(pool) as conn:
        current = await store.anomaly(conn, anomaly_id)
    assert current is not None
    return AnomalyRefund(
        anomaly_id=anomaly_id,
        refund_request_id=request.id,
        out_trade_no=request.out_trade_no,
        out_refund_no=request.out_refund_no,
        amount_fen=amount,
        status=status,
        anomaly_status=current.status,
    )


# --------------------------------------------------------------------------- contactless


async def enable_mandate(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    *,
    plate: str,
    payer_id: str,
    account_id: str | None,
    by: str,
    now: datetime,
    plate_color: str = "BLUE",
) -> Mandate:
    """Turn contactless payment on for a plate, once the driver authorised it at the provider.

    Asks the provider first (MandateNotAuthorised unless it shows the plate's
    service active for this payer). One live mandate per provider and plate:
    enabling again updates it (the plate may have changed hands). Audited.
    """
    rail = _contactless(provider)
    status = await rail.mandate_status(plate, plate_color, payer_id)
    if status.state is not port.MandateState.ACTIVE:
        raise MandateNotAuthorised(
            f"{provider.name} shows plate {plate} as {status.provider_state} for this payer"
        )
    async with _transaction(pool) as conn:
        live = await store.live_mandate(conn, provider.name, plate, lock=True)
        if live is None:
            mandate = await store.insert_mandate(
                conn,
                mandate_id=new_id("cm", now),
                provider=provider.name,
                plate=plate,
                plate_color=plate_color,
                account_id=account_id,
                payer_id=payer_id,
                state=MandateState.ACTIVE,
                now=now,
            )
        else:
            mandate = await store.update_mandate(
                conn,
                live.id,
                state=MandateState.ACTIVE,
                now=now,
                plate_color=plate_color,
                account_id=account_id,
                payer_id=payer_id,
            )
        await store.audit(
            conn,
            at=now,
            actor=by,
            role="driver" if account_id == by else "system",
            action="mandate.enabled",
            target=f"plate:{plate}",
            details={"mandate_id": mandate.id, "provider": provider.name},
        )
    return mandate


async def disable_mandate(
    conn: asyncpg.Connection, *, provider: str, plate: str, by: str, now: datetime
) -> Mandate | None:
    """Turn contactless payment off for the plate (None if it was not on). In the caller's
    transaction; deductions already accepted still complete."""
    live = await store.live_mandate(conn, provider, plate, lock=True)
    if live is None:
        return None
    revoked = await store.update_mandate(conn, live.id, state=MandateState.REVOKED, now=now)
    await store.audit(
        conn,
        at=now,
        actor=by,
        role="driver" if live.account_id == by else "system",
        action="mandate.disabled",
        target=f"plate:{plate}",
        details={"mandate_id": live.id, "provider": provider},
    )
    return revoked


async def on_bill_opened(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    bill_id: str,
    *,
    entered_at: datetime,
    lot_name: str,
    notify_base_url: str,
    now: datetime,
) -> Deduction | None:
    """Deduct a just-opened bill contactlessly when its plate has an active mandate (无感支付).

    For the persister/gateway to call right after the bill is created, outside
    its transaction. Returns None when there is nothing to do (no plate, no
    mandate, the bill is not open). Idempotent per bill: a second call
    returns the deduction, or resumes one that a crash interrupted. Accepted:
    the car may leave and the bill stays paying until the result notification
    (PaymentSucceeded pays it, PaymentFailed makes it an ordinary open bill).
    Refused or the provider unavailable: an ordinary open bill at once (leave
    first, pay later), recorded on the deduction.
    """
    async with _transaction(pool) as conn:
        bill = await bills.get(conn, bill_id)
        if bill.plate is None:
            return None
        deduction = await store.deduction_of_bill(conn, bill_id, lock=True)
        if deduction is not None and deduction.status is not DeductionStatus.REQUESTED:
            return deduction
        if deduction is None:
            # Locked: an unbind or a lost claim revoking the mandate either waits for
            # this transaction or is seen by it (issue 10 point 3).
            mandate = await store.active_mandate_for_plate(conn, bill.plate, lock=True)
            if (
                mandate is None
                or mandate.provider not in providers
                or bill.status is not BillStatus.OPEN
            ):
                return None
            holder = await accounts.account_holding(conn, bill.plate)
            if mandate.account_id is None or holder != mandate.account_id:
                # A mandate is the holder's authorisation: one left behind by an
                # account that no longer holds the plate never pays its bills.
                log.warning(
                    "contactless mandate of an account not holding the plate",
                    bill_id=bill.id,
                    mandate_id=mandate.id,
                    mandate_account=mandate.account_id,
                    holder=holder,
                )
                return None
            attempt = await _open_attempt(
                conn,
                mandate.provider,
                [bill.id],
                # The mandate is the plate's: whoever holds the plate pays.
                payer=Payer(plate=bill.plate),
                idempotency=None,
                kind=AttemptKind.CONTACTLESS,
                expires_at=now.replace(microsecond=0) + logic.DEDUCTION_QUERY_AFTER,
                now=now,
            )
            deduction_id = new_id("cd", now)
            deduction = await store.insert_deduction(
                conn,
                deduction_id=deduction_id,
                bill_id=bill.id,
                mandate_id=mandate.id,
                attempt_id=attempt.id,
                out_parking_no=logic.out_parking_no(deduction_id),
                now=now,
            )
        else:
            found_attempt = await store.attempt(conn, deduction.attempt_id)
            found_mandate = await store.mandate(conn, deduction.mandate_id)
            assert found_attempt is not None
            assert found_mandate is not None
            if found_mandate.provider not in providers:
                return deduction
            attempt, mandate = found_attempt, found_mandate
    rail = _contactless(providers[mandate.provider])
    notify = logic.notify_url(notify_base_url, rail.name)
    parking_id: str | None = None
    try:
        entry = await rail.register_entry(
            deduction.out_parking_no,
            mandate.plate,
            mandate.plate_color,
            entered_at,
            lot_name,
            notify,
        )
        parking_id = entry.parking_id
        if not entry.usable:
            answer = port.Deduction(
                provider=rail.name,
                out_trade_no=attempt.out_trade_no,
                accepted=False,
                refusal_code=entry.block_reason or "BLOCKED",
                refusal_message="the provider will not deduct for this plate now",
            )
        else:
            answer = await rail.deduct(
                attempt.out_trade_no,
                attempt.amount_fen,
                mandate.plate,
                plate_color=mandate.plate_color,
                parking_id=entry.parking_id,
                entered_at=entered_at,
                exited_at=bill.closed_at,
                lot_name=lot_name,
                description=logic.description([bill]),
                notify_url=notify,
                attach=attempt.id,
            )
    except ProviderUnavailable as exc:
        return await _deduction_ended(
            pool,
            deduction,
            attempt,
            DeductionStatus.UNAVAILABLE,
            code=exc.code,
            message=exc.message,
            parking_id=parking_id,
            now=now,
        )
    except ProviderRejected as exc:
        return await _deduction_ended(
            pool,
            deduction,
            attempt,
            DeductionStatus.REFUSED,
            code=exc.code,
            message=exc.message,
            parking_id=parking_id,
            now=now,
        )
    if not answer.accepted:
        return await _deduction_ended(
            pool,
            deduction,
            attempt,
            DeductionStatus.REFUSED,
            code=answer.refusal_code or "REFUSED",
            message=answer.refusal_message or "",
            parking_id=parking_id,
            now=now,
        )
    async with _transaction(pool) as conn:
        current = await store.deduction_of_bill(conn, bill.id, lock=True)
        assert current is not None
        await store.record_order(
            conn,
            attempt.id,
            code_url=None,
            provider_state=answer.provider_state or "ACCEPTED",
            now=now,
        )
        if current.status is DeductionStatus.REQUESTED:
            current = await store.update_deduction(
                conn, current.id, status=DeductionStatus.ACCEPTED, now=now, parking_id=parking_id
            )
        return current


async def revoke_mandates_of(
    conn: asyncpg.Connection,
    *,
    plate: str,
    account_id: str,
    by: str,
    role: str,
    why: str,
    now: datetime,
) -> list[str]:
    """Revoke the account's contactless mandates for a plate it no longer holds (unbound, or
    lost to an approved claim), in the caller's transaction; audited. Returns their ids.

    Only the platform's side is revoked: WeChat Pay's parking service (微信支付分停车服务)
    has no merchant call that ends a driver's authorisation (the driver closes it in
    WeChat), and the provider deducts only when the platform asks. The platform
    never asks under a revoked mandate, nor under one whose account does not hold
    the plate (``on_bill_opened``). Idempotent: nothing live, nothing done.
    """
    revoked: list[str] = []
    for live in await store.live_mandates_of_account(conn, plate, account_id):
        await store.update_mandate(conn, live.id, state=MandateState.REVOKED, now=now)
        await store.audit(
            conn,
            at=now,
            actor=by,
            role=role,
            action="mandate.revoked",
            target=f"plate:{plate}",
            details={
                "mandate_id": live.id,
                "provider": live.provider,
                "account_id": account_id,
                "why": why,
            },
        )
        revoked.append(live.id)
    return revoked


async def _deduction_ended(
    pool: asyncpg.Pool,
    deduction: Deduction,
    attempt: Attempt,
    status: DeductionStatus,
    *,
    code: str,
    message: str,
    parking_id: str | None,
    now: datetime,
) -> Deduction:
    log.info(
        "contactless deduction not accepted",
        bill_id=deduction.bill_id,
        status=status.value,
        code=code,
        message=message,
    )
    async with _transaction(pool) as conn:
        locked = await store.attempt(conn, attempt.id, lock=True)
        current = await store.deduction_of_bill(conn, deduction.bill_id, lock=True)
        assert locked is not None
        assert current is not None
        if current.status is not DeductionStatus.REQUESTED:
            return current  # a notification got here first
        if locked.status is AttemptStatus.PENDING:
            # A timed-out request may have been accepted after all: the
            # sweeper asks once more (recheck) whether money was taken.
            await _give_up(
                conn,
                locked,
                AttemptStatus.FAILED,
                failure=f"{status.value}: {code} {message}".strip(),
                now=now,
                recheck=status is DeductionStatus.UNAVAILABLE,
            )
        return await store.update_deduction(
            conn,
            current.id,
            status=status,
            now=now,
            parking_id=parking_id,
            refusal_code=code,
            refusal_message=message,
        )


async def deduction_of_bill(conn: asyncpg.Connection, bill_id: str) -> Deduction | None:
    return await store.deduction_of_bill(conn, bill_id)


async def attempts_of_bill(conn: asyncpg.Connection, bill_id: str) -> list[Attempt]:
    return await store.attempts_of_bill(conn, bill_id)


async def attempt_by_out_trade_no(conn: asyncpg.Connection, out_trade_no: str) -> Attempt | None:
    return await store.attempt_by_out_trade_no(conn, out_trade_no)


async def claim_for_sweep(
    pool: asyncpg.Pool,
    *,
    created_before: datetime,
    swept_before: datetime,
    now: datetime,
    limit: int,
) -> list[Attempt]:
    async with _transaction(pool) as conn:
        return await store.claim_for_sweep(
            conn, created_before=created_before, swept_before=swept_before, now=now, limit=limit
        )


async def _owned(conn: asyncpg.Connection, bill: Bill, payer: Payer) -> bool:
    """Whether the payer may pay the bill: billed to their account, a bill of the plate
    they named (anyone who knows the plate pays its bills), or a bill of a plate their
    account holds verified (全市通停: the arrears follow the plate)."""
    if logic.owns(bill, payer):
        return True
    if payer.account_id is None or bill.plate is None:
        return False
    return bool(await accounts.my_plates(conn, payer.account_id, plate=bill.plate))


async def _disputable(conn: asyncpg.Connection, bill: Bill, account_id: str) -> bool:
    """A bill the account may contest: billed to it, or a bill of a plate it holds verified
    that closed since the binding. Paying a friend's bill gives no say over it."""
    if bill.account_id == account_id:
        return True
    if bill.plate is None:
        return False
    held = await accounts.my_plates(conn, account_id, plate=bill.plate)
    return any(bill.closed_at >= b.bound_at for b in held)


# --------------------------------------------------------------------------- operator decisions


async def paid_by_deduction(conn: asyncpg.Connection, bill: Bill) -> Deduction | None:
    """The contactless deduction whose payment settled the bill, if one did."""
    if bill.payment_ref is None:
        return None
    deduction = await store.deduction_of_bill(conn, bill.id)
    if deduction is None:
        return None
    attempt = await store.attempt(conn, deduction.attempt_id)
    if attempt is None or attempt.out_trade_no != bill.payment_ref:
        return None
    return deduction


async def _refundable_fen(conn: asyncpg.Connection, bill: Bill) -> int:
    """What may still be refunded of the bill: its refundable amount less the refunds
    already approved or in flight."""
    in_flight = sum(
        r.amount_fen for r in await store.refund_requests_in_flight_of_bill(conn, bill.id)
    )
    return bill.refundable_fen - in_flight


async def _paying_attempt(conn: asyncpg.Connection, bill: Bill) -> Attempt:
    """The attempt whose payment settled the bill (a refund goes back the way it came)."""
    attempt = (
        None
        if bill.payment_ref is None
        else await store.attempt_by_out_trade_no(conn, bill.payment_ref)
    )
    if attempt is None or bill.provider is None:
        raise Conflict(f"bill {bill.id} was not paid through a payment of this platform")
    return attempt


async def _approved_refund(
    conn: asyncpg.Connection,
    bill: Bill,
    attempt: Attempt,
    *,
    amount_fen: int,
    reason: str,
    requested_by: str,
    decided_by: str,
    remark: str,
    dispute_id: str | None,
    now: datetime,
) -> str:
    """Record an approved refund request of the bill (its out_refund_no fixed now, so a
    retried submission is the same refund at the provider); returns its id."""
    request_id = new_id("rr", now)
    await store.insert_refund_request(
        conn,
        request_id=request_id,
        bill_id=bill.id,
        attempt_id=attempt.id,
        provider=attempt.provider,
        out_trade_no=attempt.out_trade_no,
        out_refund_no=logic.out_refund_no(request_id),
        amount_fen=amount_fen,
        status=RefundStatus.APPROVED,
        reason=reason,
        requested_by=requested_by,
        decided_by=decided_by,
        remark=remark,
        dispute_id=dispute_id,
        anomaly_id=None,
        now=now,
    )
    return request_id


async def request_refund(
    conn: asyncpg.Connection,
    bill_id: str,
    *,
    reason: str,
    by: str,
    role: str,
    remark: str,
    now: datetime,
) -> str | None:
    """Ask for the refund of all that is left of a paid bill, through the provider that took
    it (an operator's decision: a voided stay, a deduction from a misread plate's mandate).

    In the caller's transaction: commits an approved refund request with its fixed
    out_refund_no, the same kind a dispute upheld makes; the caller hands its id to
    ``submit_refunds`` after the commit (or the sweeper sends it). The bill moves and
    the ledger's refund posts when the provider confirms. Audited. Returns the
    request's id, or None when nothing is left to refund (refunded already, or
    refunds in flight cover it).
    """
    bill = await bills.get(conn, bill_id)
    amount = await _refundable_fen(conn, bill)
    if amount <= 0:
        return None
    request_id = await _approved_refund(
        conn,
        bill,
        await _paying_attempt(conn, bill),
        amount_fen=amount,
        reason=reason[:500],
        requested_by=by,
        decided_by=by,
        remark=remark[:2000],
        dispute_id=None,
        now=now,
    )
    await store.audit(
        conn,
        at=now,
        actor=by,
        role=role,
        action="refund.requested",
        target=f"bill:{bill.id}",
        details={"refund_request_id": request_id, "amount_fen": amount, "reason": reason},
    )
    return request_id


async def submit_refunds(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    request_ids: Sequence[str],
    *,
    notify_base_url: str | None,
    now: datetime,
) -> dict[str, RefundStatus]:
    """Send refund requests committed by ``request_refund`` (after the caller's commit).

    Never raises for one request: a provider that is not configured here, does
    not answer or refuses leaves the request approved (for the sweeper) or
    failed (an anomaly), as ``submit_refund`` decides. Returns each request's
    status afterwards.
    """
    statuses: dict[str, RefundStatus] = {}
    for request_id in request_ids:
        async with _connection(pool) as conn:
            request = await store.refund_request(conn, request_id)
        if request is None:
            continue
        provider = providers.get(request.provider)
        if provider is None:
            statuses[request_id] = request.status
            continue
        notify = None if not notify_base_url else logic.notify_url(notify_base_url, provider.name)
        try:
            statuses[request_id] = await submit_refund(
                pool, provider, request_id, notify_url=notify, now=now
            )
        except port.ProviderError as exc:
            log.warning("refund left to the sweeper", refund_request_id=request_id, error=str(exc))
            statuses[request_id] = RefundStatus.APPROVED
    return statuses
