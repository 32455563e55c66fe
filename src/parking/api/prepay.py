"""Paying in the lot before the exit (场内缴费): pay now, then leave free within the
lot's exit window (``lots.exit_window_minutes``, 15 minutes unless an operator set it).

``POST /v1/me/sessions/{session_id}/prepay`` prices the open stay up to now and
bills what earlier prepayments did not (a prepay bill); the app then pays the
bills it lists through ``POST /v1/bills/pay`` like any other bill. Once they
are paid the exit lane opens for nothing within the window and shows so; after
the window billing resumes: the close bills the whole stay's fee less what the
prepayments billed (``bills.logic.due_at_exit``, applied in the persister's
transaction that closes the session).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
import structlog
from litestar import Request, post
from litestar.params import PathParameter
from redis.exceptions import RedisError

from parking.api.auth import principal_of, roles
from parking.api.denied import audit_denied
from parking.api.drivers import problem_responses
from parking.api.infra import connection, infra_of
from parking.auth.model import Role
from parking.bills import logic as bills_logic
from parking.bills import service as bills
from parking.bills.model import BillKind, BillStatus
from parking.clock import SystemClock
from parking.errors import Conflict, NotFound
from parking.occupancy import store as occupancy_store
from parking.occupancy.logic import to_ms
from parking.pricing import Pricer
from parking.tariffs import quote_to_json

log = structlog.get_logger("parking.api")
_clock = SystemClock()

SessionIdParam = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: The route takes no body; anything sent is refused before it is read.
BODY_MAX: Final = 64


class Prepayment(msgspec.Struct, frozen=True, kw_only=True):
    """Where a stay stands after paying in the lot."""

    session_id: str
    lot_id: str
    plate: str | None
    entry_at: datetime
    quoted_at: datetime
    #: the whole stay's fee up to ``quoted_at``
    stay_fen: int
    #: what the prepay bills of the stay billed together
    billed_fen: int
    #: of which paid
    paid_fen: int
    #: prepay bills still to pay (pay them with POST /v1/bills/pay)
    due_bill_ids: list[str]
    due_fen: int
    #: leave free until then (every prepayment paid); null until paid
    leave_by: datetime | None
    exit_window_s: int


class SessionEnded(Conflict):
    """The session is no longer open: its bill (if any) is in my bills."""


@post(
    "/v1/me/sessions/{session_id:str}/prepay",
    guards=[roles(Role.DRIVER)],
    tags=["sessions"],
    summary="Pay in the lot before the exit: bill the stay up to now, then leave free "
    "within the exit window",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def prepay(request: Request[Any, Any, Any], session_id: SessionIdParam) -> Prepayment:
    """Idempotent within the window: asking again bills nothing new. A stay of
    mine that is not open is a 409; anyone else's is a 404 (audited)."""
    infra = infra_of(request.app)
    me = principal_of(request).subject
    now = _clock.now()
    pricer: Pricer = await request.app.state.pricer_cache.get(infra.pool)
    async with connection(infra) as conn:
        mine = await conn.fetchval(
            """SELECT coalesce(s.account_id = $2, false) OR EXISTS (
                          SELECT 1 FROM vehicles v WHERE v.plate = s.plate
                             AND v.account_id = $2 AND v.released_at IS NULL)
               FROM sessions s WHERE s.id = $1""",
            session_id,
            me,
        )
        if not mine:
            if mine is not None:  # someone else's: audited (matrix A1)
                await audit_denied(
                    conn, actor=me, action="denied:prepay", target=session_id, now=now
                )
            raise NotFound(f"no session {session_id}")
    async with connection(infra, transaction=True) as conn:
        row = await conn.fetchrow(
            """SELECT s.id, s.lot_id, s.plate, s.status, s.entry_at,
                      make_interval(mins => l.exit_window_minutes) AS exit_window
               FROM sessions s JOIN lots l ON l.id = s.lot_id
               WHERE s.id = $1 FOR UPDATE OF s""",
            session_id,
        )
        assert row is not None  # sessions are never deleted
        if row["status"] != "open" or row["entry_at"] is None:
            raise SessionEnded(f"session {session_id} has ended; its bill is in your bills")
        window = row["exit_window"]
        owed = await bills.prepayments(conn, session_id)
        stand = bills_logic.standing(
            [bills_logic.Prepayment.of(b) for b in owed], at=now, window=window
        )
        priced = pricer.price(
            lot_id=row["lot_id"], plate=row["plate"], entry=row["entry_at"], exit=now
        )
        in_window = stand.leave_by is not None and now <= stand.leave_by
        more = priced.fee_fen - stand.billed_fen
        if not in_window and more > 0 and priced.tariff_id and priced.tariff_version:
            quote = msgspec.json.decode(quote_to_json(priced.quote)) if priced.quote else {}
            await bills.open_bill(
                conn,
                session_id=session_id,
                lot_id=row["lot_id"],
                plate=row["plate"],
                account_id=me,
                amount_fen=more,
                tariff_id=priced.tariff_id,
                tariff_version=priced.tariff_version,
                quote=msgspec.json.encode(
                    {**quote, "stay_fen": priced.fee_fen, "prepaid_fen": stand.billed_fen}
                ),
                closed_at=now,
                now=now,
                actor=f"driver:{me}",
                kind=BillKind.PREPAY,
            )
            owed = await bills.prepayments(conn, session_id)
            stand = bills_logic.standing(
                [bills_logic.Prepayment.of(b) for b in owed], at=now, window=window
            )
    if row["plate"] is not None:
        try:
            await occupancy_store.set_prepaid(
                infra.redis,
                lot_id=row["lot_id"],
                plate=row["plate"],
                session_id=session_id,
                billed_fen=stand.billed_fen,
                leave_by_ms=None if stand.leave_by is None else to_ms(stand.leave_by),
            )
        except RedisError as exc:  # only the exit's display reads it; the bill is right anyway
            log.warning("prepaid_hint_failed", session_id=session_id, error=repr(exc))
    due = [
        b for b in owed if b.paid_at is None and b.status in (BillStatus.OPEN, BillStatus.PAYING)
    ]
    return Prepayment(
        session_id=session_id,
        lot_id=row["lot_id"],
        plate=row["plate"],
        entry_at=row["entry_at"],
        quoted_at=now,
        stay_fen=priced.fee_fen,
        billed_fen=stand.billed_fen,
        paid_fen=sum(b.amount_fen for b in owed if b.paid_at is not None),
        due_bill_ids=[b.id for b in due],
        due_fen=sum(b.amount_fen for b in due),
        leave_by=stand.leave_by,
        exit_window_s=int(window.total_seconds()),
    )


ROUTES = [prepay]
