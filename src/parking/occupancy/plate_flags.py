"""Plate flags in the core: what the city knows about a plate when it reaches a lane
(blacklist, arrears since, passes, prepayments), set by the platform's use cases and
kept in step with PostgreSQL (``FlagSync``, and ``OwedWatch``: LISTEN on bill changes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final

import asyncpg
import redis.asyncio as aioredis
import structlog

from parking import audit as audit_log
from parking.auth.model import Principal
from parking.bills import logic as bills_logic
from parking.bills import service as bills
from parking.lots import service as lots
from parking.occupancy import keys, logic, records, store
from parking.occupancy.model import (
    CoreNotReady,
    PassWindow,
    PlateFlags,
)

log = structlog.get_logger("parking.occupancy")


class NotLoaded(CoreNotReady):
    """The plate's shard is not loaded; retry after the rebuild."""


async def _set_flag(redis: aioredis.Redis, plate: str, field_name: str, value: str) -> None:
    result = await store.set_plate_flag(redis, plate, field_name, value)
    if result == "notready":
        raise NotLoaded(f"plate shard of {plate} is not loaded")


async def set_blacklisted(redis: aioredis.Redis, plate: str, reason: str | None) -> None:
    """Hold (reason) or stop holding (None) ``plate`` at every entry lane; effective at once.

    Idempotent. ``plate`` must be normalised (``parking.plates.normalise``). The
    blacklist table stays the system of record: the periodic flag sync and the
    rebuild restore this from it.
    """
    await _set_flag(redis, plate, "bl", (reason or "")[:200] if reason else "")


async def set_arrears_since(redis: aioredis.Redis, plate: str, since: datetime | None) -> None:
    """The plate's oldest unpaid bill closed at ``since`` (None: no arrears). Idempotent."""
    await _set_flag(redis, plate, "arrears", "" if since is None else str(logic.to_ms(since)))


async def set_pass(
    redis: aioredis.Redis, plate: str, scope: str, window: PassWindow | None
) -> None:
    """A monthly pass of ``plate`` for ``scope`` (a lot id or lot group id); None removes it."""
    value = (
        ""
        if window is None
        else f"{logic.to_ms(window.valid_from)}|{logic.to_ms(window.valid_until)}|{window.pass_id}"
    )
    await _set_flag(redis, plate, f"pass:{scope}", value)


async def refresh_arrears(
    conn: asyncpg.Connection, redis: aioredis.Redis, plates: Sequence[str]
) -> None:
    """Set these plates' arrears flags from the bills they owe now (PostgreSQL)."""
    since = {r["plate"]: r["since"] for r in await records.arrears_since(conn, list(plates))}
    for plate in plates:
        await set_arrears_since(redis, plate, since.get(plate))


async def refresh_prepaid(
    conn: asyncpg.Connection, redis: aioredis.Redis, session_id: str, now: datetime
) -> None:
    """Tell the exit lanes what the session paid in the lot (from PostgreSQL).

    Only the display at the exit reads it; the bill at the close is computed
    from the bills themselves (``sessions.service``)."""
    row = await records.session_head(conn, session_id)
    if row is None or row["plate"] is None or row["status"] != "open":
        return
    window = await lots.exit_window(conn, row["lot_id"])
    if window is None:
        return
    prepaid = await bills.prepayments(conn, session_id)
    stand = bills_logic.standing(bills_logic.live(prepaid), at=now, window=window)
    await store.set_prepaid(
        redis,
        lot_id=row["lot_id"],
        plate=row["plate"],
        session_id=session_id,
        billed_fen=stand.settled_fen,
        leave_by_ms=logic.to_ms(stand.leave_by) if stand.leave_by is not None else None,
    )


#: PostgreSQL channel of bills_notify_owed (migration 0008).
OWED_CHANNEL: Final = "parking_plate_owed"


_PREPAY_PREFIX: Final = "prepay:"


class OwedWatch:
    """Applies what a plate owes to the lanes the moment PostgreSQL commits it.

    LISTENs to ``parking_plate_owed``: a plate whose bills changed gets its
    arrears flag recomputed (so paying lifts an arrears hold at once, and a
    new bill sets it), a paid prepayment updates the exit display's hint.
    NOTIFY reaches only connected listeners, so every (re)connection first runs
    ``catch_up`` (the full flag sync). Two gateways both apply a change; each
    writes what PostgreSQL says when it reads, and the periodic sync repairs the
    rare case of an older read written last.
    """

    def __init__(
        self,
        dsn: str,
        redis: aioredis.Redis,
        now: Callable[[], datetime],
        catch_up: Callable[[asyncpg.Connection], Awaitable[object]],
        *,
        keepalive_s: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.redis = redis
        self.now = now
        self.catch_up = catch_up
        self.keepalive_s = keepalive_s
        self.applied = 0

    async def run(self, stopping: asyncio.Event) -> None:
        delay = 0.5
        while not stopping.is_set():
            try:
                await self._listen(stopping)
                delay = 0.5
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("owed_watch_lost", error=f"{type(e).__name__}: {e}", retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                delay = min(delay * 2, 10.0)

    async def _listen(self, stopping: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        queue: asyncio.Queue[str] = asyncio.Queue()
        try:
            await conn.add_listener(OWED_CHANNEL, lambda *a: queue.put_nowait(str(a[-1])))
            await self.catch_up(conn)
            log.info("owed_watch_listening")
            while not stopping.is_set():
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=self.keepalive_s)
                except TimeoutError:
                    await conn.fetchval("SELECT 1", timeout=10)
                    continue
                payloads = {first}
                while not queue.empty():
                    payloads.add(queue.get_nowait())
                await self.apply(conn, payloads)
        finally:
            await conn.close(timeout=5)

    async def apply(self, conn: asyncpg.Connection, payloads: set[str]) -> None:
        plates = sorted(p for p in payloads if not p.startswith(_PREPAY_PREFIX))
        if plates:
            await refresh_arrears(conn, self.redis, plates)
        for payload in sorted(payloads - set(plates)):
            await refresh_prepaid(conn, self.redis, payload[len(_PREPAY_PREFIX) :], self.now())
        self.applied += len(payloads)


async def plate_flags_from_db(conn: asyncpg.Connection, now: datetime) -> dict[str, PlateFlags]:
    """Every plate's flags as the system of record has them."""
    black = {r["plate"]: r["reason"] for r in await records.blacklisted_plates(conn)}
    arrears = {r["plate"]: r["since"] for r in await records.arrears_since(conn)}
    passes: dict[str, dict[str, PassWindow]] = {}
    for r in await records.live_passes(conn, now):
        current = passes.setdefault(r["plate"], {}).get(r["group_id"])
        # Two passes for one group: keep the one that lasts longer.
        if current is None or current.valid_until < r["valid_until"]:
            passes[r["plate"]][r["group_id"]] = PassWindow(
                r["id"], r["valid_from"], r["valid_until"]
            )
    plates = set(black) | set(arrears) | set(passes)
    return {
        p: PlateFlags(
            blacklisted=black.get(p), arrears_since=arrears.get(p), passes=passes.get(p, {})
        )
        for p in plates
    }


class FlagSync:
    """Keeps the plate shards' flags equal to the system of record.

    Writes only what changed since its last run (the first run writes all), and
    clears plates whose flags were all lifted.
    """

    def __init__(self) -> None:
        self._last: dict[str, list[tuple[str, str]]] | None = None

    async def run(self, conn: asyncpg.Connection, redis: aioredis.Redis, now: datetime) -> int:
        wanted = {p: logic.flag_pairs(f) for p, f in (await plate_flags_from_db(conn, now)).items()}
        flagged: set[str] = set()
        for tag in keys.all_plate_tags():
            flagged |= await store.flagged_plates(redis, tag)
        last = self._last or {}
        changes = [
            (plate, pairs)
            for plate, pairs in wanted.items()
            if self._last is None or last.get(plate) != pairs or plate not in flagged
        ]
        changes += [(plate, []) for plate in flagged - set(wanted)]
        for start in range(0, len(changes), 1000):
            pipe = store.Batch()
            for plate, pairs in changes[start : start + 1000]:
                store.queue_plate_flags(pipe, plate, pairs)
            for reply in await pipe.execute(redis):
                if isinstance(reply, Exception):
                    raise reply
                if store.text(reply) == "notready":
                    raise NotLoaded("a plate shard is not loaded")
        self._last = wanted
        return len(changes)


# ------------------------------------------------------------------ the blacklist
# The table is the system of record (the rebuild and FlagSync put it into the core);
# the caller sets the plate's flag in the core after its commit (``set_blacklisted``).


async def blacklist(
    conn: asyncpg.Connection, plate: str, reason: str, *, by: Principal, now: datetime
) -> None:
    """Blacklist a plate city-wide, the entry its lister's company's (caller's
    transaction; audited)."""
    await records.add_to_blacklist(conn, plate, reason, by=by.subject, company_id=by.company)
    await audit_log.record(
        conn,
        at=now,
        actor=by.subject,
        role=by.role.value,
        action="blacklist.added",
        target=f"plate:{plate}",
        details={"reason": reason},
    )


async def unblacklist(
    conn: asyncpg.Connection, plate: str, *, by: Principal, now: datetime
) -> bool:
    """Take a plate off the blacklist (caller's transaction; audited when it was on it).
    Idempotent: False when it was not listed."""
    removed = await records.remove_from_blacklist(conn, plate)
    if removed is None:
        return False
    await audit_log.record(
        conn,
        at=now,
        actor=by.subject,
        role=by.role.value,
        action="blacklist.removed",
        target=f"plate:{plate}",
        details={"reason": removed},
    )
    return True
