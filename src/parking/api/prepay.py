"""Paying in the lot before the exit (场内缴费): pay now, then leave free within the
lot's exit window (``lots.exit_window_minutes``, 15 minutes unless an operator set it).

``POST /v1/me/sessions/{session_id}/prepay`` (a stay of mine) or
``POST /v1/scans/lot`` (the lot's code and any plate: that plate's stay in that
lot only) prices the open stay up to now and bills what earlier prepayments did
not (a prepay bill); the app then pays the
bills it lists through ``POST /v1/bills/pay`` like any other bill. Once they
are paid the exit lane opens for nothing within the window and shows so; after
the window billing resumes: the close bills the whole stay's fee less what the
prepayments paid (``bills.logic.due_at_exit``, applied in the persister's
transaction that closes the session). A prepay bill is an offer until the exit:
unpaid, it is nobody's arrears and never holds the car; the close lets it lapse
(written off) and bills the whole stay less what was paid.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import asyncpg
import msgspec
import structlog
from litestar import Request, post
from litestar.params import JSONBody, PathParameter

from parking.accounts import service as accounts
from parking.api.auth import principal_of
from parking.api.denied import audit_denied
from parking.api.infra import connection, infra_of
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import clock_of, driver_only, problem_responses
from parking.api.scans import scan_place
from parking.errors import NotFound
from parking.plates import normalise
from parking.pricing import Pricer
from parking.scans import prepay as prepaying
from parking.scans.prepay import Prepayment
from parking.scans.service import NoOpenSession, WrongCode
from parking.sessions import service as sessions

log = structlog.get_logger("parking.api")

SessionIdParam = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: The route takes no body; anything sent is refused before it is read.
BODY_MAX: Final = 64
# Typing plates at a lot's code: a driver paying for their own or a friend's car
# needs a few tries; this stops anyone standing in a lot from sweeping plates.
LOT_SCAN_PER_ACCOUNT: Final = (Rule("scan-lot-10m", 10, 600), Rule("scan-lot-1d", 50, 86400))


@post(
    "/v1/me/sessions/{session_id:str}/prepay",
    guards=driver_only,
    tags=["sessions"],
    summary="Pay in the lot before the exit: bill the stay up to now, then leave free "
    "within the exit window",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def prepay(request: Request[Any, Any, Any], session_id: SessionIdParam) -> Prepayment:
    """Idempotent within the window: asking again bills nothing new. A stay of
    mine (my scan's, or my verified plate's since I bound it) that is not open is a
    409; anyone else's is a 404 (audited). Someone else's car: scan the lot's code
    (``POST /v1/scans/lot``)."""
    infra = infra_of(request.app)
    me = principal_of(request).subject
    now = clock_of(request).now()
    async with connection(infra) as conn:
        row = await sessions.holder_view(conn, session_id)
        if row is None or not await _mine(conn, row, me):
            if row is not None:  # someone else's: audited (matrix A1)
                await audit_denied(
                    conn, actor=me, action="denied:prepay", target=session_id, now=now
                )
            raise NotFound(f"no session {session_id}")
    return await _prepay(request, session_id, me, now)


async def _mine(conn: asyncpg.Connection, session: asyncpg.Record, me: str) -> bool:
    if session["account_id"] == me:
        return True
    if session["plate"] is None or session["entry_at"] is None:
        return False
    held = await accounts.my_plates(conn, me, plate=session["plate"])
    return any(session["entry_at"] >= b.bound_at for b in held)


class LotScanRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The lot's code (the printed URL or the token after ``/q/``) and the plate typed."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    plate: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


@post(
    "/v1/scans/lot",
    guards=driver_only,
    tags=["scans"],
    summary="In a lot: scan its code and type a plate to pay that car's stay before "
    "leaving (场内缴费), any plate, this lot only",
    status_code=200,
    request_max_body_size=2 * 1024,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 429, 503),
)
async def scan_lot(request: Request[Any, Any, Any], data: JSONBody[LotScanRequest]) -> Prepayment:
    """The plate's open session in the scanned lot only (404 if it has none there), billed
    up to now as a prepayment anyone may pay. Standing in the lot, one learns nothing
    the car park's own pay station would not show; elsewhere nothing. An unpaid
    prepayment is an offer: it never counts as arrears and lapses at the exit."""
    infra = infra_of(request.app)
    me = principal_of(request).subject
    await RateLimiter(infra.redis).enforce([(f"scan-lot:account:{me}", LOT_SCAN_PER_ACCOUNT)])
    place = await scan_place(infra, data.code)
    if place.kind != "lot":
        raise WrongCode("this is not a lot code: scan the code posted in the lot")
    plate = normalise(data.plate)
    async with connection(infra) as conn:
        session_id = await sessions.open_in_lot(conn, place.lot_id, plate)
    if session_id is None:
        raise NoOpenSession(f"{plate} has no open session in {place.lot_name}")
    return await _prepay(request, session_id, me, clock_of(request).now())


async def _prepay(
    request: Request[Any, Any, Any], session_id: str, me: str, now: datetime
) -> Prepayment:
    infra = infra_of(request.app)
    pricer: Pricer = await request.app.state.pricer_cache.get(infra.pool)
    return await prepaying.prepay(infra.pool, infra.redis, session_id, me, now, pricer)


ROUTES = [prepay, scan_lot]
