"""Rebuild the occupancy core from PostgreSQL, the system of record (matrix R5).

Per shard: take its ``ready`` marker away (every gateway call on it now answers
NOTREADY, so gateways stop acknowledging and wait), wait until the persister has
written everything the shard's stream still holds, replace the shard's state
with what PostgreSQL says, and put the marker back.

What is restored: lots (capacity, kind, open-session and occupied-space counts),
open sessions per lot, space states, per-device seq marks (so events the
devices re-send are recognised as duplicates), the plate index, plate flags
(blacklist, arrears, monthly passes) and each live device's last-heard time
(= now, so silence detection starts over). Not restored: pending commands
(gates that missed one re-send their passage, which is re-decided) and
follow-ups (their effects are in PostgreSQL already).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from parking.ids import ulid
from parking.occupancy import ingest, keys, logic, records, store
from parking.occupancy import plate_flags as core_plate_flags
from parking.occupancy.batch import Tuning

#: Commands per pipeline: big enough to amortise round trips, small enough that
#: one reply never holds hundreds of megabytes.
_CHUNK = 2000


class NotDrained(Exception):
    """The persister did not catch up with a shard's stream in time."""


@dataclass(frozen=True, slots=True)
class RebuildReport:
    lot_shards: int
    plate_shards: int
    lots: int
    open_sessions: int
    spaces: int
    devices: int
    flagged_plates: int
    seconds: float


def _entry_id(value: object) -> tuple[int, int]:
    ms, _, n = store.text(value).partition("-")
    return int(ms or 0), int(n or 0)


async def _drained(redis: aioredis.Redis, tag: str) -> bool:
    """Has the persister group read and acknowledged everything in the shard's stream?"""
    stream = keys.events(tag)
    if not await redis.exists(stream):
        return True
    info = await redis.xinfo_stream(stream)
    last = _entry_id(info.get("last-generated-id"))
    for group in await redis.xinfo_groups(stream):
        if store.text(group.get("name")) == keys.GROUP:
            read_all = _entry_id(group.get("last-delivered-id")) >= last
            return read_all and int(group.get("pending") or 0) == 0
    # No persister group yet: drained only if the stream is empty.
    return int(await redis.xlen(stream)) == 0


async def _wait_drained(redis: aioredis.Redis, tags: Sequence[str], within: float) -> None:
    deadline = time.monotonic() + within
    waiting = list(tags)
    while waiting:
        waiting = [t for t in waiting if not await _drained(redis, t)]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise NotDrained(
                f"the persister has not written shards {', '.join(waiting)} within {within:.0f} s;"
                " start it, or pass force to drop what they hold"
            )
        await asyncio.sleep(0.2)


async def _delete_matching(redis: aioredis.Redis, patterns: Iterable[str]) -> None:
    """Unlink the keys matching any pattern (each exact, or a prefix ending in ``*``).

    One SCAN pass over the keyspace filtered here, rather than one SCAN MATCH
    pass per pattern: with 32 shards and 5 key kinds that was 128 passes over
    every key, most of the rebuild's time inside Redis.
    """
    wanted = list(patterns)
    if any("*" in p[:-1] or "?" in p or "[" in p for p in wanted):
        raise ValueError("patterns are exact keys or prefixes ending in '*'")
    exact = {p.encode() for p in wanted if not p.endswith("*")}
    prefixes = tuple(p[:-1].encode() for p in wanted if p.endswith("*"))
    batch: list[Any] = []
    async for key in redis.scan_iter(count=5000):
        raw = key if isinstance(key, bytes) else str(key).encode()
        if raw in exact or raw.startswith(prefixes):
            batch.append(key)
            if len(batch) >= 1000:
                await redis.unlink(*batch)
                batch = []
    if batch:
        await redis.unlink(*batch)


async def _flush(
    pipe_commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]], redis: aioredis.Redis
) -> None:
    for start in range(0, len(pipe_commands), _CHUNK):
        pipe = redis.pipeline(transaction=False)
        for name, args, kwargs in pipe_commands[start : start + _CHUNK]:
            getattr(pipe, name)(*args, **kwargs)
        await pipe.execute()


async def rebuild(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    *,
    now: datetime,
    lot_tags: Sequence[str] | None = None,
    plate_tags: Sequence[str] | None = None,
    drain_timeout: float = 60.0,
    force: bool = False,
) -> RebuildReport:
    """Replace the state of the given shards (default: all) with PostgreSQL's.

    Safe while gateways and persisters run. Without ``force`` it refuses (NotDrained)
    to drop a shard whose stream still holds unwritten events.
    """
    started = time.monotonic()
    lot_tags = list(lot_tags) if lot_tags is not None else keys.all_lot_tags()
    plate_tags = list(plate_tags) if plate_tags is not None else keys.all_plate_tags()
    await store.load_library(redis)
    # One key per command: a multi-key DEL would span slots on a Cluster.
    pipe = redis.pipeline(transaction=False)
    for tag in [*lot_tags, *plate_tags]:
        pipe.delete(keys.ready(tag))
    await pipe.execute()
    if not force:
        await _wait_drained(redis, lot_tags, drain_timeout)

    # Read everything first: the shards stay closed for as short a time as possible.
    directory = await ingest.load_directory(conn)
    sessions = await records.open_sessions(conn)
    gone = await records.exits_without_entry(conn, now - Tuning().late_entry_within)
    spaces = await records.space_states(conn)
    marks = await records.device_marks_pg(conn)
    flags = await core_plate_flags.plate_flags_from_db(conn, now)

    wanted_lots = set(lot_tags)
    wanted_plates = set(plate_tags)
    await _delete_matching(
        redis,
        [
            f"{t}:{part}:*"
            for t in lot_tags
            for part in ("lot", "sess", "spaces", "dev", "devx", "paid", "gone")
        ]
        + [f"{t}:{name}" for t in lot_tags for name in ("seen", "out")]
        + [f"{t}:plate:*" for t in plate_tags]
        + [f"{t}:flagged" for t in plate_tags],
    )

    commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    open_count: dict[str, int] = defaultdict(int)
    by_lot: dict[str, dict[str, str]] = defaultdict(dict)
    for row in sessions:
        if (
            keys.lot_tag(row["lot_id"]) in wanted_lots
            and row["plate"] is None
            and row["account_id"] is not None
        ):
            # An unplated car let in by a driver's scan (occ_account).
            by_lot[row["lot_id"]][keys.account_field(row["account_id"])] = (
                f"{row['id']}|{logic.to_ms(row['entry_at'])}|account:{row['account_id']}|0"
            )
            open_count[row["lot_id"]] += 1
        if keys.lot_tag(row["lot_id"]) in wanted_lots and row["plate"] is not None:
            by_lot[row["lot_id"]][row["plate"]] = (
                f"{row['id']}|{logic.to_ms(row['entry_at'])}|"
                f"{row['entry_device_id'] or 'rebuild'}|{row['entry_seq'] or 0}"
            )
            open_count[row["lot_id"]] += 1
        if row["plate"] is not None and keys.plate_tag(row["plate"]) in wanted_plates:
            at = str(logic.to_ms(row["entry_at"]))
            commands.append(
                (
                    "hset",
                    (keys.plate(keys.plate_tag(row["plate"]), row["plate"]),),
                    {
                        "mapping": {
                            "sid": row["id"],
                            "lot": row["lot_id"],
                            "at": at,
                            "op": "rebuild",
                            "mark": at,
                        }
                    },
                )
            )
    for row in gone:  # the latest per plate and lot, as occ_passage keeps them
        if keys.lot_tag(row["lot_id"]) in wanted_lots:
            value = (
                f"{row['id']}|{logic.to_ms(row['exit_at'])}|"
                f"{row['exit_device_id'] or 'rebuild'}|{row['exit_seq'] or 0}"
            )
            gone_key = keys.gone(keys.lot_tag(row["lot_id"]), row["lot_id"])
            commands.append(("hset", (gone_key, row["plate"], value), {}))
    occupied: dict[str, int] = defaultdict(int)
    space_values: dict[str, dict[str, str]] = defaultdict(dict)
    for row in spaces:
        if keys.lot_tag(row["lot_id"]) not in wanted_lots:
            continue
        observed = logic.to_ms(row["observed_at"])
        space_values[row["lot_id"]][row["space_id"]] = (
            f"{1 if row['occupied'] else 0}|{row['seq']}|{observed}|{observed}|0|{row['device_id']}"
        )
        occupied[row["lot_id"]] += 1 if row["occupied"] else 0
    lots = [lot for lot in directory.lots.values() if keys.lot_tag(lot.lot_id) in wanted_lots]
    for lot in lots:
        t = keys.lot_tag(lot.lot_id)
        commands.append(
            (
                "hset",
                (keys.lot(t, lot.lot_id),),
                {
                    "mapping": {
                        "capacity": lot.capacity,
                        "kind": lot.kind,
                        "sessions": open_count.get(lot.lot_id, 0),
                        "occupied": occupied.get(lot.lot_id, 0),
                    }
                },
            )
        )
        if by_lot.get(lot.lot_id):
            commands.append(
                ("hset", (keys.sessions(t, lot.lot_id),), {"mapping": by_lot[lot.lot_id]})
            )
        if space_values.get(lot.lot_id):
            commands.append(
                ("hset", (keys.spaces(t, lot.lot_id),), {"mapping": space_values[lot.lot_id]})
            )
    device_count = 0
    now_ms = logic.to_ms(now)
    lot_of_device = {d.device_id: d.lot_id for d in directory.devices.values()}
    for row in marks:
        lot_id = lot_of_device.get(row["device_id"])
        if lot_id is None or keys.lot_tag(lot_id) not in wanted_lots:
            continue
        tag = keys.lot_tag(lot_id)
        above = list(row["above"])
        top = max([row["wm"], *above])
        commands.append(
            (
                "hset",
                (keys.device(tag, row["device_id"]),),
                {"mapping": {"hw": row["wm"], "max": top, "wm": row["wm"]}},
            )
        )
        if above:
            commands.append(("sadd", (keys.device_above(tag, row["device_id"]), *above), {}))
        device_count += 1
    for device in directory.devices.values():
        tag = keys.lot_tag(device.lot_id)
        if tag in wanted_lots:
            commands.append(("zadd", (keys.seen(tag), {device.device_id: now_ms}), {}))
    flagged = 0
    for plate, plate_flags in flags.items():
        tag = keys.plate_tag(plate)
        pairs = logic.flag_pairs(plate_flags)
        if tag not in wanted_plates or not pairs:
            continue
        commands.append(("hset", (keys.plate(tag, plate),), {"mapping": dict(pairs)}))
        commands.append(("sadd", (keys.flagged(tag), plate), {}))
        flagged += 1
    await _flush(commands, redis)
    for session_id in await records.prepaid_open_sessions(conn):
        await core_plate_flags.refresh_prepaid(conn, redis, session_id, now)
    generation = ulid(now)
    pipe = redis.pipeline(transaction=False)
    for tag in [*lot_tags, *plate_tags]:
        pipe.set(keys.ready(tag), generation)
    await pipe.execute()
    return RebuildReport(
        lot_shards=len(lot_tags),
        plate_shards=len(plate_tags),
        lots=len(lots),
        open_sessions=sum(open_count.values()),
        spaces=sum(len(v) for v in space_values.values()),
        devices=device_count,
        flagged_plates=flagged,
        seconds=round(time.monotonic() - started, 3),
    )


async def missing_shards(redis: aioredis.Redis) -> tuple[list[str], list[str]]:
    """Lot and plate shards without their ready marker."""
    lot_tags = keys.all_lot_tags()
    plate_tags = keys.all_plate_tags()
    pipe = redis.pipeline(transaction=False)
    for tag in [*lot_tags, *plate_tags]:
        pipe.get(keys.ready(tag))
    values = await pipe.execute()
    missing = [t for t, v in zip([*lot_tags, *plate_tags], values, strict=True) if v is None]
    return [t for t in missing if t in lot_tags], [t for t in missing if t in plate_tags]


async def ensure_ready(
    conn: asyncpg.Connection, redis: aioredis.Redis, *, now: datetime, lock_ttl_s: int = 120
) -> RebuildReport | None:
    """Rebuild the shards whose state is gone (a fresh or flushed Redis), once across processes.

    A shard keeps its ready marker as long as its state exists, so a missing
    marker means there is nothing of it left to lose: rebuilding it is safe
    without waiting for the persister (force).
    """
    lot_tags, plate_tags = await missing_shards(redis)
    if not lot_tags and not plate_tags:
        return None
    lock = "{occ}:rebuild-lock"
    if not await redis.set(lock, ulid(now), nx=True, ex=lock_ttl_s):
        return None
    try:
        lot_tags, plate_tags = await missing_shards(redis)
        return await rebuild(
            conn, redis, now=now, lot_tags=lot_tags, plate_tags=plate_tags, force=True
        )
    finally:
        await redis.delete(lock)
