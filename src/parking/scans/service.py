"""Scan flows (一次扫码): what a driver's scan of a signed lane or space code does.

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
PostgreSQL after a Redis loss. Each flow that opens or closes a session of the
account announces the account once committed (``accounts.changes``: the API
workers' copies of what it holds drop it).

A space claim writes the plate into the core's city-wide plate index with the
core's own ``plate_claim`` function, so the plate's next entry anywhere
supersedes it as usual; the stay's end on the sensor's vacancy is not
automated (the driver's next entry, or an operator, ends it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

import asyncpg
import msgspec
import redis.asyncio as aioredis

from parking.accounts import changes
from parking.bills import service as bills
from parking.errors import Conflict, InvalidInput, NotFound
from parking.ids import new_id
from parking.occupancy import keys as occupancy_keys
from parking.occupancy import lane as lane_text
from parking.occupancy import logic as occupancy_logic
from parking.occupancy import store as occupancy_store
from parking.occupancy.batch import PricerLike
from parking.occupancy.model import CoreNotReady
from parking.qr.service import Place
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus
from parking.tariffs import quote_to_json


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


@dataclass(frozen=True, slots=True)
class Core:
    """What a scan flow works with: the database, the live core, and the lane's command
    channel (``publish(place, command)``, MQTT in the API)."""

    pool: asyncpg.Pool
    redis: aioredis.Redis
    publish: Callable[[Place, LaneCommand], None]


@asynccontextmanager
async def _connection(
    pool: asyncpg.Pool, *, transaction: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        if transaction:
            async with conn.transaction():
                yield conn
        else:
            yield conn


def _entry_device(account_id: str) -> str:
    return f"account:{account_id}"


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
    core: Core, place: Place, account_id: str, sid: str, at: datetime
) -> tuple[str, str]:
    outcome, value = await occupancy_store.open_account_session(
        core.redis,
        lot_id=place.lot_id,
        account_id=account_id,
        session_id=sid,
        at_ms=occupancy_logic.to_ms(at),
        full_policy=place.full_policy,
    )
    if outcome == "notready":
        raise CoreNotReady(f"lot {place.lot_id} is being rebuilt; scan again shortly")
    return outcome, value


async def _take_out(core: Core, place: Place, account_id: str, sid: str) -> None:
    """The unplated car's session leaves the lot's live count. A shard being rebuilt
    ('notready') needs nothing: the rebuild reads PostgreSQL, where it has ended."""
    await occupancy_store.end_in_lot(
        core.redis,
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


async def enter(core: Core, place: Place, account_id: str, now: datetime) -> ScanSession:
    """An entry lane's code scanned for a car the camera cannot read: a session tied to
    the account opens (idempotent per account: scanning again while it is open answers
    with the same session and opens the barrier again). One unplated session per
    account city-wide (Conflict with the lot otherwise); a full lot is LotFull unless
    it opens when full."""
    sid = new_id("s", now)
    outcome, value = await _let_in(core, place, account_id, sid, now)
    if outcome == "exists":
        held_sid, entry_ms, *_ = value.split("|")
        async with _connection(core.pool) as conn:
            still_open = await sessions.is_open(conn, held_sid)
        if still_open is False:
            # Ended in PostgreSQL only (an operator voided it): the core's entry
            # is stale; drop it and let this scan in as a new session.
            await _take_out(core, place, account_id, held_sid)
            outcome, value = await _let_in(core, place, account_id, sid, now)
    if outcome == "exists":
        held_sid, entry_ms, *_ = value.split("|")
        command = _open(held_sid, "无牌车 欢迎光临", now)
        core.publish(place, command)
        return _entered(place, held_sid, occupancy_logic.from_ms(int(entry_ms)), command)
    if outcome == "full":
        raise LotFull(f"lot {place.lot_id} is full")
    # opened, or nolot: the core does not know the lot (not loaded yet), PostgreSQL decides.
    try:
        await sessions.open_unplated(
            core.pool,
            session_id=sid,
            lot_id=place.lot_id,
            entry_at=now,
            account_id=account_id,
            flags=("qr_entry",),
        )
    except asyncpg.UniqueViolationError as exc:
        await _take_out(core, place, account_id, sid)
        async with _connection(core.pool) as conn:
            elsewhere = await sessions.unplated_open_lot(conn, account_id)
        raise Conflict(f"you have an open session at lot {elsewhere}; leave it first") from exc
    except BaseException:
        await _take_out(core, place, account_id, sid)
        raise
    # The account's open sessions changed (its home screen shows this one).
    await changes.announce(core.redis, [account_id])
    command = _open(sid, "无牌车 欢迎光临", now)
    core.publish(place, command)
    return _entered(place, sid, now, command)


async def leave(
    core: Core, place: Place, account_id: str, now: datetime, pricer: PricerLike
) -> ScanSession:
    """An exit lane's code scanned: the account's unplated session closes, is priced and
    billed to the account (leave first, pay later), less what it paid in the lot, and
    the barrier opens."""
    async with _connection(core.pool, transaction=True) as conn:
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
    await changes.announce(core.redis, [account_id])
    # After the commit: a failure here leaves the car counted until the next
    # rebuild, never a session that PostgreSQL still thinks open.
    await _take_out(core, place, account_id, row["id"])
    due = bill.amount_fen if bill is not None else 0
    stay = lane_text.duration_text(row["entry_at"], now)
    display = f"无牌车 停车{stay} 应缴{due / 100:.2f}元"
    command = _open(row["id"] + "-out", display, now)
    core.publish(place, command)
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


async def claim_space(
    core: Core, place: Place, account_id: str, plate: str, now: datetime
) -> ScanSession:
    """An on-street space's code scanned with one of the account's plates (the caller
    checked it is bound to the account): the stay there is claimed. Its entry is when
    the space's sensor saw a car arrive, or now if it has not yet; a plate with an open
    session anywhere else is a Conflict."""
    if place.kind != "space" or place.space_id is None:
        raise WrongCode("this is not a space code")
    entry = now
    state = await occupancy_store.lot_spaces(core.redis, place.lot_id)
    sensed = state.get(place.space_id)
    if sensed is not None:
        occupied, _seq, observed_ms, *_ = sensed.split("|")
        arrived = occupancy_logic.from_ms(int(observed_ms))
        # Only a recent arrival is this car's: a space occupied for a day is
        # more likely a car that left unseen by a failing sensor.
        if occupied == "1" and now - arrived < timedelta(hours=2):
            entry = arrived
    existing = await occupancy_store.plate_entry(core.redis, plate)
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
    [reply] = await pipe.execute(core.redis)
    if isinstance(reply, Exception):
        raise reply
    outcome = occupancy_store.texts(reply) if isinstance(reply, list) else []
    if outcome and outcome[0] == "notready":
        raise CoreNotReady("the plate index is being rebuilt; scan again shortly")
    if not outcome or outcome[0] != "claimed" or outcome[1]:
        raise Conflict(f"plate {plate} is claimed elsewhere; try again")
    try:
        async with _connection(core.pool, transaction=True) as conn:
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
        await pipe.execute(core.redis)
        raise Conflict(f"plate {plate} has an open session") from exc
    await changes.announce(core.redis, [account_id])
    return ScanSession(
        session_id=sid,
        lot_id=place.lot_id,
        lane_id=None,
        space_id=place.space_id,
        plate=plate,
        status="open",
        entry_at=entry,
    )
