"""Rebuild benchmark: the core rebuilt from PostgreSQL for the full city with 100,000 open sessions.

    uv run python bench/bench_rebuild.py [--sessions 100000]

Runs against the stack of the environment, in a scratch database it creates and drops.

1. The seeded city with its devices (as bench_core_memory.py), the core rebuilt
   empty, 100,000 entries applied through ``Ingest.handle``.
2. ``parking persister`` writes them to PostgreSQL the way it always does
   (sessions, passages, device events, watermarks); it is stopped once
   PostgreSQL holds every open session.
3. Timed: ``rebuild.rebuild`` of every shard (not forced: it checks the
   persister has drained the streams), end to end.
4. Baseline in the same run: the bare reads of the same rows (the queries the
   rebuild runs, fetched with asyncpg) and a bare ``COPY`` of the open sessions.

Goal: rebuild <= 5 s. Prints the ratio rebuild / bare reads.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core_memory import (
    create_city,
    drive,
    drop_db,
    entries,
    entry_gates,
    make_ingest,
    mb,
    used_memory,
)
from results import Results, sized

from parking import config
from parking.devices.messages import Topics
from parking.occupancy import ingest as core_ingest
from parking.occupancy import plate_flags, rebuild, records
from parking.stack import service as stack

DB = "bench_rebuild"
GOAL_S = 5.0


def _spawn(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


async def persist_all(url: str, conn: asyncpg.Connection, want: int, logs: Path) -> float:
    env = {
        **os.environ,
        "PARKING_DATABASE_URL": url,
        "PARKING_LOG_FORMAT": "json",
        "PARKING_LOG_LEVEL": "info",
    }
    started = time.perf_counter()
    with (logs / "rebuild-persister.log").open("wb") as log:
        proc = _spawn(
            [sys.executable, "-m", "parking", "persister", "--consumer", "bench-rebuild"], env, log
        )
        try:
            while True:
                n = await conn.fetchval("SELECT count(*) FROM sessions WHERE status = 'open'")
                if n >= want:
                    break
                if time.perf_counter() - started > 300:
                    raise SystemExit(f"the persister stored only {n} of {want} sessions in 300 s")
                await asyncio.sleep(0.2)
            took = time.perf_counter() - started
            await asyncio.sleep(1.0)  # let it ack and trim what it wrote
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return took


async def bare_reads(conn: asyncpg.Connection, now: datetime) -> tuple[float, int]:
    started = time.perf_counter()
    await core_ingest.load_directory(conn)
    rows = len(await records.open_sessions(conn))
    rows += len(await records.space_states(conn))
    rows += len(await records.device_marks_pg(conn))
    await plate_flags.plate_flags_from_db(conn, now)
    return time.perf_counter() - started, rows


async def bare_copy(conn: asyncpg.Connection) -> tuple[float, int]:
    sink = io.BytesIO()
    started = time.perf_counter()
    await conn.copy_from_query(
        """SELECT id, lot_id, plate, entry_at, entry_device_id, entry_seq
           FROM sessions WHERE status = 'open'""",
        output=sink,
    )
    return time.perf_counter() - started, len(sink.getvalue())


async def explain(
    conn: asyncpg.Connection, redis: aioredis.Redis, stats: dict[str, Any], wall: float
) -> None:
    """The profile of a miss: Redis time per command during the timed rebuild, then
    the rebuild once more under cProfile (cumulative time per function)."""
    print("Redis commands during the timed rebuild (INFO commandstats):")
    rows = sorted(
        ((name, int(v["calls"]), int(v["usec"])) for name, v in stats.items()),
        key=lambda r: -r[2],
    )
    for name, calls, usec in rows[:6]:
        print(f"  {name:<22} {calls:>8,} calls {usec / 1e6:>7.2f} s in Redis")
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    await rebuild.rebuild(conn, redis, now=datetime.now(UTC))
    profile.disable()
    took = time.perf_counter() - started
    print(f"the rebuild again under cProfile ({took:.2f} s), top by cumulative time:")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(
        r"rebuild\.py|store\.py|service\.py|asyncpg|redis"
    )
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    for line in lines[start : start + 16]:
        print("  " + line[:150])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=sized(100_000, 1_000))
    args = parser.parse_args()
    stack.up(config.load(), log=lambda _: None)
    settings = config.load()
    topics = Topics(settings.topic_prefix)
    logs = Path(settings.stack_dir) / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"preparing: seeded city with its devices in database {DB}")
    url = await create_city(settings, DB)
    conn = await asyncpg.connect(url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        await redis.flushall()
        await rebuild.rebuild(conn, redis, now=datetime.now(UTC), force=True)
        ingest = await make_ingest(conn, redis, topics)
        inbounds = entries(args.sessions, await entry_gates(conn), topics, datetime.now(UTC))
        took, outcomes = await drive(ingest, inbounds)
        print(f"applied {len(inbounds):,} entries through Ingest.handle in {took:.1f} s")
        print(f"  outcomes: {dict(outcomes)}")
        took = await persist_all(url, conn, args.sessions, logs)
        print(f"parking persister wrote them to PostgreSQL in {took:.1f} s")
        await conn.execute("VACUUM ANALYZE")

        now = datetime.now(UTC)
        reads, rows = await bare_reads(conn, now)
        copy, size = await bare_copy(conn)
        reads_again, _ = await bare_reads(conn, now)
        reads = min(reads, reads_again)
        print(
            f"baseline: bare reads of the rebuild's rows ({rows:,} rows: open sessions, space "
            f"states, device marks, plus directory and plate flags): {reads:.2f} s; bare COPY of "
            f"the open sessions ({size / 1024 / 1024:.1f} MB): {copy:.2f} s"
        )
        await redis.config_resetstat()
        started = time.perf_counter()
        report = await rebuild.rebuild(conn, redis, now=datetime.now(UTC))
        wall = time.perf_counter() - started
        stats = await redis.info("commandstats")
        memory = await used_memory(redis)
        print(
            f"rebuild of all {report.lot_shards} + {report.plate_shards} shards: {wall:.2f} s "
            f"({report.lots} lots, {report.open_sessions:,} open sessions, {report.spaces} spaces, "
            f"{report.devices} device marks, {report.flagged_plates} flagged plates); "
            f"Redis used_memory afterwards {mb(memory)}"
        )
        assert report.open_sessions == args.sessions, report
        print(
            f"ratio rebuild / bare reads: {wall / reads:.2f}x, rebuild / COPY: {wall / copy:.1f}x; "
            f"goal <= {GOAL_S:.0f} s: {'met' if wall <= GOAL_S else 'NOT met'}"
        )
        results = Results("rebuild")
        base = results.baseline(
            "bare reads of the rebuild's rows (baseline)", reads, "s", rows=rows
        )
        results.row(
            f"rebuild, {args.sessions:,} open sessions",
            wall,
            "s",
            against=base,
            goal=f"<= {GOAL_S:.0f} s",
            met=wall <= GOAL_S,
            bare_copy_s=copy,
            bare_copy_mb=size / 1024 / 1024,
            redis_used_mb=memory / 1024 / 1024,
        )
        results.write()
        if wall > GOAL_S:
            await explain(conn, redis, stats, wall)
        await redis.flushall()
    finally:
        await redis.aclose()
        await conn.close()
        await drop_db(settings, DB)


if __name__ == "__main__":
    asyncio.run(main())
