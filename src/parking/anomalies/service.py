"""The operator's review of anomalies: the queue, and a resolution applied in PostgreSQL
and in the live core in the caller's transaction.

A missed exit or a void of an open session also ends it in the occupancy core (the
lot's count, the plate's city-wide entry); a fixed plate of an open session moves it
to the right plate there. Those core calls run inside the caller's transaction,
after its PostgreSQL writes and before the commit: a lot shard being rebuilt or a
Redis that does not answer fails the whole decision with nothing written. Every
core call is idempotent, so a decision that failed half way is simply retried.
Refunds a decision asks for are the caller's to send after the commit
(``parking.payments.decisions.submit_refunds``); so is announcing the account whose
scan made the session decided on (``accounts.changes.touched``: the edge that owns
the transaction announces it once committed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parking import audit as audit_log
from parking.accounts import changes
from parking.anomalies import store
from parking.anomalies.model import (
    AnomalyNotFound,
    AnomalyResolved,
    AnomalyView,
    CoreUnreachable,
    Resolution,
)
from parking.auth.model import Principal
from parking.errors import Conflict, InvalidInput
from parking.lots import logic as tenancy
from parking.lots import service as lots
from parking.occupancy import keys as occupancy_keys
from parking.occupancy import logic as occupancy_logic
from parking.occupancy import store as occupancy_store
from parking.occupancy.batch import PricerLike
from parking.occupancy.model import AnomalyKind, CoreNotReady
from parking.plates import normalise
from parking.pricing.model import PricingError
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus
from parking.tariffs import quote_to_json

log = structlog.get_logger("parking.anomalies")


async def queue(
    conn: asyncpg.Connection,
    who: Principal,
    *,
    status: str,
    kind: str | None,
    after: str | None,
    limit: int,
) -> list[AnomalyView]:
    """Anomalies of the lots ``who`` may read, oldest first."""
    company = tenancy.lot_filter(who)
    return await store.queue(
        conn,
        status=status,
        kind=kind,
        after=after,
        limit=limit,
        lot_ids=None if company is None else await lots.lot_ids_of(conn, company),
    )


async def lock(conn: asyncpg.Connection, anomaly_id: str) -> AnomalyView:
    """The anomaly, locked for the caller's transaction. Raises AnomalyNotFound."""
    anomaly = await store.lock(conn, anomaly_id)
    if anomaly is None:
        raise AnomalyNotFound(f"anomaly {anomaly_id} does not exist")
    return anomaly


async def resolve(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    anomaly: AnomalyView,
    resolution: Resolution,
    *,
    pricer: Callable[[], Awaitable[PricerLike]],
    by: Principal,
    now: datetime,
) -> tuple[AnomalyView, dict[str, Any]]:
    """Resolve a locked open anomaly (``lock``; the caller checked it may) in the caller's
    transaction, audited. Returns the resolved anomaly and what the decision did (its
    ``money``, when any, names the refunds to send after the commit). Raises
    AnomalyResolved, InvalidInput, Conflict, CoreNotReady or CoreUnreachable."""
    if anomaly.status != "open":
        raise AnomalyResolved(f"anomaly {anomaly.id} was resolved: {anomaly.resolution}")
    effect = await _apply(conn, redis, anomaly, resolution, pricer=pricer, by=by, now=now)
    resolved = await store.resolve(
        conn, anomaly.id, at=now, resolution=f"{resolution.action}: {resolution.remark}"
    )
    await audit_log.record(
        conn,
        at=now,
        actor=by.subject,
        role=by.role.value,
        action=f"anomaly.{resolution.action}",
        target=f"anomaly:{anomaly.id}",
        details={"remark": resolution.remark, **effect},
    )
    return resolved, effect


async def _session_row(conn: asyncpg.Connection, session_id: str | None) -> asyncpg.Record:
    if session_id is None:
        raise InvalidInput("this anomaly names no session; resolve it with 'void'")
    row = await sessions.lock_session(conn, session_id)
    if row is None:
        raise InvalidInput(f"session {session_id} is not recorded yet; retry shortly")
    return row


def _field(row: asyncpg.Record) -> str | None:
    """The session's key in its lot's open sessions: the plate, or the account's
    field for an unplated car let in by a scan; None when the core never held it."""
    if row["plate"] is not None:
        return str(row["plate"])
    if row["account_id"] is not None:
        return occupancy_keys.account_field(row["account_id"])
    return None


_CORE_DOWN = "the occupancy core did not answer; the decision was not saved, retry"


async def _end_live(
    redis: aioredis.Redis, row: asyncpg.Record, *, out_at_ms: int
) -> dict[str, str]:
    """End the open session in the occupancy core as well: the lot's live count and the
    plate's city-wide entry follow the operator's decision now, not at the next rebuild.
    Returns what each call did, for the audit line."""
    field = _field(row)
    if field is None:
        return {}
    try:
        in_lot = await occupancy_store.end_in_lot(
            redis, lot_id=row["lot_id"], field=field, session_id=row["id"]
        )
        if in_lot == "notready":
            raise CoreNotReady("the lot's live state is being rebuilt; retry shortly")
        in_index = "none"
        if row["plate"] is not None:
            in_index = await occupancy_store.release_plate(
                redis, plate=row["plate"], session_id=row["id"], out_at_ms=out_at_ms
            )
    except (RedisError, OSError) as exc:
        raise CoreUnreachable(_CORE_DOWN) from exc
    if in_index == "notready":
        # The plate shard's rebuild reads the sessions table: if it read it before
        # this commit, the index names this session until the plate's next entry.
        log.warning("plate_index_not_ready", plate=row["plate"], session_id=row["id"])
    return {"lot": in_lot, "plate_index": in_index}


async def _rekey_live(redis: aioredis.Redis, row: asyncpg.Record, right: str) -> dict[str, str]:
    """Move an open session from its misread plate to the right one in the core: the
    lot's entry (so the exit lane finds it by the plate it reads), then the plate
    index (released for the wrong plate, claimed for the right one)."""
    wrong, entry_ms = row["plate"], occupancy_logic.to_ms(row["entry_at"])
    try:
        moved = await occupancy_store.rekey_in_lot(
            redis, lot_id=row["lot_id"], wrong=wrong, right=right, session_id=row["id"]
        )
        if moved == "notready":
            raise CoreNotReady("the lot's live state is being rebuilt; retry shortly")
        if moved == "taken":
            raise Conflict(f"{right} has an open session in lot {row['lot_id']} already")
        released = await occupancy_store.release_plate(
            redis, plate=wrong, session_id=row["id"], out_at_ms=entry_ms
        )
        claimed = await occupancy_store.claim_plate(
            redis,
            plate=right,
            session_id=row["id"],
            lot_id=row["lot_id"],
            at_ms=entry_ms,
            op=f"fix-plate:{row['id']}",
        )
    except (RedisError, OSError) as exc:
        raise CoreUnreachable(_CORE_DOWN) from exc
    if claimed not in ("claimed", "same"):
        log.warning("plate_index_not_claimed", plate=right, session_id=row["id"], got=claimed)
    return {"lot": moved, "wrong_plate_index": released, "right_plate_index": claimed}


async def _apply(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    anomaly: AnomalyView,
    data: Resolution,
    *,
    pricer: Callable[[], Awaitable[PricerLike]],
    by: Principal,
    now: datetime,
) -> dict[str, Any]:
    session_id = anomaly.session_id
    match data.action:
        case "confirm-fee":
            # Resolving the anomaly is the confirmation (mqtt.md "Clocks" 4); a wrong
            # stay is corrected with the other actions (void, fix-plate) instead.
            if anomaly.kind != AnomalyKind.FEE_REVIEW:
                raise InvalidInput("confirm-fee resolves a fee_review anomaly only")
            return {"session_id": session_id, "fee_confirmed": True}
        case "void":
            if session_id is None:
                return {}
            row = await _session_row(conn, session_id)
            changes.touched(conn, row["account_id"])
            # The merge is an upsert: the row's known facts go along so the insert
            # half satisfies the table's checks (merging never blanks a field).
            await sessions.record(
                conn,
                [
                    SessionChange(
                        id=row["id"],
                        lot_id=row["lot_id"],
                        status=SessionStatus.VOIDED,
                        plate=row["plate"],
                        entry_at=row["entry_at"],
                        exit_at=row["exit_at"],
                    )
                ],
            )
            effect: dict[str, Any] = {"session_id": session_id, "voided": True}
            effect["money"] = msgspec.to_builtins(
                await sessions.void_bills(
                    conn, session_id, by=by.subject, remark=data.remark, now=now
                )
            )
            if row["status"] == SessionStatus.OPEN:
                # A voided stay says nothing about when the car left: the index's mark
                # moves only just past its entry, so a late claim of this very entry
                # loses and a later entry of the plate anywhere still wins.
                entry_ms = occupancy_logic.to_ms(row["entry_at"] or now)
                effect["live"] = await _end_live(redis, row, out_at_ms=entry_ms + 1)
            return effect
        case "fix-plate":
            if data.plate is None:
                raise InvalidInput("fix-plate needs the plate")
            plate = normalise(data.plate)
            row = await _session_row(conn, session_id)
            if row["plate"] == plate:
                return {"session_id": session_id, "from": plate, "to": plate}
            is_open = row["status"] == SessionStatus.OPEN
            if is_open and (row["plate"] is None or row["entry_at"] is None):
                raise Conflict("an open session without a plate read is ended, not fixed")
            changes.touched(conn, row["account_id"])
            try:
                async with conn.transaction():  # a savepoint: the 409 leaves the rest usable
                    await sessions.set_plate(conn, row["id"], plate)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"{plate} has an open session already") from exc
            fixed: dict[str, Any] = {"session_id": session_id, "from": row["plate"], "to": plate}
            if not is_open:
                fixed["money"] = msgspec.to_builtins(
                    await sessions.rebill_plate(
                        conn,
                        row["id"],
                        wrong=row["plate"],
                        right=plate,
                        by=by.subject,
                        remark=data.remark,
                        now=now,
                    )
                )
            if is_open:
                # The core keys an open session by its plate: the exit lane must
                # find it by the plate it will read.
                fixed["live"] = await _rekey_live(redis, row, plate)
            return fixed
        case "add-missed-exit":
            if data.exit_at is None or data.exit_at.tzinfo is None:
                raise InvalidInput("add-missed-exit needs exit_at with a UTC offset")
            if data.exit_at > now:
                # The plate index takes the exit as proof the car was out from then on.
                raise InvalidInput("exit_at is in the future")
            row = await _session_row(conn, session_id)
            if row["status"] != SessionStatus.OPEN or row["entry_at"] is None:
                raise Conflict(f"session {session_id} is {row['status']}, not open")
            if data.exit_at < row["entry_at"]:
                raise InvalidInput("exit_at is before the entry")
            changes.touched(conn, row["account_id"])
            priced_by = await pricer()
            try:
                priced = priced_by.price(
                    lot_id=row["lot_id"],
                    plate=row["plate"],
                    entry=row["entry_at"],
                    exit=data.exit_at,
                )
            except PricingError as exc:
                raise InvalidInput(f"the stay cannot be priced: {exc}") from exc
            await sessions.record(
                conn,
                [
                    SessionChange(
                        id=row["id"],
                        lot_id=row["lot_id"],
                        status=SessionStatus.CLOSED,
                        plate=row["plate"],
                        entry_at=row["entry_at"],
                        exit_at=data.exit_at,
                        fee_fen=priced.fee_fen,
                        tariff_id=priced.tariff_id,
                        tariff_version=priced.tariff_version,
                        pricing_reason=priced.reason,
                        quote=quote_to_json(priced.quote) if priced.quote is not None else None,
                        flags=("operator_exit",),
                    )
                ],
            )
            live = await _end_live(redis, row, out_at_ms=occupancy_logic.to_ms(data.exit_at))
            return {
                "session_id": session_id,
                "exit_at": data.exit_at.isoformat(),
                "fee_fen": priced.fee_fen,
                "live": live,
            }
    raise AssertionError(data.action)
