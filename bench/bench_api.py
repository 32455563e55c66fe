"""API throughput under wrk, one granian worker, as ratios to a hello-world route.

Starts the platform's app (plus /bench/hello) under granian on a spare port
against the stack named by the PARKING_* environment (make bench uses the test
stack), seeds the city if needed, then runs wrk against each route in turn and
prints requests/s, p99 latency and the ratio to hello-world measured in the
same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from results import Results, sized

from parking import config
from parking.auth import tokens
from parking.auth.model import Role
from parking.db import migrate
from parking.occupancy import rebuild
from parking.seed import service as seeding

HERE = Path(__file__).resolve().parent
PORT = int(os.environ.get("BENCH_API_PORT", "8097"))
DURATION_S = int(os.environ.get("BENCH_SECONDS", sized("8", "1")))
CONNECTIONS = 32


@dataclass(frozen=True)
class Result:
    name: str
    rps: float
    p99_ms: float
    errors: int


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and Path("/etc/debian_version").exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is missing: install the Debian package wrk")
    return found


async def prepare(settings: config.Settings) -> None:
    owner = await asyncpg.connect(settings.owner_database_url)
    try:
        await migrate.migrate(owner)
    finally:
        await owner.close()
    conn = await asyncpg.connect(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        if await seeding.is_empty(conn):
            await seeding.seed(conn, city_seed=settings.city_seed, progress=lambda _: None)
        # the live core holds the city, so the city's figures read real counts
        await rebuild.rebuild(conn, redis, now=datetime.now(UTC), force=True)
    finally:
        await conn.close()
        await redis.aclose()


LUA_TEMPLATE = """
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  io.write(string.format("BENCH %d %d %f %d\\n", summary.requests, summary.duration,
    latency:percentile(99), summary.errors.status + summary.errors.connect +
    summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def run_wrk(
    wrk: str,
    name: str,
    path: str,
    *,
    method: str = "GET",
    body: str | None = None,
    token: str | None = None,
) -> Result:
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script = LUA_TEMPLATE.format(method=method, body=json.dumps(body) if body else "nil", auth=auth)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as handle:
        handle.write(script)
        handle.flush()
        out = subprocess.run(
            [
                wrk,
                "-t",
                "1",
                "-c",
                str(CONNECTIONS),
                "-d",
                f"{DURATION_S}s",
                "-s",
                handle.name,
                f"http://127.0.0.1:{PORT}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(r"BENCH (\d+) (\d+) ([\d.]+) (\d+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    requests, duration_us, p99_us, errors = match.groups()
    return Result(name, int(requests) / (int(duration_us) / 1e6), float(p99_us) / 1000, int(errors))


@contextlib.contextmanager
def serve_app(port: int = PORT, *, workers: int = 1, **overrides: str) -> Iterator[None]:
    """The app under test (with /bench/hello) under ``workers`` granian workers (one
    unless a bench measures how a route scales with cores) on ``port``, until the block
    ends; ``overrides`` are extra environment variables."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE}:{os.environ.get('PYTHONPATH', '')}",
        "PARKING_LOG_LEVEL": "warning",
        # wrk sends every request with one token: measure the route, not the
        # per-caller quote limit (which would answer 429 after 60).
        "PARKING_QUOTE_LIMIT_PER_MINUTE": str(10**9),
        **overrides,
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "api_under_test:make",
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        if workers > 1:
            time.sleep(2)  # /readyz answered from one worker; let the others start too
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


#: goals an issue set, as ratios to hello-world (issue 13: the city overview)
GOALS = {"city overview (651 lots, live core)": 0.5}


def record(
    results: Results, runs: list[Result], goals: dict[str, float], *, write: bool = True
) -> None:
    """The wrk runs as rows: the first is hello-world, the baseline of the others;
    ``write=False`` leaves writing the file to a caller that adds rows."""
    hello, *routes = runs
    base = results.baseline(
        hello.name, hello.rps, "req/s", p99_ms=hello.p99_ms, errors=hello.errors
    )
    for r in routes:
        goal = goals.get(r.name)
        results.row(
            r.name,
            r.rps,
            "req/s",
            against=base,
            goal=None if goal is None else f">= {goal}x hello-world",
            met=None if goal is None else r.rps / hello.rps >= goal,
            p99_ms=r.p99_ms,
            errors=r.errors,
        )
    if write:
        results.write()


def report(runs: list[Result]) -> None:
    base = runs[0].rps
    print(f"API under wrk: 1 granian worker, {CONNECTIONS} connections, {DURATION_S}s per route")
    for r in runs:
        print(
            f"{r.name:<40} {r.rps:>9,.0f} req/s  p99 {r.p99_ms:7.2f} ms  "
            f"ratio {r.rps / base:5.2f}  errors {r.errors}"
        )
    record(Results("api"), runs, GOALS)


def main() -> int:
    settings = config.load()
    wrk = ensure_wrk()
    asyncio.run(prepare(settings))
    with serve_app():
        token = tokens.issue(
            settings.jwt_key,
            subject="bench",
            role=Role.DRIVER,
            now=datetime.now(UTC),
            ttl=timedelta(hours=1),
        )
        quote = json.dumps(
            {
                "lot_id": "GZ-DEMO-01",
                "plate": "赣B12345",
                "entry": "2026-11-27T08:00:00+08:00",
                "exit": "2026-11-27T11:10:00+08:00",
            }
        )
        city = tokens.issue(
            settings.jwt_key,
            subject="bench-city",
            role=Role.CITY,
            now=datetime.now(UTC),
            ttl=timedelta(hours=1),
        )
        runs = [
            run_wrk(wrk, "hello-world (baseline)", "/bench/hello"),
            run_wrk(wrk, "city overview (651 lots, live core)", "/v1/city/overview", token=city),
            run_wrk(
                wrk,
                "quote at a lot (auth + pricer)",
                "/v1/tariffs/quote",
                method="POST",
                body=quote,
                token=token,
            ),
        ]
    report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
