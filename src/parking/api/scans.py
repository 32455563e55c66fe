"""Scan flows (一次扫码): a driver scans a signed lane or space code with the app.

- Entry lane code, for a car the camera cannot read (无牌车): opens a session tied
  to the driver's account and publishes the lane's ``open`` command over MQTT.
- Exit lane code: closes that session, prices it, bills it to the account
  (leave first, pay later) and opens the barrier.
- On-street space code: the driver claims the stay at that space for one of
  their plates; its entry is when the sensor saw the car arrive, or now when
  the sensor has not fired yet.

What the occupancy core does not offer yet, and how this stands in for it (the
smallest honest version; see the issue-6 report):

- The core keys sessions by plate and has no account-tied (unplated) session.
  These sessions live in PostgreSQL (plate NULL, ``entry_device_id`` =
  ``account:<id>``, the account that opened the barrier) and in one Redis key
  per account (``scan:acct:<account>``) that makes a double scan idempotent.
  They are not in the lot's live counts.
- A space claim writes the plate into the core's city-wide plate index with the
  core's own ``plate_claim`` function, so the plate's next entry anywhere
  supersedes it as usual; the stay's end on the sensor's vacancy is not
  automated yet.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import Request, post
from litestar.params import JSONBody

from parking.api.auth import principal_of, roles
from parking.api.drivers import _keyring, problem_responses
from parking.api.infra import Infra, connection, infra_of
from parking.auth.model import Role
from parking.bills import service as bills
from parking.clock import SystemClock
from parking.devices.messages import Topics
from parking.errors import Conflict, InvalidInput, NotFound
from parking.ids import new_id
from parking.occupancy import logic as occupancy_logic
from parking.occupancy import store as occupancy_store
from parking.occupancy.model import CoreNotReady
from parking.plates import normalise
from parking.pricing import Pricer
from parking.qr import logic as qr_logic
from parking.qr import service as qr
from parking.qr.model import QrTarget
from parking.qr.service import Place
from parking.sessions import logic as lane_text
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus
from parking.tariffs import quote_to_json

_clock = SystemClock()
driver_only = [roles(Role.DRIVER)]
BODY_MAX: Final = 2 * 1024
#: An account-tied session key outlives any plausible stay; it is deleted at the exit.
_ACCOUNT_KEY_TTL_S: Final = 90 * 24 * 3600

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


def _account_key(account_id: str) -> str:
    return f"scan:acct:{account_id}"


def _entry_device(account_id: str) -> str:
    return f"account:{account_id}"


#: Places resolved recently, by target. Lanes and spaces are added and removed
#: by operators a few times a year; a scan at a busy gate should not cost two
#: PostgreSQL reads each time. A removed place keeps resolving for this long.
_PLACE_TTL_S: Final = 10.0
_places: dict[QrTarget, tuple[float, Place]] = {}


async def _place(infra: Infra, code: str) -> Place:
    """What a scanned code points at; the signature is checked on every scan."""
    token = qr_logic.verify(code, keyring=_keyring(infra), now=_clock.now())
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


async def _lot_has_room(infra: Infra, lot_id: str) -> None:
    counts = await occupancy_store.lot_counts(infra.redis, lot_id)
    if not counts:
        return  # the core has not loaded the lot: the lane's own count decides
    capacity = int(counts.get("capacity", "0") or 0)
    inside = int(counts.get("sessions", "0") or 0)
    if counts.get("full_policy", "hold") == "hold" and capacity and inside >= capacity:
        raise LotFull(f"lot {lot_id} is full")


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
    the same session and opens the barrier again."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    place = await _place(infra, data.code)
    if place.kind != "lane" or place.direction != "in" or place.lane_id is None:
        raise WrongCode("this is not an entry lane code")
    now = _clock.now()
    sid = new_id("s", now)
    key = _account_key(account_id)
    value = f"{sid}|{place.lot_id}|{place.lane_id}|{occupancy_logic.to_ms(now)}"
    for _ in range(2):
        if await infra.redis.set(key, value, nx=True, ex=_ACCOUNT_KEY_TTL_S):
            break
        current = await infra.redis.get(key)
        if current is None:
            continue
        held_sid, lot_id, lane_id, entry_ms = occupancy_store.text(current).split("|")
        async with connection(infra) as conn:
            still_open = await conn.fetchval(
                "SELECT status = 'open' FROM sessions WHERE id = $1", held_sid
            )
        if still_open is False:
            # Ended elsewhere (an operator voided it): the key is stale.
            await infra.redis.delete(key)
            continue
        if lot_id != place.lot_id:
            raise Conflict(f"you have an open session at lot {lot_id}; leave it first")
        command = _open(held_sid, "无牌车 欢迎光临", now)
        _publish(infra, place, command)
        return ScanSession(
            session_id=held_sid,
            lot_id=lot_id,
            lane_id=lane_id,
            space_id=None,
            plate=None,
            status="open",
            entry_at=occupancy_logic.from_ms(int(entry_ms)),
            command=command,
        )
    else:
        raise Conflict("another scan of yours is under way; scan again")
    try:
        await _lot_has_room(infra, place.lot_id)
        async with connection(infra, transaction=True) as conn:
            await sessions.record(
                conn,
                [
                    SessionChange(
                        id=sid,
                        lot_id=place.lot_id,
                        status=SessionStatus.OPEN,
                        entry_at=now,
                        entry_device_id=_entry_device(account_id),
                        flags=("qr_entry",),
                    )
                ],
            )
    except BaseException:
        await infra.redis.delete(_account_key(account_id))
        raise
    command = _open(sid, "无牌车 欢迎光临", now)
    _publish(infra, place, command)
    return ScanSession(
        session_id=sid,
        lot_id=place.lot_id,
        lane_id=place.lane_id,
        space_id=None,
        plate=None,
        status="open",
        entry_at=now,
        command=command,
    )


async def _open_account_session(
    conn: asyncpg.Connection, account_id: str, lot_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, lot_id, entry_at FROM sessions WHERE lot_id = $1 AND status = 'open' "
        "AND plate IS NULL AND entry_device_id = $2 FOR UPDATE",
        lot_id,
        _entry_device(account_id),
    )


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
    """The fee becomes an open bill of my account (leave first, pay later)."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    place = await _place(infra, data.code)
    if place.kind != "lane" or place.direction != "out" or place.lane_id is None:
        raise WrongCode("this is not an exit lane code")
    now = _clock.now()
    pricer: Pricer = await request.app.state.pricer_cache.get(infra.pool)
    async with connection(infra, transaction=True) as conn:
        row = await _open_account_session(conn, account_id, place.lot_id)
        if row is None:
            raise NoOpenSession(f"you have no open session at lot {place.lot_id}")
        priced = pricer.price(lot_id=place.lot_id, plate=None, entry=row["entry_at"], exit=now)
        # Billed to the account before the close: closing bills the session
        # (sessions.record) by its plate, and this one has none; open_bill is
        # idempotent on the session, so the close finds this bill.
        bill = None
        if (
            priced.fee_fen > 0
            and priced.tariff_id is not None
            and priced.tariff_version is not None
        ):
            bill = await bills.open_bill(
                conn,
                session_id=row["id"],
                lot_id=place.lot_id,
                plate=None,
                account_id=account_id,
                amount_fen=priced.fee_fen,
                tariff_id=priced.tariff_id,
                tariff_version=priced.tariff_version,
                quote=quote_to_json(priced.quote) if priced.quote is not None else b"{}",
                closed_at=now,
                now=now,
            )
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
        )
    await infra.redis.delete(_account_key(account_id))
    stay = lane_text.duration_text(row["entry_at"], now)
    display = f"无牌车 停车{stay} 应缴{priced.fee_fen / 100:.2f}元"
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
        fee_fen=priced.fee_fen,
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
    place = await _place(infra, data.code)
    if place.kind != "space" or place.space_id is None:
        raise WrongCode("this is not a space code")
    async with connection(infra) as conn:
        bound = await conn.fetchval(
            "SELECT true FROM vehicles WHERE plate = $1 AND account_id = $2 "
            "AND released_at IS NULL",
            plate,
            account_id,
        )
    if not bound:
        raise NotFound(f"plate {plate} is not bound to your account")
    now = _clock.now()
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
        raise Conflict(f"plate {plate} has an open session at lot {existing.get('lot')}")
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
