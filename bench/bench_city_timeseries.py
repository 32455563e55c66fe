"""The city's figures over 30 days of a whole city: 13.5 million sessions (450,000 a
business day, the issue's figure for Ganzhou) and their bills, generated into a scratch
database of the test stack, rolled up by the rollup job, then read through the API.

Reports:
- the rollup job's backfill of the 30 days (720 hours, 30 days) and one steady-state
  run afterwards (this hour and the last: what `parking run` does every 30 s);
- ``GET /v1/city/timeseries`` over the 30 days (per day and per hour, several
  metrics) and ``GET /v1/city/days/{day}``: p50 / p99 of sequential requests, beside
  hello-world on the same server in the same run (the ratio of the p99s).

Goal (issue 13): the 30-day timeseries p99 under 100 ms.

The generated city is kept between runs (``--fresh`` makes it again); ``--days`` and
``--per-day`` size it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import serve_app
from bench_core_memory import db_url, drop_db
from results import Results, sized, smoke

from parking import config
from parking.auth import tokens
from parking.auth.model import Role
from parking.city import logic, rollups
from parking.clock import SHANGHAI
from parking.db import migrate
from parking.seed import service as seeding
from parking.stack import service as stack

HERE = Path(__file__).resolve().parent
#: a smoke run's city has a database of its own, so it never costs a full run its kept city
DB = sized("bench_city", "bench_city_smoke")
PORT = int(os.environ.get("BENCH_API_PORT", "8097")) + 1
REQUESTS = sized(300, 20)
GOAL_MS = 100.0

PARSER = argparse.ArgumentParser()
PARSER.add_argument("--days", type=int, default=sized(30, 2))
PARSER.add_argument("--per-day", type=int, default=sized(450_000, 2_000))
PARSER.add_argument("--fresh", action="store_true", help="generate the city again")
ARGS = PARSER.parse_args()

# One business day of sessions, made by PostgreSQL itself: entries spread over the
# day, stays of 5 minutes to 5 hours, every lot of the city in turn; a bill for each
# stay, 85 % paid within 10 minutes of leaving, 5 % paid two hours later (arrears
# recovered), the rest unpaid; every tenth payment a contactless deduction's.
_SESSIONS = """
INSERT INTO sessions (id, lot_id, status, entry_at, exit_at, fee_fen, created_at, updated_at)
SELECT 'bench-' || $2 || '-' || g,
       ($3::text[])[1 + g % array_length($3::text[], 1)],
       'closed', at, at + stay, fee, at + stay, at + stay
FROM (
    SELECT g,
           $1::timestamptz + make_interval(secs => ((g::bigint * 7919) % 86400)::float8) AS at,
           make_interval(mins => (5 + (g::bigint * 104729) % 295)::int) AS stay,
           200 * (1 + ((g::bigint * 104729) % 295 + 5) / 60) AS fee
    FROM generate_series(1, $4) AS g
) AS made
"""
_BILLS = """
INSERT INTO bills (id, session_id, lot_id, amount_fen, tariff_id, tariff_version, quote,
                   status, provider, payment_ref, paid_at, closed_at, created_at, updated_at)
SELECT 'b-' || lpad(upper(to_hex($1::bigint * 10000000 + g)), 26, '0'),
       s.id, s.lot_id, s.fee_fen, $3, $4, '{}'::jsonb,
       CASE WHEN g % 100 < 90 THEN 'paid' ELSE 'open' END,
       CASE WHEN g % 100 < 90 THEN 'wechat' END,
       CASE WHEN g % 100 < 90 THEN 'bench-' || g END,
       CASE WHEN g % 100 < 85 THEN s.exit_at + make_interval(mins => g % 10)
            WHEN g % 100 < 90 THEN s.exit_at + interval '2 hours' END,
       s.exit_at, s.exit_at, s.exit_at
FROM (SELECT id, lot_id, fee_fen, exit_at, split_part(id, '-', 3)::int AS g
      FROM sessions WHERE id LIKE 'bench-' || $2 || '-%') AS s
"""


async def generate(url: str, days: int, per_day: int, first: datetime, seed: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
        if await seeding.is_empty(conn):
            await seeding.seed(conn, city_seed=seed, progress=lambda _: None)
        lots = [r["id"] for r in await conn.fetch("SELECT id FROM lots ORDER BY id")]
        tariff = await conn.fetchrow(
            "SELECT tariff_id, version FROM tariff_versions ORDER BY tariff_id, version LIMIT 1"
        )
        assert tariff is not None
        for n in range(days):
            day = first + timedelta(days=n)
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(_SESSIONS, day, str(n), lots, per_day)
                await conn.execute(_BILLS, n, str(n), tariff["tariff_id"], tariff["version"])
            print(
                f"  generated day {n + 1}/{days}: {per_day:,} sessions and bills "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        await conn.execute("ANALYZE sessions")
        await conn.execute("ANALYZE bills")
    finally:
        await conn.close()


async def generated(url: str) -> int:
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return -1
    try:
        if await conn.fetchval("SELECT to_regclass('sessions')") is None:
            return -1
        return int(await conn.fetchval("SELECT count(*) FROM sessions WHERE id LIKE 'bench-%'"))
    finally:
        await conn.close()


async def busiest_district(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        code: str = await conn.fetchval(
            "SELECT district_code FROM lots GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        return code
    finally:
        await conn.close()


async def roll_up(url: str, now: datetime) -> tuple[float, int, int, float]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        started = time.perf_counter()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if time.perf_counter() - last[0] > 10 or done == total:
                last[0] = time.perf_counter()
                print(f"  rollup: {done}/{total} hours", flush=True)

        done = await rollups.refresh(
            pool, None, now=now, silent_after=timedelta(minutes=30), progress=progress
        )
        backfill = time.perf_counter() - started
        started = time.perf_counter()
        await rollups.refresh(pool, None, now=now, silent_after=timedelta(minutes=30))
        steady = time.perf_counter() - started
        return backfill, done.hours, done.days, steady
    finally:
        await pool.close()


def measure(http: httpx.Client, path: str, token: str | None) -> tuple[float, float, int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(20):  # warm up
        http.get(path, headers=headers)
    took = []
    points = 0
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = http.get(path, headers=headers)
        took.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        points = len(response.json().get("points", [])) if "points" in response.text else 1
    took.sort()
    return statistics.median(took), took[int(0.99 * len(took)) - 1], points


def main() -> int:
    settings = config.load()
    stack.up(settings, log=lambda _: None)
    settings = config.load()
    url = db_url(settings, DB)
    now = datetime.now(UTC)
    today = logic.day_start(now)
    first = today - timedelta(days=ARGS.days)
    wanted = ARGS.days * ARGS.per_day
    have = asyncio.run(generated(url))
    if ARGS.fresh or have != wanted:
        asyncio.run(drop_db(settings, DB))

        async def create() -> None:
            admin = await asyncpg.connect(db_url(settings, "postgres"))
            try:
                await admin.execute(f"CREATE DATABASE {DB}")
            finally:
                await admin.close()

        asyncio.run(create())
        print(f"generating {ARGS.days} days x {ARGS.per_day:,} sessions = {wanted:,}", flush=True)
        started = time.perf_counter()
        asyncio.run(generate(url, ARGS.days, ARGS.per_day, first, settings.city_seed))
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
        backfill, hours, days, steady = asyncio.run(roll_up(url, now))
        rolled_up: dict[str, float] = {"rollup_backfill_s": backfill}
        print(
            f"rollup backfill: {hours} hours and {days} days in {backfill:.1f} s "
            f"({wanted / backfill:,.0f} sessions/s)"
        )
    else:
        print(f"the generated city is there ({have:,} sessions); --fresh makes it again")
        _, _, _, steady = asyncio.run(roll_up(url, now))
        rolled_up = {}
    print(f"rollup steady state (this hour and the last, and today): {steady * 1000:.0f} ms")

    city = tokens.issue(
        settings.jwt_key,
        subject="bench-city",
        role=Role.CITY,
        now=now,
        ttl=timedelta(hours=1),
    )
    district = asyncio.run(busiest_district(url))
    span = f"from={first.isoformat()}&to={today.isoformat()}".replace("+", "%2B")
    cases = [
        ("hello-world (baseline)", "/bench/hello", None),
        (
            f"timeseries collected, {ARGS.days} days by day",
            f"/v1/city/timeseries?metric=collected&step=day&{span}",
            city,
        ),
        (
            "timeseries collection_rate, by day",
            f"/v1/city/timeseries?metric=collection_rate&step=day&{span}",
            city,
        ),
        (
            "timeseries arrears_outstanding, by day",
            f"/v1/city/timeseries?metric=arrears_outstanding&step=day&{span}",
            city,
        ),
        (
            f"timeseries entries, {ARGS.days * 24} hours",
            f"/v1/city/timeseries?metric=entries&step=hour&{span}",
            city,
        ),
        (
            "timeseries stay_median, by day, one district",
            f"/v1/city/timeseries?metric=stay_median&step=day&district={district}&{span}",
            city,
        ),
        (
            "one day's figures (top 10 lots, reconciliation)",
            f"/v1/city/days/{(today - timedelta(days=1)).astimezone(SHANGHAI).date()}",
            city,
        ),
    ]
    app_url = urlunsplit(urlsplit(settings.database_url)._replace(path=f"/{DB}"))
    base = f"http://127.0.0.1:{PORT}"
    with (
        serve_app(PORT, PARKING_DATABASE_URL=app_url),
        httpx.Client(base_url=base, trust_env=False, timeout=30) as http,
    ):
        results = [(name, *measure(http, path, token)) for name, path, token in cases]
    hello_p99 = results[0][2]
    print(f"sequential requests, {REQUESTS} each, one granian worker, {wanted:,} sessions behind")
    for name, p50, p99, points in results:
        print(
            f"{name:<50} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
            f"p99 ratio {p99 / hello_p99:6.1f}  points {points}"
        )
    worst = max(p99 for name, _, p99, _ in results if name.startswith("timeseries"))
    print(
        f"worst timeseries p99 {worst:.1f} ms: goal < {GOAL_MS:.0f} ms "
        f"{'MET' if worst < GOAL_MS else 'MISSED'}"
    )
    record(results, sessions=wanted, rollup_steady_state_ms=steady * 1000, **rolled_up)
    if smoke():
        asyncio.run(drop_db(settings, DB))
    return 0


def record(measured: list[tuple[str, float, float, int]], **run: float) -> None:
    """The p99s as rows against hello-world's; the run's own figures go with the baseline."""
    results = Results("city_timeseries")
    (hello, p50, p99, _), *routes = measured
    base = results.baseline(hello + " p99", p99, "ms", p50_ms=p50, **run)
    for name, p50, p99, points in routes:
        series = name.startswith("timeseries")
        results.row(
            name + " p99",
            p99,
            "ms",
            against=base,
            goal=f"p99 < {GOAL_MS:.0f} ms" if series else None,
            met=p99 < GOAL_MS if series else None,
            p50_ms=p50,
            points=points,
        )
    results.write()


if __name__ == "__main__":
    sys.exit(main())
