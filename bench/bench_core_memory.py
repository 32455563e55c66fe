"""Core memory benchmark: Redis used_memory for the full seeded city with 100,000 open sessions.

    uv run python bench/bench_core_memory.py [--sessions 100000]

Runs against the stack of the environment (``PARKING_STACK_DIR`` and ports; the
test stack under ``make bench``), in a scratch database it creates and drops.

1. Scratch database: migrations, the seeded city, a gate on every lane and a
   sensor on every on-street space (``provision_city``, broker files untouched).
2. Redis flushed, then rebuilt from PostgreSQL: the empty core (every lot, space,
   device, no session). Its ``INFO memory`` used_memory is the baseline.
3. 100,000 entries (distinct plates, gated lots filled up to capacity, each lot's
   first entry gate) applied through the real core: ``Ingest.handle`` in
   batches of 1,000 (pipelined single-slot function calls), not MQTT.
4. used_memory again, with a breakdown by key kind (MEMORY USAGE), and the
   steady state without what is transient: the applied-events streams (the
   persister trims them once written) and the pending commands (dropped when
   the gate acks, at the latest after the command TTL of 60 s).

Goal: <= 100 MB for the city with 100k open sessions.

Helpers here are reused by bench_rebuild.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from results import Results, sized

from parking import config
from parking.db import migrate
from parking.devices import service as devices
from parking.devices.messages import Topics
from parking.occupancy import ingest as core_ingest
from parking.occupancy import rebuild
from parking.occupancy.batch import Inbound
from parking.occupancy.ingest import Ingest
from parking.pricing import Pricer
from parking.seed import service as seeding
from parking.stack import service as stack

DB = "bench_core_memory"
GOAL_MB = 100.0
MB = 1024 * 1024


def db_url(settings: config.Settings, name: str) -> str:
    # Scratch databases are created and migrated, so as the schema owner.
    return urlunsplit(urlsplit(settings.owner_database_url)._replace(path=f"/{name}"))


async def create_city(settings: config.Settings, name: str) -> str:
    """A scratch database holding the seeded city with its devices; returns its URL."""
    admin = await asyncpg.connect(db_url(settings, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = db_url(settings, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
        await seeding.seed(conn, city_seed=settings.city_seed, progress=lambda _: None)
        secrets = Path(settings.stack_dir) / "bench" / f"{name}-secrets.json"
        secrets.parent.mkdir(parents=True, exist_ok=True)
        secrets.unlink(missing_ok=True)
        await devices.provision_city(conn, secrets_file=secrets, broker=None)
    finally:
        await conn.close()
    return url


async def drop_db(settings: config.Settings, name: str) -> None:
    admin = await asyncpg.connect(db_url(settings, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


async def entry_gates(conn: asyncpg.Connection) -> list[tuple[str, str, str, int]]:
    """(lot, lane, device, capacity) of each gated lot's first entry gate."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (l.id) l.id AS lot_id, d.lane_id, d.device_id, l.capacity
           FROM lots l JOIN devices d ON d.lot_id = l.id
           WHERE l.kind = 'gated' AND d.kind = 'gate' AND d.lane_id LIKE 'in%'
                 AND d.revoked_at IS NULL
           ORDER BY l.id, d.lane_id"""
    )
    return [(r["lot_id"], r["lane_id"], r["device_id"], r["capacity"]) for r in rows]


def entries(
    n: int, gates: list[tuple[str, str, str, int]], topics: Topics, now: datetime
) -> list[Inbound]:
    """``n`` entries with distinct plates, lots filled in turn up to their capacity."""
    slots: list[tuple[str, str, str]] = []
    for lot_id, lane_id, device_id, capacity in gates:
        slots.extend([(lot_id, lane_id, device_id)] * capacity)
    if len(slots) < n:
        raise SystemExit(f"the city has {len(slots)} gated spaces, fewer than {n}")
    # Spread over the lots (round robin by lot), not lot after lot.
    by_lot: dict[str, list[tuple[str, str, str]]] = {}
    for slot in slots:
        by_lot.setdefault(slot[0], []).append(slot)
    order: list[tuple[str, str, str]] = []
    queues = list(by_lot.values())
    while len(order) < n:
        queues = [q for q in queues if q]
        for q in queues:
            order.append(q.pop())
            if len(order) >= n:
                break
    seqs: Counter[str] = Counter()
    out = []
    for i, (lot_id, lane_id, device_id) in enumerate(order):
        seqs[device_id] += 1
        at = now - timedelta(seconds=30) + timedelta(microseconds=100 * i)
        body = {
            "device_id": device_id,
            "seq": seqs[device_id],
            "observed_at": at.isoformat(),
            "direction": "in",
            "plate": f"粤{'ABCDE'[i // 100_000]}{i % 100_000:05d}",
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": f"{device_id}/{i}.jpg",
        }
        out.append(
            Inbound(
                topics.passages(lot_id, lane_id),
                json.dumps(body, ensure_ascii=False).encode(),
                at,
            )
        )
    return out


async def make_ingest(conn: asyncpg.Connection, redis: aioredis.Redis, topics: Topics) -> Ingest:
    return Ingest(
        redis,
        topics=topics,
        directory=await core_ingest.load_directory(conn),
        pricer=await Pricer.load(conn),
    )


async def drive(
    ingest: Ingest, inbounds: list[Inbound], batch: int = 1000
) -> tuple[float, Counter[str]]:
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for start in range(0, len(inbounds), batch):
        report = await ingest.handle(inbounds[start : start + batch], datetime.now(UTC))
        outcomes.update(report.outcomes)
        if report.dead_lettered:
            outcomes["dead_lettered"] += report.dead_lettered
    return time.perf_counter() - started, outcomes


async def used_memory(redis: aioredis.Redis) -> int:
    info: dict[str, Any] = await redis.info("memory")
    return int(info["used_memory"])


async def breakdown(redis: aioredis.Redis) -> tuple[Counter[str], Counter[str]]:
    """Bytes and key counts by key kind (``{o3}:sess:X`` -> ``sess``)."""
    size: Counter[str] = Counter()
    count: Counter[str] = Counter()
    names: list[bytes] = [key async for key in redis.scan_iter(count=5000)]
    for start in range(0, len(names), 2000):
        chunk = names[start : start + 2000]
        pipe = redis.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
        for key, used in zip(chunk, await pipe.execute(), strict=True):
            parts = key.decode().split(":")
            kind = parts[1] if len(parts) > 1 else parts[0]
            size[kind] += int(used or 0)
            count[kind] += 1
    return size, count


def mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=sized(100_000, 1_000))
    args = parser.parse_args()
    stack.up(config.load(), log=lambda _: None)
    settings = config.load()
    topics = Topics(settings.topic_prefix)
    print(f"preparing: seeded city with its devices in database {DB}")
    url = await create_city(settings, DB)
    conn = await asyncpg.connect(url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        await redis.flushall()
        await asyncio.sleep(0.5)
        flushed = await used_memory(redis)
        report = await rebuild.rebuild(conn, redis, now=datetime.now(UTC), force=True)
        empty = await used_memory(redis)
        print(
            f"empty Redis: {mb(flushed)}; empty core (baseline: {report.lots} lots, "
            f"{report.spaces} spaces, {report.devices} device marks, no session): {mb(empty)}"
        )
        ingest = await make_ingest(conn, redis, topics)
        gates = await entry_gates(conn)
        inbounds = entries(args.sessions, gates, topics, datetime.now(UTC))
        took, outcomes = await drive(ingest, inbounds)
        print(
            f"applied {len(inbounds):,} entries through Ingest.handle (batches of 1,000) in "
            f"{took:.1f} s ({len(inbounds) / took:,.0f}/s): {dict(outcomes)}"
        )
        full = await used_memory(redis)
        size, count = await breakdown(redis)
        transient = size["events"] + size["cmd"] + size["cmdq"]
        print("by key kind (MEMORY USAGE):")
        for kind, used in size.most_common():
            print(f"  {kind:<8} {count[kind]:>7,} keys {mb(used):>10}")
        steady = full - transient
        sessions_bytes = full - empty - transient
        print(
            f"used_memory with {args.sessions:,} open sessions: {mb(full)} "
            f"({mb(full - empty)} above the empty core, "
            f"{(full - empty) / args.sessions:.0f} B/entry)"
        )
        print(
            f"  of which transient (events streams until the persister trims them, commands "
            f"until acked): {mb(transient)}; steady state: {mb(steady)} "
            f"({sessions_bytes / args.sessions:.0f} B/session)"
        )
        print(
            f"ratio full / empty core: {full / empty:.2f}x; goal <= {GOAL_MB:.0f} MB: "
            f"{'met' if full / MB <= GOAL_MB else 'NOT met'} (steady state "
            f"{'met' if steady / MB <= GOAL_MB else 'NOT met'})"
        )
        results = Results("core_memory")
        base = results.baseline(
            "empty core, the city without sessions (baseline)", empty / MB, "MB", lots=report.lots
        )
        results.row(
            f"{args.sessions:,} open sessions, in flight included",
            full / MB,
            "MB",
            against=base,
            goal=f"<= {GOAL_MB:.0f} MB",
            met=full / MB <= GOAL_MB,
            sessions=args.sessions,
            transient_mb=transient / MB,
            by_kind_mb={kind: used / MB for kind, used in size.items()},
        )
        results.row(
            f"{args.sessions:,} open sessions, steady state",
            steady / MB,
            "MB",
            against=base,
            bytes_per_session=sessions_bytes / args.sessions,
        )
        results.write()
        await redis.flushall()
    finally:
        await redis.aclose()
        await conn.close()
        await drop_db(settings, DB)


if __name__ == "__main__":
    asyncio.run(main())
