"""Drivers' sessions, bills, receipts and contactless payment (全市通停: one account, every lot).

The driver's sessions, bills and receipts routes share the one "is this mine"
rule and its audit of refusals.

What is "mine" is answered by one rule, ``accounts.service.my_plates``: a plate
is typed in by anyone, so where a car is and was (its current session, its
history, its bills with their times) is shown only to the plate's *verified*
holder, and only from the binding on, so neither a stranger who bound the plate
nor a plate's earlier holder learns it. Paying a plate's bills is open to
anyone who names the plate (先离后缴 for a friend's car): they see the amount,
the lot and the day, never the times (``POST /v1/plate-bills`` with the plate in the
body: a plate never goes in a URL).

The current sessions, live from the occupancy core with PostgreSQL behind it,
are ``parking.occupancy.stays``. Anything not mine is a 404, the same as
something that does not exist, and the attempt is written to the audit log
(reliability matrix A1).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Final

import asyncpg
import msgspec
from litestar import Request, get, post
from litestar.params import JSONBody, PathParameter

from parking.accounts import service as accounts
from parking.accounts.model import Binding
from parking.api.auth import principal_of
from parking.api.denied import audit_denied
from parking.api.infra import connection, infra_of
from parking.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    InvalidCursor,
    LimitParam,
    decode_cursor,
    encode_cursor,
)
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import clock_of, driver_only, problem_responses
from parking.bills import service as bills
from parking.bills.model import Bill, UnknownBill
from parking.clock import SHANGHAI
from parking.errors import NotFound
from parking.lots import service as lots
from parking.occupancy import stays
from parking.occupancy.model import CurrentSessions
from parking.payments import pay as pay_flow
from parking.plates import normalise
from parking.pricing import Pricer
from parking.sessions import service as sessions

BODY_MAX: Final = 2 * 1024

# Looking up a plate's bills is typing a plate: a driver paying for a friend's car
# needs a few tries; these stop anyone sweeping plates for where cars were billed.
PLATE_BILLS_PER_ACCOUNT: Final = (
    Rule("plate-bills-10m", 20, 600),
    Rule("plate-bills-1d", 100, 86400),
)

BillIdParam = Annotated[str, PathParameter(pattern=r"^b-[0-9A-HJKMNP-TV-Z]{26}$")]
# ------------------------------------------------------------------ views


class SessionItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    lot_id: str
    plate: str | None
    status: str
    entry_at: datetime | None
    exit_at: datetime | None
    fee_fen: int | None
    tariff_id: str | None
    tariff_version: int | None
    pricing_reason: str | None
    bill_id: str | None
    bill_status: str | None


class SessionPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SessionItem]
    next_cursor: str | None


class BillItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    session_id: str
    lot_id: str
    plate: str | None
    amount_fen: int
    status: str
    closed_at: datetime
    tariff_id: str
    tariff_version: int


class MyBills(msgspec.Struct, frozen=True, kw_only=True):
    """Every bill I still owe, in any lot of the city, oldest first."""

    items: list[BillItem]
    arrears_fen: int
    oldest_closed_at: datetime | None


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    bill_id: str
    session_id: str
    lot_id: str
    lot_name: str | None
    plate: str | None
    #: the times are shown to the account billed or the plate's verified holder; a
    #: friend who paid sees the day only
    entry_at: datetime | None
    exit_at: datetime | None
    day: date
    amount_fen: int
    refunded_fen: int
    status: str
    provider: str
    payment_ref: str
    paid_at: datetime
    tariff_id: str
    tariff_version: int


class PlateBill(msgspec.Struct, frozen=True, kw_only=True):
    """A bill of a plate as anyone who names the plate sees it: what, where and which day."""

    id: str
    lot_id: str
    lot_name: str | None
    #: the Asia/Shanghai day the stay was billed; never the times
    day: date
    amount_fen: int
    status: str


class PlateBillsRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The plate whose bills to list (in the body: a plate never goes in a URL)."""

    plate: Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["赣B12345"])]


class PlateBills(msgspec.Struct, frozen=True, kw_only=True):
    """What a plate owes: pay with POST /v1/bills/pay naming the plate."""

    plate: str
    items: list[PlateBill]
    owed_fen: int


# ------------------------------------------------------------------ helpers


async def _verified(conn: asyncpg.Connection, account_id: str) -> list[Binding]:
    return await accounts.my_plates(conn, account_id)


def _plate_text(raw: str) -> str:
    """A path plate as stored (normalised); invalid plates are a typed 400 (PlateError)."""
    return normalise(raw)


def _bill_item(bill: Bill) -> BillItem:
    return BillItem(
        id=bill.id,
        session_id=bill.session_id,
        lot_id=bill.lot_id,
        plate=bill.plate,
        amount_fen=bill.amount_fen,
        status=str(bill.status),
        closed_at=bill.closed_at,
        tariff_id=bill.tariff_id,
        tariff_version=bill.tariff_version,
    )


# ------------------------------------------------------------------ routes


@get(
    "/v1/me/sessions/current",
    guards=driver_only,
    tags=["sessions"],
    summary="My open sessions in any lot, each with the fee if I left now",
    responses=problem_responses(401, 403, 503),
)
async def current_sessions(request: Request[Any, Any, Any]) -> CurrentSessions:
    infra = infra_of(request.app)
    pricer: Pricer = await request.app.state.pricer_cache.get(infra.pool)
    items = await stays.current(
        infra.pool,
        infra.redis,
        pricer,
        principal_of(request).subject,
        now=clock_of(request).now(),
    )
    return CurrentSessions(items=items)


def _history_after(cursor: str | None) -> tuple[datetime, str] | None:
    key = decode_cursor(cursor)
    if key is None:
        return None
    at, sep, sid = key.partition("|")
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError as exc:
        raise InvalidCursor("cursor is not one this API handed out") from exc
    if not sep or not sid or parsed.tzinfo is None:
        raise InvalidCursor("cursor is not one this API handed out")
    return parsed, sid


@get(
    "/v1/me/sessions",
    guards=driver_only,
    tags=["sessions"],
    summary="My parking history, newest first, with fees and bills",
    responses=problem_responses(400, 401, 403),
)
async def session_history(
    request: Request[Any, Any, Any], cursor: CursorParam = None, limit: LimitParam = DEFAULT_LIMIT
) -> SessionPage:
    before = _history_after(cursor)
    account_id = principal_of(request).subject
    async with connection(infra_of(request.app)) as conn:
        rows = await sessions.history(conn, account_id, before=before, limit=limit + 1)
    items = [
        SessionItem(
            id=r["id"],
            lot_id=r["lot_id"],
            plate=r["plate"],
            status=r["status"],
            entry_at=r["entry_at"],
            exit_at=r["exit_at"],
            fee_fen=r["fee_fen"],
            tariff_id=r["tariff_id"],
            tariff_version=r["tariff_version"],
            pricing_reason=r["pricing_reason"],
            bill_id=r["bill_id"],
            bill_status=r["bill_status"],
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit and rows[:limit]:
        last = rows[limit - 1]
        next_cursor = encode_cursor(f"{last['at'].isoformat()}|{last['id']}")
    return SessionPage(items=items, next_cursor=next_cursor)


@get(
    "/v1/me/bills",
    guards=driver_only,
    tags=["bills"],
    summary="Every bill I still owe in any lot of the city (全市通停), and the total",
    responses=problem_responses(401, 403),
)
async def my_bills(request: Request[Any, Any, Any]) -> MyBills:
    """Bills of my account, and bills of the plates I hold verified that closed since I
    bound them: arrears follow the plate (the same rule as paying them,
    ``parking.payments.pay``). A plate's older bills: ``POST /v1/plate-bills``."""
    account_id = principal_of(request).subject
    async with connection(infra_of(request.app)) as conn:
        owed = {b.id: b for b in await bills.open_bills(conn, account_id=account_id)}
        for held in await _verified(conn, account_id):
            for bill in await bills.open_bills(conn, plate=held.plate):
                if bill.closed_at >= held.bound_at:
                    owed.setdefault(bill.id, bill)
    ordered = sorted(owed.values(), key=lambda b: (b.closed_at, b.id))
    return MyBills(
        items=[_bill_item(b) for b in ordered],
        arrears_fen=sum(b.outstanding_fen for b in ordered),
        oldest_closed_at=ordered[0].closed_at if ordered else None,
    )


@get(
    "/v1/me/receipts/{bill_id:str}",
    guards=driver_only,
    tags=["bills"],
    summary="The receipt of one of my paid bills",
    responses=problem_responses(400, 401, 403, 404),
)
async def receipt(request: Request[Any, Any, Any], bill_id: BillIdParam) -> Receipt:
    account_id = principal_of(request).subject
    async with connection(infra_of(request.app)) as conn:
        try:
            bill = await bills.get(conn, bill_id)
        except UnknownBill:
            bill = None
        if bill is None or not await _paid_or_billed_to(conn, bill, account_id):
            if bill is not None:
                await audit_denied(
                    conn,
                    actor=account_id,
                    action="denied:receipt",
                    target=f"bill:{bill_id}",
                    now=clock_of(request).now(),
                )
            raise NotFound(f"no receipt {bill_id}")
        if bill.paid_at is None or bill.provider is None or bill.payment_ref is None:
            raise NotFound(f"bill {bill_id} is not paid, so it has no receipt yet")
        lot_name = (await lots.lot_names(conn, [bill.lot_id])).get(bill.lot_id)
        entry_at = await sessions.entry_at(conn, bill.session_id)
        times = await _sees_times(conn, bill, account_id)
    return Receipt(
        bill_id=bill.id,
        session_id=bill.session_id,
        lot_id=bill.lot_id,
        lot_name=lot_name,
        plate=bill.plate,
        entry_at=entry_at if lot_name is not None and times else None,
        exit_at=bill.closed_at if times else None,
        day=bill.closed_at.astimezone(SHANGHAI).date(),
        amount_fen=bill.amount_fen,
        refunded_fen=bill.refunded_fen,
        status=str(bill.status),
        provider=bill.provider,
        payment_ref=bill.payment_ref,
        paid_at=bill.paid_at,
        tariff_id=bill.tariff_id,
        tariff_version=bill.tariff_version,
    )


async def _paid_or_billed_to(conn: asyncpg.Connection, bill: Bill, account_id: str) -> bool:
    """A receipt is mine if the bill was billed to my account or I paid it. Not merely
    because its plate is mine now: a plate's earlier holder's payments stay theirs."""
    if bill.account_id == account_id:
        return True
    return await pay_flow.paid_by(conn, bill.id, account_id)


async def _sees_times(conn: asyncpg.Connection, bill: Bill, account_id: str) -> bool:
    """When a stay began and ended is the business of the account billed and of the
    plate's verified holder since the binding, not of a friend who paid it."""
    if bill.account_id == account_id:
        return True
    if bill.plate is None:
        return False
    held = await accounts.my_plates(conn, account_id, plate=bill.plate)
    return any(bill.closed_at >= b.bound_at for b in held)


@post(
    "/v1/plate-bills",
    guards=driver_only,
    tags=["bills"],
    summary="What a plate owes, to pay it for a friend's car (先离后缴): amount, lot and "
    "day, never the times (a lookup: the plate goes in the body, never in a URL)",
    status_code=200,
    request_max_body_size=1024,
    responses=problem_responses(400, 401, 403, 413, 429, 503),
)
async def plate_bills(
    request: Request[Any, Any, Any], data: JSONBody[PlateBillsRequest]
) -> PlateBills:
    """Open to any driver who knows the plate, rate limited per account; an unpaid
    prepayment of a stay still under way is an offer, not a debt, and is not listed."""
    infra = infra_of(request.app)
    text = _plate_text(data.plate)
    await RateLimiter(infra.redis).enforce(
        [(f"plate-bills:account:{principal_of(request).subject}", PLATE_BILLS_PER_ACCOUNT)]
    )
    async with connection(infra) as conn:
        owed = await bills.open_bills(conn, plate=text)
        names = await lots.lot_names(conn, sorted({b.lot_id for b in owed}))
    return PlateBills(
        plate=text,
        items=[
            PlateBill(
                id=b.id,
                lot_id=b.lot_id,
                lot_name=names.get(b.lot_id),
                day=b.closed_at.astimezone(SHANGHAI).date(),
                amount_fen=b.amount_fen,
                status=str(b.status),
            )
            for b in owed
        ],
        owed_fen=sum(b.outstanding_fen for b in owed),
    )


ROUTES = [
    plate_bills,
    current_sessions,
    session_history,
    my_bills,
    receipt,
]
