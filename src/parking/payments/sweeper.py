"""The sweeper (reliability matrix P7): what the provider never told us, we ask it.

WeChat re-sends a notification for about 24 hours and then gives up; a
notification can also be dropped on the way or refused by us while the
database was down. So a pending attempt older than ``stuck_after`` is queried:

- paid: settled exactly as its notification would have been (the same
  idempotent path; the late notification then finds it paid);
- closed, or failed (native): closed at the provider if it still shows it
  payable, the attempt marked expired, its bills open again;
- a contactless deduction that failed: failed, its bill open (leave first,
  pay later);
- still payable before its deadline, or a deduction still accepted: left for
  the next sweep.

It also re-sends approved refunds the provider has not confirmed (same
out_refund_no, so one refund), asks about failed contactless deductions
whose request timed out (``recheck``), and prunes completed idempotency keys
after 24 hours.

One attempt or refund that fails in a way nobody foresaw is logged, counted
in ``errors`` (a refund also keeps it as its ``last_error``) and left for the
next sweep; it never stops the sweep of the others.

Several sweepers may run: each claims its attempts for ``requery_after`` (a
lease on ``swept_at``, claimed with SKIP LOCKED), so an order is not queried
by two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

import asyncpg
import msgspec
import structlog

from parking.clock import Clock
from parking.payments import contactless as payment_contactless
from parking.payments import idempotency as payment_idempotency
from parking.payments import logic, notifications
from parking.payments import refunds as payment_refunds
from parking.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    RefundStatus,
    SweepReport,
)
from parking.payments.port import (
    ContactlessProvider,
    OrderNotFound,
    OrderState,
    OrderStatus,
    PaymentProvider,
    ProviderError,
    ProviderRejected,
)

log = structlog.get_logger("parking.payments.sweeper")

#: A pending attempt younger than this is not queried: its notification is
#: normally seconds away, and querying every fresh order would double the
#: provider traffic for nothing.
STUCK_AFTER: Final = timedelta(seconds=60)
#: An attempt (or refund) queried less than this ago is not queried again:
#: the lease between sweepers and the pace of re-queries of one order.
REQUERY_AFTER: Final = timedelta(seconds=30)
#: How often ``parking payments sweep`` sweeps.
INTERVAL: Final = timedelta(seconds=30)
#: Attempts per sweep: bounds a sweep's length after an outage left many.
BATCH: Final = 200
#: The database going away: the whole sweep is over (``run`` retries next
#: interval). Any other error belongs to one item, which is skipped.
_DB_GONE: Final = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    OSError,
)


async def _query(provider: PaymentProvider, attempt: Attempt) -> OrderStatus | None:
    try:
        if attempt.kind is AttemptKind.CONTACTLESS:
            if not isinstance(provider, ContactlessProvider):
                raise ProviderRejected(provider.name, "NOT_CONTACTLESS", "no contactless rail")
            return await provider.query_deduction(attempt.out_trade_no)
        return await provider.query_order(attempt.out_trade_no)
    except OrderNotFound:
        return None


async def _sweep_attempt(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    attempt: Attempt,
    report: SweepReport,
    *,
    now: datetime,
    notify_base_url: str | None,
) -> None:
    refund_notify = (
        None if notify_base_url is None else logic.notify_url(notify_base_url, provider.name)
    )
    status = await _query(provider, attempt)
    report.queried += 1
    if attempt.status is not AttemptStatus.PENDING:
        # A failed deduction whose request timed out: was the money taken after all?
        if status is not None and status.state in (OrderState.PAID, OrderState.REFUNDED):
            await notifications.settle_from_status(
                pool, provider, status, now=now, refund_notify_url=refund_notify
            )
            report.settled += 1
        elif status is None or status.state in (OrderState.CLOSED, OrderState.FAILED):
            await notifications.stop_recheck(pool, attempt.id, now=now)
        else:
            report.still_pending += 1
        return
    decision = logic.sweep_decision(attempt, status, now)
    match decision:
        case logic.Settle(status=paid):
            await notifications.settle_from_status(
                pool, provider, paid, now=now, refund_notify_url=refund_notify
            )
            report.settled += 1
        case logic.Expire(close_first=close_first, reason=reason):
            if close_first:
                try:
                    await provider.close_order(attempt.out_trade_no)
                except ProviderRejected as exc:
                    # Typically ORDERPAID: paid since we asked; the next sweep settles it.
                    log.info("close refused", out_trade_no=attempt.out_trade_no, error=str(exc))
                    report.still_pending += 1
                    return
            if await notifications.end_attempt(
                pool, attempt.id, AttemptStatus.EXPIRED, reason=reason, now=now
            ):
                report.expired += 1
        case logic.Fail(reason=reason):
            if await notifications.end_attempt(
                pool, attempt.id, AttemptStatus.FAILED, reason=reason, now=now
            ):
                report.failed += 1
        case logic.Leave():
            report.still_pending += 1


async def sweep_once(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    *,
    now: datetime,
    notify_base_url: str | None = None,
    stuck_after: timedelta = STUCK_AFTER,
    requery_after: timedelta = REQUERY_AFTER,
    limit: int = BATCH,
) -> SweepReport:
    """One pass over stuck attempts and unconfirmed refunds (and old idempotency keys).

    Safe to run concurrently and again.
    """
    report = SweepReport()
    report.keys_pruned = await payment_idempotency.prune_idempotency_keys(pool, now=now)
    attempts = await payment_contactless.claim_for_sweep(
        pool,
        created_before=now - stuck_after,
        swept_before=now - requery_after,
        now=now,
        limit=limit,
    )
    for attempt in attempts:
        provider = providers.get(attempt.provider)
        if provider is None:
            log.warning("no adapter for a pending attempt", provider=attempt.provider)
            report.errors += 1
            continue
        try:
            await _sweep_attempt(
                pool, provider, attempt, report, now=now, notify_base_url=notify_base_url
            )
        except ProviderError as exc:
            # Unavailable (or refused the query): ask again next time.
            log.warning("query failed", out_trade_no=attempt.out_trade_no, error=str(exc))
            report.errors += 1
        except _DB_GONE:
            raise
        except Exception:
            # One attempt the flow cannot handle must not stop the others
            # (nor the refunds below); its lease brings it back next sweep.
            log.exception("sweeping an attempt failed", out_trade_no=attempt.out_trade_no)
            report.errors += 1
    for request in await payment_refunds.refund_requests_to_sweep(
        pool, updated_before=now - requery_after, limit=limit
    ):
        provider = providers.get(request.provider)
        if provider is None:
            report.errors += 1
            continue
        notify = (
            None if notify_base_url is None else logic.notify_url(notify_base_url, provider.name)
        )
        try:
            await payment_refunds.touch_refund_request(pool, request.id, now=now)
            result = await payment_refunds.submit_refund(
                pool, provider, request.id, notify_url=notify, now=now
            )
        except ProviderError as exc:
            log.warning("refund query failed", out_refund_no=request.out_refund_no, error=str(exc))
            report.errors += 1
            continue
        except _DB_GONE:
            raise
        except Exception as exc:
            # One bad refund never stops the sweep: it is logged, kept on the
            # request (last_error) and tried again at the requery pace, and the
            # sweep goes on to the others.
            log.exception("sweeping a refund failed", out_refund_no=request.out_refund_no)
            report.errors += 1
            await payment_refunds.note_refund_error(pool, request.id, f"sweep: {exc!r}", now=now)
            continue
        if result is RefundStatus.REFUNDED:
            report.refunds_completed += 1
        else:
            report.refunds_pending += 1
    return report


async def run(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    *,
    clock: Clock,
    stop: asyncio.Event,
    notify_base_url: str | None = None,
    interval: timedelta = INTERVAL,
    stuck_after: timedelta = STUCK_AFTER,
) -> None:
    """Sweep every ``interval`` until ``stop`` is set. A failed sweep is logged, not fatal."""
    while not stop.is_set():
        try:
            report = await sweep_once(
                pool,
                providers,
                now=clock.now(),
                notify_base_url=notify_base_url,
                stuck_after=stuck_after,
            )
            counts = msgspec.structs.asdict(report)
            log.info("sweep", **{name: count for name, count in counts.items() if count})
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("sweep failed; retrying next interval", error=repr(exc))
        except Exception:
            log.exception("sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval.total_seconds())
