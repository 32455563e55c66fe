"""The payment modules' shared ground: transactions over the pool, the anomaly
writer, the audit of decisions and the small reads every flow makes.

Everything above imports this module and nothing here imports them, so the
flows split into modules without a cycle (order in ``parking.payments``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final, cast

import asyncpg
import msgspec
import structlog

from parking.accounts import service as accounts
from parking.bills.model import (
    Bill,
)
from parking.errors import InvalidInput
from parking.ids import new_id
from parking.payments import logic, store
from parking.payments.model import (
    Anomaly,
    Attempt,
    Deduction,
    Dispute,
    NewAnomaly,
    NotContactless,
    Payer,
)
from parking.payments.port import (
    ContactlessProvider,
    PaymentProvider,
)

log = structlog.get_logger("parking.payments")


#: Who the flow's own bill events and audit rows name.
SYSTEM_ACTOR: Final = "payments"


#: Errors meaning "the database went away mid-use-case": the transaction was
#: rolled back, nothing was applied, the provider will send it again.
DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def contactless_rail(provider: PaymentProvider) -> ContactlessProvider:
    if not isinstance(provider, ContactlessProvider):
        raise NotContactless(f"{provider.name} has no contactless rail")
    return provider


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        async with conn.transaction():
            yield conn


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as proxy:
        yield cast(asyncpg.Connection, proxy)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    #: refund requests created here, to send to the provider after the commit
    refunds: tuple[str, ...] = ()


async def record_anomaly(conn: asyncpg.Connection, anomaly: NewAnomaly, now: datetime) -> Anomaly:
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


def remark_text(remark: str) -> str:
    remark = remark.strip()
    if not remark:
        raise InvalidInput("a decision needs a remark")
    return remark


async def audit_decision(
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


async def deduction_of_bill(conn: asyncpg.Connection, bill_id: str) -> Deduction | None:
    return await store.deduction_of_bill(conn, bill_id)


async def attempts_of_bill(conn: asyncpg.Connection, bill_id: str) -> list[Attempt]:
    return await store.attempts_of_bill(conn, bill_id)


async def attempt_by_out_trade_no(conn: asyncpg.Connection, out_trade_no: str) -> Attempt | None:
    return await store.attempt_by_out_trade_no(conn, out_trade_no)


async def payer_owns(conn: asyncpg.Connection, bill: Bill, payer: Payer) -> bool:
    """Whether the payer may pay the bill: billed to their account, a bill of the plate
    they named (anyone who knows the plate pays its bills), or a bill of a plate their
    account holds verified (全市通停: the arrears follow the plate)."""
    if logic.owns(bill, payer):
        return True
    if payer.account_id is None or bill.plate is None:
        return False
    return bool(await accounts.my_plates(conn, payer.account_id, plate=bill.plate))


async def disputable(conn: asyncpg.Connection, bill: Bill, account_id: str) -> bool:
    """A bill the account may contest: billed to it, or a bill of a plate it holds verified
    that closed since the binding. Paying a friend's bill gives no say over it."""
    if bill.account_id == account_id:
        return True
    if bill.plate is None:
        return False
    held = await accounts.my_plates(conn, account_id, plate=bill.plate)
    return any(bill.closed_at >= b.bound_at for b in held)
