"""Contactless (无感支付): mandates per plate and provider, the deduction asked when
a bill opens, revocation when the plate's holder changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg

from parking.accounts import service as accounts
from parking.bills import service as bills
from parking.bills.model import (
    BillStatus,
)
from parking.ids import new_id
from parking.payments import logic, port, store
from parking.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    Deduction,
    DeductionStatus,
    Mandate,
    MandateNotAuthorised,
    MandateState,
    Payer,
)
from parking.payments.notifications import give_up
from parking.payments.pay import open_attempt
from parking.payments.port import (
    PaymentProvider,
    ProviderRejected,
    ProviderUnavailable,
)
from parking.payments.txn import contactless_rail, log, transaction


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
    rail = contactless_rail(provider)
    status = await rail.mandate_status(plate, plate_color, payer_id)
    if status.state is not port.MandateState.ACTIVE:
        raise MandateNotAuthorised(
            f"{provider.name} shows plate {plate} as {status.provider_state} for this payer"
        )
    async with transaction(pool) as conn:
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


async def mandates_of_account(conn: asyncpg.Connection, account_id: str) -> list[Mandate]:
    """Which of the account's plates have contactless payment on (or paused)."""
    return await store.mandates_of_account(conn, account_id)


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
    async with transaction(pool) as conn:
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
            attempt = await open_attempt(
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
    rail = contactless_rail(providers[mandate.provider])
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
    async with transaction(pool) as conn:
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
    async with transaction(pool) as conn:
        locked = await store.attempt(conn, attempt.id, lock=True)
        current = await store.deduction_of_bill(conn, deduction.bill_id, lock=True)
        assert locked is not None
        assert current is not None
        if current.status is not DeductionStatus.REQUESTED:
            return current  # a notification got here first
        if locked.status is AttemptStatus.PENDING:
            # A timed-out request may have been accepted after all: the
            # sweeper asks once more (recheck) whether money was taken.
            await give_up(
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


async def claim_for_sweep(
    pool: asyncpg.Pool,
    *,
    created_before: datetime,
    swept_before: datetime,
    now: datetime,
    limit: int,
) -> list[Attempt]:
    async with transaction(pool) as conn:
        return await store.claim_for_sweep(
            conn, created_before=created_before, swept_before=swept_before, now=now, limit=limit
        )
