"""Scan flows (一次扫码): a driver scans a signed lane or space code with the app.

- Entry lane code, for a car the camera cannot read (无牌车): opens a session tied
  to the driver's account and publishes the lane's ``open`` command over MQTT.
- Exit lane code: closes that session, prices it, bills it to the account
  (leave first, pay later) and opens the barrier.
- On-street space code: the driver claims the stay at that space for one of
  their plates; its entry is when the sensor saw the car arrive, or now when
  the sensor has not fired yet.

An unplated car's session belongs to the account that scanned it in
(``sessions.account_id``, plate NULL; one at a time city-wide). In the live
core it sits in the lot's sessions hash under ``acct:<account>`` (``occ_account``),
so it counts against the lot's capacity like any car, and a repeated scan finds
it there (idempotent). PostgreSQL is written first for the exit and second for
the entry, and each Redis step is undone when the PostgreSQL step fails, so the
two agree; ``parking occupancy rebuild`` restores the Redis side from
PostgreSQL after a Redis loss.

A space claim writes the plate into the core's city-wide plate index with the
core's own ``plate_claim`` function, so the plate's next entry anywhere
supersedes it as usual; the stay's end on the sensor's vacancy is not
automated (the driver's next entry, or an operator, ends it).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import Request, post
from litestar.params import JSONBody

from parking.accounts import service as accounts
from parking.api.auth import principal_of
from parking.api.denied import audit_if_held_by_another
from parking.api.drivers import _keyring
from parking.api.infra import Infra, connection, infra_of
from parking.api.routing import clock_of, driver_only, problem_responses
from parking.bills import service as bills
from parking.devices.messages import Topics
from parking.errors import Conflict, InvalidInput, NotFound
from parking.ids import new_id
from parking.occupancy import keys as occupancy_keys
from parking.occupancy import lane as lane_text
from parking.occupancy import logic as occupancy_logic
from parking.occupancy import store as occupancy_store
from parking.occupancy.model import CoreNotReady
from parking.plates import normalise
from parking.pricing import Pricer
from parking.qr import logic as qr_logic
from parking.qr import service as qr
from parking.qr.model import QrTarget
from parking.qr.service import Place
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus
from parking.tariffs import quote_to_json

BODY_MAX: Final = 2 * 1024

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
PlateText = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class ScanRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the app's scanner read (the printed URL or the token after ``/q/``)."""

    code: Code


class SpaceScanRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: Code
    plate: PlateText


class LaneCommand(msgspec.Struct, frozen=True, kw_only=True):
    """The command published to the lane (contracts/mqtt.md)."""

    command_id: str
    action: Literal["open", "hold"]
    plate: str | None
    session_id: str | None
    display: str
    issued_at: datetime


class ScanSession(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    lot_id: str
    lane_id: str | None
    space_id: str | None
    plate: str | None
    status: str
    entry_at: datetime
    exit_at: datetime | None = None
    fee_fen: int | None = None
    bill_id: str | None = None
    command: LaneCommand | None = None


class WrongCode(InvalidInput):
    """A genuine code, but not one for this flow (an exit code at the entry, a lot code...)."""


class LotFull(Conflict):
    pass


class NoOpenSession(NotFound):
    pass


def _entry_device(account_id: str) -> str:
    return f"account:{account_id}"


#: Places resolved recently, by target. Lanes and spaces are added and removed
#: by operators a few times a year; a scan at a busy gate should not cost two
#: PostgreSQL reads each time. A removed place keeps resolving for this long.
_PLACE_TTL_S: Final = 10.0
_places: dict[QrTarget, tuple[float, Place]] = {}


async def scan_place(infra: Infra, code: str) -> Place:
    """What a scanned code points at; the signature is checked on every scan."""
    token = qr_logic.verify(code, keyring=_keyring(infra), now=infra.clock.now())
    cached = _places.get(token.target)
    if cached is not None and time.monotonic() - cached[0] < _PLACE_TTL_S:
        return cached[1]
    async with connection(infra) as conn:
        place = await qr.place_of(conn, token.target)
    if len(_places) > 10_000:
        _places.clear()
    _places[token.target] = (time.monotonic(), place)
    return place


def _publish(infra: Infra, place: Place, command: LaneCommand) -> None:
    assert place.lane_id is not None
    topic = Topics(infra.settings.topic_prefix).commands(place.lot_id, place.lane_id)
    infra.publisher.publish(topic, msgspec.json.encode(command), qos=1)


def _open(session_id: str, display: str, now: datetime) -> LaneCommand:
    return LaneCommand(
        command_id=f"c-{session_id}",
        action="open",
        plate=None,
        session_id=session_id,
        display=display,
        issued_at=now,
    )


async def _let_in(
    infra: Infra, place: Place, account_id: str, sid: str, at: datetime
) -> tuple[str, str]:
    outcome, value = await occupancy_store.open_account_session(
        infra.redis,
        lot_id=place.lot_id,
        account_id=account_id,
        session_id=sid,
        at_ms=occupancy_logic.to_ms(at),
        full_policy=place.full_policy,
    )
    if outcome == "notready":
        raise CoreNotReady(f"lot {place.lot_id} is being rebuilt; scan again shortly")
    return outcome, value


async def _take_out(infra: Infra, place: Place, account_id: str, sid: str) -> None:
    """The unplated car's session leaves the lot's live count. A shard being rebuilt
    ('notready') needs nothing: the rebuild reads PostgreSQL, where it has ended."""
    await occupancy_store.end_in_lot(
        infra.redis,
        lot_id=place.lot_id,
        field=occupancy_keys.account_field(account_id),
        session_id=sid,
    )


def _entered(place: Place, sid: str, entry_at: datetime, command: LaneCommand) -> ScanSession:
    return ScanSession(
        session_id=sid,
        lot_id=place.lot_id,
        lane_id=place.lane_id,
        space_id=None,
        plate=None,
        status="open",
        entry_at=entry_at,
        command=command,
    )


@post(
    "/v1/scans/entry",
    guards=driver_only,
    tags=["scans"],
    summary="Scan an entry lane code: a session tied to my account opens the barrier (无牌车)",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def scan_entry(request: Request[Any, Any, Any], data: JSONBody[ScanRequest]) -> ScanSession:
    """Idempotent per account: scanning again while the session is open answers with
    the same session and opens the barrier again. One unplated session per account
    city-wide (409 with the lot otherwise); a full lot is a 409 unless it opens when full."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    place = await scan_place(infra, data.code)
    if place.kind != "lane" or place.direction != "in" or place.lane_id is None:
        raise WrongCode("this is not an entry lane code")
    now = clock_of(request).now()
    sid = new_id("s", now)
    outcome, value = await _let_in(infra, place, account_id, sid, now)
    if outcome == "exists":
        held_sid, entry_ms, *_ = value.split("|")
        async with connection(infra) as conn:
            still_open = await sessions.is_open(conn, held_sid)
        if still_open is False:
            # Ended in PostgreSQL only (an operator voided it): the core's entry
            # is stale; drop it and let this scan in as a new session.
            await _take_out(infra, place, account_id, held_sid)
            outcome, value = await _let_in(infra, place, account_id, sid, now)
    if outcome == "exists":
        held_sid, entry_ms, *_ = value.split("|")
        command = _open(held_sid, "无牌车 欢迎光临", now)
        _publish(infra, place, command)
        return _entered(place, held_sid, occupancy_logic.from_ms(int(entry_ms)), command)
    if outcome == "full":
        raise LotFull(f"lot {place.lot_id} is full")
    # opened, or nolot: the core does not know the lot (not loaded yet), PostgreSQL decides.
    try:
        await sessions.open_unplated(
            infra.pool,
            session_id=sid,
            lot_id=place.lot_id,
            entry_at=now,
            account_id=account_id,
            flags=("qr_entry",),
        )
    except asyncpg.UniqueViolationError as exc:
        await _take_out(infra, place, account_id, sid)
        async with connection(infra) as conn:
            elsewhere = await sessions.unplated_open_lot(conn, account_id)
        raise Conflict(f"you have an open session at lot {elsewhere}; leave it first") from exc
    except BaseException:
        await _take_out(infra, place, account_id, sid)
        raise
    command = _open(sid, "无牌车 欢迎光临", now)
    _publish(infra, place, command)
    return _entered(place, sid, now, command)


@post(
    "/v1/scans/exit",
    guards=driver_only,
    tags=["scans"],
    summary="Scan an exit lane code: my account-tied session closes, is billed, the barrier opens",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
async def scan_exit(request: Request[Any, Any, Any], data: JSONBody[ScanRequest]) -> ScanSession:
    """The fee becomes an open bill of my account (leave first, pay later), less
    what I paid in the lot (nothing within the exit window of that payment)."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    place = await scan_place(infra, data.code)
    if place.kind != "lane" or place.direction != "out" or place.lane_id is None:
        raise WrongCode("this is not an exit lane code")
    now = clock_of(request).now()
    pricer: Pricer = await request.app.state.pricer_cache.get(infra.pool)
    async with connection(infra, transaction=True) as conn:
        row = await sessions.lock_unplated_open(conn, place.lot_id, account_id)
        if row is None:
            raise NoOpenSession(f"you have no open session at lot {place.lot_id}")
        priced = pricer.price(lot_id=place.lot_id, plate=None, entry=row["entry_at"], exit=now)
        await sessions.record(
            conn,
            [
                SessionChange(
                    id=row["id"],
                    lot_id=place.lot_id,
                    status=SessionStatus.CLOSED,
                    entry_at=row["entry_at"],
                    exit_at=now,
                    exit_device_id=_entry_device(account_id),
                    fee_fen=priced.fee_fen,
                    tariff_id=priced.tariff_id,
                    tariff_version=priced.tariff_version,
                    pricing_reason=priced.reason,
                    quote=quote_to_json(priced.quote) if priced.quote is not None else None,
                )
            ],
            now=now,
        )
        bill = await bills.by_session(conn, row["id"])
    # After the commit: a failure here leaves the car counted until the next
    # rebuild, never a session that PostgreSQL still thinks open.
    await _take_out(infra, place, account_id, row["id"])
    due = bill.amount_fen if bill is not None else 0
    stay = lane_text.duration_text(row["entry_at"], now)
    display = f"无牌车 停车{stay} 应缴{due / 100:.2f}元"
    command = _open(row["id"] + "-out", display, now)
    _publish(infra, place, command)
    return ScanSession(
        session_id=row["id"],
        lot_id=place.lot_id,
        lane_id=place.lane_id,
        space_id=None,
        plate=None,
        status="closed",
        entry_at=row["entry_at"],
        exit_at=now,
        fee_fen=due,
        bill_id=bill.id if bill is not None else None,
        command=command,
    )


@post(
    "/v1/scans/space",
    guards=driver_only,
    tags=["scans"],
    summary="Scan an on-street space code: claim the stay there for one of my plates",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def scan_space(
    request: Request[Any, Any, Any], data: JSONBody[SpaceScanRequest]
) -> ScanSession:
    """The entry is when the space's sensor saw a car arrive, or now if it has not yet.
    A plate with an open session anywhere else is a 409."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    plate = normalise(data.plate)
    place = await scan_place(infra, data.code)
    if place.kind != "space" or place.space_id is None:
        raise WrongCode("this is not a space code")
    async with connection(infra) as conn:
        # Any binding of mine will do: the stay claimed here is my own act, and
        # the answer reveals nothing about where the car was.
        bound = await accounts.my_plates(conn, account_id, plate=plate, verified=False)
    if not bound:
        await audit_if_held_by_another(
            infra,
            actor=account_id,
            action="denied:scan.space",
            plate=plate,
            now=clock_of(request).now(),
        )
        raise NotFound(f"plate {plate} is not bound to your account")
    now = clock_of(request).now()
    entry = now
    state = await occupancy_store.lot_spaces(infra.redis, place.lot_id)
    sensed = state.get(place.space_id)
    if sensed is not None:
        occupied, _seq, observed_ms, *_ = sensed.split("|")
        arrived = occupancy_logic.from_ms(int(observed_ms))
        # Only a recent arrival is this car's: a space occupied for a day is
        # more likely a car that left unseen by a failing sensor.
        if occupied == "1" and now - arrived < timedelta(hours=2):
            entry = arrived
    existing = await occupancy_store.plate_entry(infra.redis, plate)
    if existing.get("sid"):
        # Not where: the binding may be unverified, and a plate is not a location.
        raise Conflict(f"plate {plate} has an open session elsewhere")
    sid = new_id("s", now)
    pipe = occupancy_store.Batch()
    occupancy_store.queue_plate_claim(
        pipe,
        plate=plate,
        session_id=sid,
        lot_id=place.lot_id,
        at_ms=occupancy_logic.to_ms(entry),
        op=f"space:{place.space_id}:{sid}",
    )
    [reply] = await pipe.execute(infra.redis)
    if isinstance(reply, Exception):
        raise reply
    outcome = occupancy_store.texts(reply) if isinstance(reply, list) else []
    if outcome and outcome[0] == "notready":
        raise CoreNotReady("the plate index is being rebuilt; scan again shortly")
    if not outcome or outcome[0] != "claimed" or outcome[1]:
        raise Conflict(f"plate {plate} is claimed elsewhere; try again")
    try:
        async with connection(infra, transaction=True) as conn:
            await sessions.record(
                conn,
                [
                    SessionChange(
                        id=sid,
                        lot_id=place.lot_id,
                        status=SessionStatus.OPEN,
                        plate=plate,
                        entry_at=entry,
                        entry_device_id=_entry_device(account_id),
                        account_id=account_id,
                        flags=("qr_space", f"space:{place.space_id}"),
                    )
                ],
            )
    except asyncpg.UniqueViolationError as exc:
        pipe = occupancy_store.Batch()
        occupancy_store.queue_plate_release(
            pipe, plate=plate, session_id=sid, at_ms=occupancy_logic.to_ms(entry)
        )
        await pipe.execute(infra.redis)
        raise Conflict(f"plate {plate} has an open session") from exc
    return ScanSession(
        session_id=sid,
        lot_id=place.lot_id,
        lane_id=None,
        space_id=place.space_id,
        plate=plate,
        status="open",
        entry_at=entry,
    )


ROUTES = [scan_entry, scan_exit, scan_space]
