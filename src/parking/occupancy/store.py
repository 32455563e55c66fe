"""Access to the occupancy core (Redis functions) and its tables (PostgreSQL). No decisions.

Redis calls are queued on a `Batch` by the ``queue_*`` functions and sent in
one round trip by the caller: the gateway applies a whole batch of events with
one `Batch` per phase. Each queued call is one single-slot function call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Final

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from parking.occupancy import keys

LIBRARY: Final = (
    resources.files("parking.occupancy").joinpath("lua/occupancy.lua").read_text("utf-8")
)

Reply = list[Any] | bytes | int | Exception | None
Arg = bytes | str | int


class Batch:
    """Commands packed once (RESP) and sent in one write; replies read back in order.

    redis-py's pipeline encodes every argument through several Python layers and
    arms a timer per reply, about 60 us for one 26-argument FCALL: more than
    Redis spends running it. Here a command is packed with a few bytes joins, and
    one deadline covers the whole round trip (a stalled Redis fails the batch,
    matrix R6). Error replies come back as `ResponseError` values, not raised.
    """

    __slots__ = ("_parts", "count")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.count = 0

    def command(self, *args: Arg) -> None:
        parts = self._parts
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode("utf-8")
            elif isinstance(arg, int):
                arg = b"%d" % arg
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        self.count += 1

    def fcall(self, function: str, keys_: list[str], *args: Arg) -> None:
        self.command("FCALL", function, len(keys_), *keys_, *args)

    def fcall_packed(self, head: bytes, head_count: int, *args: Arg) -> None:
        """FCALL whose name and keys were packed once (`packed_head`, ``head_count``
        arguments), followed by ``args``."""
        parts = self._parts
        parts.append(b"*%d\r\n" % (head_count + len(args)))
        parts.append(head)
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode("utf-8")
            elif isinstance(arg, int):
                arg = b"%d" % arg
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        self.count += 1

    async def execute(self, redis: aioredis.Redis, *, deadline_s: float = 10.0) -> list[Reply]:
        if not self.count:
            return []
        pool = redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(deadline_s):
                await conn.send_packed_command(b"".join(self._parts), check_health=False)
                replies: list[Reply] = []
                for _ in range(self.count):
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as error:
                        replies.append(error)
        except BaseException:
            # Replies may be left unread on this connection: never reuse it.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return replies


def _bulk(value: str) -> bytes:
    raw = value.encode("utf-8")
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


@functools.lru_cache(maxsize=65536)
def packed_head(function: str, keys_: tuple[str, ...]) -> tuple[bytes, int]:
    """``FCALL function numkeys keys...`` packed, and how many arguments that is.

    A lot's and a device's keys are the same for every event: packing them once
    saves most of the per-event encoding of a 10-key call."""
    head = [_bulk("FCALL"), _bulk(function), _bulk(str(len(keys_)))]
    head.extend(_bulk(k) for k in keys_)
    return b"".join(head), 3 + len(keys_)


async def load_library(redis: aioredis.Redis) -> None:
    """Install (or replace) the function library; idempotent, safe while gateways run."""
    await redis.function_load(LIBRARY, replace=True)


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if value is None:
        return ""
    return str(value)


def texts(reply: object) -> list[str]:
    if isinstance(reply, list):
        return [text(v) for v in reply]
    return [text(reply)]


# ------------------------------------------------------------------ lot shards


@dataclass(frozen=True, slots=True)
class PassageCall:
    lot_id: str
    device_id: str
    seq: int
    now_ms: int
    plate: str | None
    mode: str
    session_id: str
    at_ms: int
    record: bytes
    command_id: str
    command_topic: str
    command_open: bytes
    command_hold: bytes
    command_expires_ms: int
    command_resend_ms: int


def queue_passage(pipe: Batch, call: PassageCall) -> None:
    head, n = packed_head("occ_passage", tuple(keys.passage_keys(call.lot_id, call.device_id)))
    pipe.fcall_packed(
        head,
        n,
        call.device_id,
        str(call.seq),
        str(call.now_ms),
        call.plate or "",
        call.mode,
        call.session_id,
        str(call.at_ms),
        call.record,
        call.command_id,
        call.command_topic,
        call.command_open,
        call.command_hold,
        str(call.command_expires_ms),
        str(call.command_resend_ms),
        call.lot_id,
    )


@dataclass(frozen=True, slots=True)
class SpaceCall:
    lot_id: str
    device_id: str
    seq: int
    now_ms: int
    space_id: str
    occupied: bool
    observed_ms: int
    record: bytes
    flap_changes: int
    flap_window_ms: int


def queue_space(pipe: Batch, call: SpaceCall) -> None:
    head, n = packed_head("occ_space", tuple(keys.space_keys(call.lot_id, call.device_id)))
    pipe.fcall_packed(
        head,
        n,
        call.device_id,
        str(call.seq),
        str(call.now_ms),
        call.space_id,
        "1" if call.occupied else "0",
        str(call.observed_ms),
        call.record,
        str(call.flap_changes),
        str(call.flap_window_ms),
    )


@dataclass(frozen=True, slots=True)
class DeadCall:
    tag: str
    now_ms: int
    topic: str
    reason: str
    payload: bytes
    device_id: str | None
    seq: int | None


def queue_dead(pipe: Batch, call: DeadCall) -> None:
    trusted = call.device_id is not None and call.seq is not None
    ks = keys.dead_keys(call.tag, call.device_id if trusted else None)
    extra = [call.device_id or "", str(call.seq)] if trusted else []
    pipe.fcall(
        "occ_dead",
        ks,
        str(call.now_ms),
        call.topic,
        call.reason,
        call.payload,
        *extra,
    )


def queue_status(
    pipe: Batch,
    *,
    lot_id: str,
    device_id: str,
    online: bool,
    at_ms: int,
    now_ms: int,
    firmware: str | None,
    record: bytes,
) -> None:
    pipe.fcall(
        "occ_status",
        keys.status_keys(lot_id, device_id),
        device_id,
        "1" if online else "0",
        str(at_ms),
        str(now_ms),
        firmware or "",
        record,
    )


def queue_ack(
    pipe: Batch, *, lot_id: str, command_id: str, result: str, now_ms: int, record: bytes
) -> None:
    pipe.fcall("occ_ack", keys.ack_keys(lot_id), command_id, result, str(now_ms), record)


def queue_supersede(
    pipe: Batch,
    *,
    lot_id: str,
    plate: str,
    session_id: str,
    by_session: str,
    by_lot: str,
    now_ms: int,
    why: str,
) -> None:
    pipe.fcall(
        "occ_supersede",
        keys.supersede_keys(lot_id),
        lot_id,
        plate,
        session_id,
        by_session,
        by_lot,
        str(now_ms),
        why,
    )


def queue_lot(pipe: Batch, *, lot_id: str, capacity: int, kind: str) -> None:
    pipe.fcall("occ_lot", keys.lot_sync_keys(lot_id), str(capacity), kind)


def queue_watermark(pipe: Batch, *, tag: str, device_id: str, seq: int) -> None:
    pipe.fcall("occ_wm", [keys.device(tag, device_id)], str(seq))


def queue_followups_done(pipe: Batch, done: Sequence[tuple[str, str]]) -> None:
    """Drop finished follow-ups, given as (lot id, ``device:seq``): one HDEL per shard."""
    by_tag: dict[str, list[str]] = {}
    for lot_id, op in done:
        by_tag.setdefault(keys.lot_tag(lot_id), []).append(op)
    for tag, ops in by_tag.items():
        pipe.command("HDEL", keys.followups(tag), *ops)


#: A device silent this long loses its clock samples (a replaced or removed device
#: must not leave keys behind); a live device refills them with its next messages.
CLOCK_SAMPLES_TTL_MS: Final = 7 * 24 * 3600 * 1000


def queue_clock_sample(pipe: Batch, key: str, sample_ms: int, *, keep: int) -> None:
    """Add a clock offset sample (``keys.clock``), keeping the ``keep`` newest; three replies."""
    pipe.command("LPUSH", key, sample_ms)
    pipe.command("LTRIM", key, 0, keep - 1)
    pipe.command("PEXPIRE", key, CLOCK_SAMPLES_TTL_MS)


def queue_clock_read(pipe: Batch, key: str, count: int) -> None:
    """The ``count`` newest samples of ``keys.clock``; one reply."""
    pipe.command("LRANGE", key, 0, count - 1)


def clock_samples(reply: object) -> list[int]:
    out: list[int] = []
    for value in reply if isinstance(reply, list) else []:
        with contextlib.suppress(ValueError):
            out.append(int(text(value)))
    return out


def queue_session_of(pipe: Batch, *, lot_id: str, plate: str) -> None:
    pipe.command("HGET", keys.sessions(keys.lot_tag(lot_id), lot_id), plate)


async def due_commands(
    redis: aioredis.Redis, tag: str, *, now_ms: int, resend_after_ms: int, limit: int
) -> list[tuple[str, bytes]]:
    reply = await redis.fcall(
        "occ_due", 4, *keys.due_keys(tag), str(now_ms), str(resend_after_ms), str(limit)
    )
    items = list(reply or [])
    return [(text(items[i]), bytes(items[i + 1])) for i in range(0, len(items), 2)]


async def report_silent(
    redis: aioredis.Redis, tag: str, *, cutoff_ms: int, now_ms: int, limit: int
) -> int:
    return int(
        await redis.fcall(
            "occ_silence", 3, *keys.silence_keys(tag), str(cutoff_ms), str(now_ms), str(limit)
        )
    )


async def stale_followups(
    redis: aioredis.Redis, tag: str, *, made_before_ms: int, limit: int
) -> list[tuple[str, str]]:
    """(``device:seq``, follow-up) pairs of a shard made before ``made_before_ms``."""
    found: list[tuple[str, str]] = []
    async for field, value in redis.hscan_iter(keys.followups(tag), count=500):
        raw = text(value)
        try:
            made = int(raw.rsplit("|", 1)[1])
        except (IndexError, ValueError):
            continue
        if made < made_before_ms:
            found.append((text(field), raw))
            if len(found) >= limit:
                break
    return found


# ------------------------------------------------------------------ plate shards


def queue_plate_read(pipe: Batch, plate: str) -> None:
    ks = keys.plate_keys(plate)
    pipe.command("FCALL_RO", "plate_read", len(ks), *ks)


def queue_plate_claim(
    pipe: Batch, *, plate: str, session_id: str, lot_id: str, at_ms: int, op: str
) -> None:
    pipe.fcall("plate_claim", keys.plate_keys(plate), session_id, lot_id, str(at_ms), op)


def queue_plate_release(pipe: Batch, *, plate: str, session_id: str, at_ms: int) -> None:
    pipe.fcall("plate_release", keys.plate_keys(plate), session_id, str(at_ms))


def queue_plate_flags(pipe: Batch, plate: str, flags: Sequence[tuple[str, str]]) -> None:
    args = [part for pair in flags for part in pair]
    pipe.fcall("plate_flags", keys.plate_flag_keys(plate), plate, *args)


async def set_plate_flag(redis: aioredis.Redis, plate: str, field: str, value: str) -> str:
    return text(
        await redis.fcall("plate_flag", 3, *keys.plate_flag_keys(plate), plate, field, value)
    )


async def flagged_plates(redis: aioredis.Redis, tag: str) -> set[str]:
    return {text(p) for p in await redis.smembers(keys.flagged(tag))}


async def lot_counts(redis: aioredis.Redis, lot_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.lot(keys.lot_tag(lot_id), lot_id))
    return {text(k): text(v) for k, v in raw.items()}


async def lot_sessions(redis: aioredis.Redis, lot_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.sessions(keys.lot_tag(lot_id), lot_id))
    return {text(k): text(v) for k, v in raw.items()}


async def lot_spaces(redis: aioredis.Redis, lot_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.spaces(keys.lot_tag(lot_id), lot_id))
    return {text(k): text(v) for k, v in raw.items()}


async def plate_entry(redis: aioredis.Redis, plate: str) -> dict[str, str]:
    t = keys.plate_tag(plate)
    raw = await redis.hgetall(keys.plate(t, plate))
    return {text(k): text(v) for k, v in raw.items()}


async def device_marks(redis: aioredis.Redis, lot_id: str, device_id: str) -> dict[str, str]:
    t = keys.lot_tag(lot_id)
    raw = await redis.hgetall(keys.device(t, device_id))
    return {text(k): text(v) for k, v in raw.items()}


# ================================================================== PostgreSQL


async def lots(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT l.id, l.kind, l.capacity, l.full_policy, l.arrears_hold_after,
                  l.district_code, l.review_stay_limit, l.review_fee_ceiling_fen,
                  coalesce(array_agg(m.group_id) FILTER (WHERE m.group_id IS NOT NULL), '{}')
                      AS groups
           FROM lots l LEFT JOIN lot_group_members m ON m.lot_id = l.id
           GROUP BY l.id"""
    )


async def live_devices(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    # The device registry's table (parking.devices owns it); read-only here.
    return await conn.fetch(
        "SELECT device_id, lot_id, kind, lane_id, space_id FROM devices WHERE revoked_at IS NULL"
    )


# --- plate flags, from the tables of their owners (read-only here)


async def blacklisted_plates(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT plate, reason FROM plate_blacklist")


async def add_to_blacklist(
    conn: asyncpg.Connection, plate: str, reason: str, *, by: str, company_id: str | None
) -> None:
    """List the plate, or change the reason of its entry (the entry keeps its owner)."""
    await conn.execute(
        "INSERT INTO plate_blacklist (plate, reason, created_by, company_id) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (plate) DO UPDATE SET reason = EXCLUDED.reason",
        plate,
        reason,
        by,
        company_id,
    )


async def remove_from_blacklist(conn: asyncpg.Connection, plate: str) -> str | None:
    """The reason the plate was listed for, None when it was not listed."""
    reason: str | None = await conn.fetchval(
        "DELETE FROM plate_blacklist WHERE plate = $1 RETURNING reason", plate
    )
    return reason


async def live_passes(conn: asyncpg.Connection, now: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, plate, group_id, valid_from, valid_until FROM monthly_passes
           WHERE revoked_at IS NULL AND valid_until > $1""",
        now,
    )


async def arrears_since(
    conn: asyncpg.Connection, plates: list[str] | None = None
) -> list[asyncpg.Record]:
    """Per plate owing something, when its oldest unpaid bill closed; every plate, or
    only ``plates``. What parking.bills counts as owed (see bills_owed_by_plate_idx),
    less the prepay bills of stays still under way: an unpaid one is an offer, and
    anyone in the lot can make one for any plate, so it never holds a car."""
    return await conn.fetch(
        """SELECT plate, min(closed_at) AS since FROM bills b
           WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed')
             AND plate IS NOT NULL AND ($1::text[] IS NULL OR plate = ANY($1::text[]))
             AND (kind = 'stay' OR NOT EXISTS (
                  SELECT 1 FROM sessions s WHERE s.id = b.session_id AND s.status = 'open'))
           GROUP BY plate""",
        plates,
    )


# --- rebuild


async def open_sessions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, lot_id, plate, entry_at, entry_device_id, entry_seq, account_id
           FROM sessions WHERE status = 'open'"""
    )


async def space_states(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT lot_id, space_id, occupied, device_id, seq, observed_at FROM space_states"
    )


async def device_marks_pg(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per device: watermark and the stored seqs above it (normally none).

    Every device with a stored event has a device_watermarks row (seq 0 until
    its seq 1 is stored), so this reads one row per device plus an index range.
    """
    return await conn.fetch(
        """SELECT w.device_id, w.seq AS wm,
                  ARRAY(SELECT e.seq FROM device_events e
                        WHERE e.device_id = w.device_id AND e.seq > w.seq
                        ORDER BY e.seq) AS above
           FROM device_watermarks w"""
    )


# --- persister writes (all run in the caller's transaction)


async def ensure_partitions(conn: asyncpg.Connection, months: Iterable[datetime]) -> None:
    for month in sorted(set(months)):
        await conn.execute("SELECT ensure_event_partitions($1::date)", month.date())


async def insert_device_events(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[Any, ...]],
) -> set[tuple[str, int]]:
    """Insert (device, seq, kind, observed_at, received_at, event_at, sent_at,
    clock_offset_ms); return the pairs that were new."""
    if not rows:
        return set()
    cols = list(zip(*rows, strict=True))
    found = await conn.fetch(
        """INSERT INTO device_events (device_id, seq, kind, observed_at, received_at, event_at,
                                      sent_at, clock_offset_ms)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[],
                                $5::timestamptz[], $6::timestamptz[], $7::timestamptz[],
                                $8::bigint[])
           ON CONFLICT DO NOTHING
           RETURNING device_id, seq""",
        *[list(c) for c in cols],
    )
    return {(r["device_id"], r["seq"]) for r in found}


async def insert_passages(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO passages (device_id, seq, received_at, observed_at, lot_id, lane_id,
                                 direction, plate, plate_raw, plate_color, confidence, image_ref,
                                 outcome, hold_reason, session_id, event_at, sent_at,
                                 clock_offset_ms)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
                                $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                                $10::text[], $11::real[], $12::text[], $13::text[], $14::text[],
                                $15::text[], $16::timestamptz[], $17::timestamptz[],
                                $18::bigint[])
           ON CONFLICT DO NOTHING""",
        *cols,
    )


async def insert_space_events(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO space_events (device_id, seq, received_at, observed_at, lot_id, space_id,
                                     occupied, battery_pct, event_at, sent_at, clock_offset_ms)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
                                $5::text[], $6::text[], $7::bool[], $8::smallint[],
                                $9::timestamptz[], $10::timestamptz[], $11::bigint[])
           ON CONFLICT DO NOTHING""",
        *cols,
    )


async def upsert_space_states(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(lot, space, occupied, device, seq, observed_at, received_at); the newest seq wins."""
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO space_states (lot_id, space_id, occupied, device_id, seq, observed_at,
                                     received_at)
           SELECT DISTINCT ON (lot_id, space_id) *
           FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::bigint[],
                       $6::timestamptz[], $7::timestamptz[])
                AS t(lot_id, space_id, occupied, device_id, seq, observed_at, received_at)
           ORDER BY lot_id, space_id, seq DESC
           ON CONFLICT (lot_id, space_id) DO UPDATE SET
               occupied = EXCLUDED.occupied, device_id = EXCLUDED.device_id,
               seq = EXCLUDED.seq, observed_at = EXCLUDED.observed_at,
               received_at = EXCLUDED.received_at
           WHERE space_states.device_id <> EXCLUDED.device_id
              OR space_states.seq < EXCLUDED.seq""",
        *cols,
    )


async def insert_dead_letters(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(source, received_at, topic, device_id, seq, reason, payload)."""
    if not rows:
        return
    await conn.executemany(
        """INSERT INTO dead_letters (source, received_at, topic, device_id, seq, reason, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source) DO NOTHING""",
        rows,
    )


async def insert_anomalies(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(id, kind, lot, device, plate, session, image_ref, details json, created_at)."""
    if not rows:
        return
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO anomalies (id, kind, lot_id, device_id, plate, session_id, image_ref,
                                  details, created_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::jsonb[], $9::timestamptz[])
           -- also the one-open-per-device indexes (device_clock_skew)
           ON CONFLICT DO NOTHING""",
        *cols,
    )


async def resolve_device_anomalies(
    conn: asyncpg.Connection, *, kind: str, device_ids: Sequence[str], at: datetime, why: str
) -> None:
    if not device_ids:
        return
    await conn.execute(
        """UPDATE anomalies SET status = 'resolved', resolved_at = $3, resolution = $4
           WHERE kind = $1 AND status = 'open' AND device_id = ANY($2::text[])""",
        kind,
        list(device_ids),
        at,
        why,
    )


async def went_back(
    conn: asyncpg.Connection, pairs: Sequence[tuple[str, int]]
) -> list[asyncpg.Record]:
    """Of the stored events ``pairs`` and their neighbours by seq, those observed (device
    clock) before the same device's previous stored event by seq."""
    if not pairs:
        return []
    devices, seqs = (list(c) for c in zip(*pairs, strict=True))
    return await conn.fetch(
        """WITH new AS (
               SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(device_id, seq)
           ), pairs AS (
               -- each new event against the one before it, and the one after it
               -- against the new event (a gap filled late)
               SELECT x.device_id, b.seq AS prev_seq, x.seq
                 FROM new x
                 CROSS JOIN LATERAL (
                     SELECT seq FROM device_events d
                      WHERE d.device_id = x.device_id AND d.seq < x.seq
                        AND d.observed_at IS NOT NULL
                      ORDER BY seq DESC LIMIT 1) b
               UNION
               SELECT x.device_id, x.seq AS prev_seq, a.seq
                 FROM new x
                 CROSS JOIN LATERAL (
                     SELECT seq FROM device_events d
                      WHERE d.device_id = x.device_id AND d.seq > x.seq
                        AND d.observed_at IS NOT NULL
                      ORDER BY seq LIMIT 1) a
           )
           SELECT e.device_id, e.seq, e.observed_at, e.received_at,
                  b.seq AS prev_seq, b.observed_at AS prev_observed_at
             FROM pairs p
             JOIN device_events e ON e.device_id = p.device_id AND e.seq = p.seq
             JOIN device_events b ON b.device_id = p.device_id AND b.seq = p.prev_seq
            WHERE e.observed_at < b.observed_at""",
        devices,
        seqs,
    )


async def record_device_clocks(
    conn: asyncpg.Connection, clocks: Mapping[str, tuple[int | None, bool, datetime]]
) -> None:
    """Each device's latest clock reading (offset ms, skewed, at); an older one never
    replaces a newer."""
    if not clocks:
        return
    rows = [(d, offset, skewed, at) for d, (offset, skewed, at) in sorted(clocks.items())]
    cols = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(
        """INSERT INTO device_clocks (device_id, offset_ms, skewed, checked_at)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::timestamptz[])
           ON CONFLICT (device_id) DO UPDATE
              SET offset_ms = coalesce(EXCLUDED.offset_ms, device_clocks.offset_ms),
                  skewed = EXCLUDED.skewed, checked_at = EXCLUDED.checked_at
            WHERE device_clocks.checked_at <= EXCLUDED.checked_at""",
        *cols,
    )


async def resolve_filled_gaps(conn: asyncpg.Connection, device_ids: Sequence[str]) -> None:
    """A seq gap is resolved once the device's watermark has passed it."""
    if not device_ids:
        return
    await conn.execute(
        """UPDATE anomalies a SET status = 'resolved', resolved_at = w.updated_at,
                                  resolution = 'filled: watermark ' || w.seq
           FROM device_watermarks w
           WHERE a.kind = 'seq_gap' AND a.status = 'open' AND a.device_id = w.device_id
             AND a.device_id = ANY($1::text[]) AND (a.details->>'to')::bigint <= w.seq""",
        list(device_ids),
    )


async def current_watermarks(conn: asyncpg.Connection, device_ids: Sequence[str]) -> dict[str, int]:
    """Stored watermarks (> 0) of these devices."""
    if not device_ids:
        return {}
    rows = await conn.fetch(
        "SELECT device_id, seq FROM device_watermarks "
        "WHERE device_id = ANY($1::text[]) AND seq > 0",
        list(device_ids),
    )
    return {r["device_id"]: r["seq"] for r in rows}


async def advance_watermarks(
    conn: asyncpg.Connection, device_ids: Sequence[str], now: datetime
) -> dict[str, int]:
    """Move each device's watermark to the end of its contiguous run of stored seqs.

    Returns device -> new watermark for the devices whose watermark moved. Only
    committed or own rows are visible, so the result never covers a seq that is
    not stored; GREATEST keeps it monotonic when two persisters race. A device
    seen for the first time gets its row (seq 0) even when nothing is covered yet.
    """
    if not device_ids:
        return {}
    rows = await conn.fetch(
        """WITH d AS (
               SELECT t.device_id, coalesce(w.seq, 0) AS old, w.seq IS NULL AS fresh
               FROM unnest($1::text[]) AS t(device_id)
               LEFT JOIN device_watermarks w USING (device_id)
           ), next AS (
               SELECT d.device_id, d.old, d.fresh,
                      CASE WHEN EXISTS (SELECT 1 FROM device_events e
                                        WHERE e.device_id = d.device_id AND e.seq = d.old + 1)
                      THEN (SELECT e.seq FROM device_events e
                            WHERE e.device_id = d.device_id AND e.seq > d.old
                              AND NOT EXISTS (SELECT 1 FROM device_events f
                                              WHERE f.device_id = e.device_id
                                                AND f.seq = e.seq + 1)
                            ORDER BY e.seq LIMIT 1)
                      ELSE d.old END AS new
               FROM d
           )
           INSERT INTO device_watermarks AS w (device_id, seq, updated_at)
           SELECT device_id, new, $2 FROM next WHERE fresh OR new > old
           ON CONFLICT (device_id) DO UPDATE
               SET seq = GREATEST(w.seq, EXCLUDED.seq), updated_at = EXCLUDED.updated_at
           RETURNING device_id, seq""",
        list(device_ids),
        now,
    )
    return {r["device_id"]: r["seq"] for r in rows if r["seq"] > 0}


async def watermarks(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT device_id, seq FROM device_watermarks")
    return {r["device_id"]: r["seq"] for r in rows}


# --- reads for the CLI and tests


async def dead_letters(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, received_at, topic, device_id, seq, reason, payload
           FROM dead_letters ORDER BY id DESC LIMIT $1""",
        limit,
    )


async def anomalies(
    conn: asyncpg.Connection, *, kind: str | None, status: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, kind, lot_id, device_id, plate, session_id, image_ref, details::text,
                  status, created_at, resolved_at, resolution
           FROM anomalies
           WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2)
           ORDER BY created_at DESC, id LIMIT $3""",
        kind,
        status,
        limit,
    )


# --- sessions made by a driver's scan, and payments in the lot


async def open_account_session(
    redis: aioredis.Redis,
    *,
    lot_id: str,
    account_id: str,
    session_id: str,
    at_ms: int,
    full_policy: str = "hold",
) -> tuple[str, str]:
    """Let an unplated car in under the account that scanned it (``occ_account``);
    ``end_in_lot`` with ``keys.account_field(account)`` takes it out.

    Returns the outcome (opened, exists, full, nolot, notready) and the session's
    value in the lot's sessions hash (or '')."""
    # Packed once per lot and sent as a one-command Batch: redis-py's command path
    # (encoding, retry, pool bookkeeping) was a fifth of a scan's CPU.
    head, count = packed_head("occ_account", tuple(keys.account_keys(lot_id)))
    pipe = Batch()
    pipe.fcall_packed(head, count, lot_id, account_id, session_id, str(at_ms), full_policy)
    [reply] = await pipe.execute(redis)
    if isinstance(reply, ResponseError):
        if "function not found" in str(reply).lower():
            return "notready", ""  # a Redis that lost the library: the rebuild loads it
        raise reply
    if isinstance(reply, Exception):
        raise reply
    outcome, value = texts(reply)
    return outcome, value


def queue_prepaid_read(pipe: Batch, *, lot_id: str, plate: str) -> None:
    pipe.command("GET", keys.prepaid(lot_id, plate))


#: A payment made in the lot is shown at the exit for this long at most.
PREPAID_TTL_S: Final = 2 * 24 * 3600


async def set_prepaid(
    redis: aioredis.Redis,
    *,
    lot_id: str,
    plate: str,
    session_id: str,
    billed_fen: int,
    leave_by_ms: int | None,
) -> None:
    await redis.set(
        keys.prepaid(lot_id, plate),
        f"{session_id}|{billed_fen}|{leave_by_ms or 0}",
        ex=PREPAID_TTL_S,
    )


async def session_with_window(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT s.lot_id, s.plate, s.status, s.entry_at, s.account_id,
                  make_interval(mins => l.exit_window_minutes) AS exit_window
           FROM sessions s JOIN lots l ON l.id = s.lot_id WHERE s.id = $1""",
        session_id,
    )


# --- an operator ends or corrects a session the lanes left open


async def end_in_lot(redis: aioredis.Redis, *, lot_id: str, field: str, session_id: str) -> str:
    """Take the session out of its lot's open sessions (the lot's count goes down by one)
    if ``field`` (its plate, or ``keys.account_field(account)``) still holds it.
    Idempotent; writes no event (the caller records the decision in PostgreSQL).

    Returns ``ended``, ``absent`` (not open there: nothing written) or ``notready``
    (the lot's shard is being rebuilt: nothing written)."""
    reply = await redis.fcall("occ_end", 3, *keys.account_keys(lot_id), lot_id, field, session_id)
    return texts(reply)[0]


async def rekey_in_lot(
    redis: aioredis.Redis, *, lot_id: str, wrong: str, right: str, session_id: str
) -> str:
    """Move the lot's open session from the misread plate to the right one, same value.

    Returns ``moved``, ``absent`` (``wrong`` does not hold it), ``taken`` (``right`` is
    open in this lot) or ``notready``."""
    reply = await redis.fcall(
        "occ_rekey", 3, *keys.account_keys(lot_id), lot_id, wrong, right, session_id
    )
    return texts(reply)[0]


async def claim_plate(
    redis: aioredis.Redis, *, plate: str, session_id: str, lot_id: str, at_ms: int, op: str
) -> str:
    """The plate's city-wide entry names the session (``plate_claim``): ``claimed``,
    ``same`` (this op already did), ``older`` (a later entry or exit of the plate is
    known) or ``notready``."""
    reply = await redis.fcall(
        "plate_claim", 2, *keys.plate_keys(plate), session_id, lot_id, str(at_ms), op
    )
    return texts(reply)[0]


async def release_plate(
    redis: aioredis.Redis, *, plate: str, session_id: str, out_at_ms: int
) -> str:
    """Release the plate's city-wide entry if it still names the session; a claim of an
    entry before ``out_at_ms`` that arrives later loses. Idempotent.

    Returns ``released``, ``absent`` (it names another session, or none) or
    ``notready`` (the plate's shard is being rebuilt: nothing written)."""
    reply = await redis.fcall(
        "plate_release", 2, *keys.plate_keys(plate), session_id, str(out_at_ms)
    )
    return text(reply)


async def prepaid_open_sessions(conn: asyncpg.Connection) -> list[str]:
    """Open plated sessions that paid in the lot (their exit display hints)."""
    rows = await conn.fetch(
        """SELECT DISTINCT b.session_id FROM bills b JOIN sessions s ON s.id = b.session_id
           WHERE b.kind = 'prepay' AND s.status = 'open' AND s.plate IS NOT NULL"""
    )
    return [r["session_id"] for r in rows]


# ------------------------------------------------------------------ a driver's open stays


async def open_stays(redis: aioredis.Redis, plates: list[str]) -> dict[str, tuple[str, str, int]]:
    """plate -> (session id, lot, entry ms) for plates whose shard is loaded.

    Raises ShardsNotLoaded (with what the loaded shards said) when a plate's shard is
    not loaded: its answer is in PostgreSQL. Raises RedisError when Redis does not answer.
    """
    # The core's own light pipeline (occupancy.store.Batch): redis-py's costs
    # more CPU per command than Redis spends answering it.
    pipe = Batch()
    for plate in plates:
        tag = keys.plate_tag(plate)
        pipe.command("EXISTS", keys.ready(tag))
        pipe.command("HMGET", keys.plate(tag, plate), "sid", "lot", "at")
    replies = await pipe.execute(redis, deadline_s=2.0)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    found: dict[str, tuple[str, str, int]] = {}
    unloaded: list[str] = []
    for n, plate in enumerate(plates):
        ready, fields = replies[2 * n], replies[2 * n + 1]
        assert isinstance(fields, list)
        sid, lot, at = fields
        if not ready:
            unloaded.append(plate)
            continue
        if sid and lot and at:
            found[plate] = (_decoded(sid), _decoded(lot), int(_decoded(at)))
    if unloaded:
        raise ShardsNotLoaded(unloaded, found)
    return found


class ShardsNotLoaded(Exception):
    def __init__(self, plates: list[str], found: dict[str, tuple[str, str, int]]) -> None:
        super().__init__("plate shards not loaded")
        self.plates = plates
        self.found = found


def _decoded(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
