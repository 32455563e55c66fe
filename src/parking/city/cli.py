"""``parking city``: the rollup job that keeps the city's hourly and daily figures.

``rollup`` refreshes what changed every PARKING_ROLLUP_EVERY_S (``parking run``
supervises it); ``--once`` runs once and prints what it did; ``backfill`` marks a
span of hours for the next run (after an import of old sessions, say)."""

from __future__ import annotations

import asyncio
import sys
from datetime import date, datetime, timedelta

import asyncpg
import click
import msgspec
import structlog

from parking import config, redisclient
from parking.city import logic, rollups
from parking.clock import SystemClock
from parking.observability import configure_logging
from parking.periodic import repeat

log = structlog.get_logger("parking.city")


@click.group("city")
def city() -> None:
    """The city's figures: hourly and daily rollups."""


def _progress(done: int, total: int) -> None:
    if total > 24 and (done % 24 == 0 or done == total):
        click.echo(f"[rollup] {done}/{total} hours", err=True)


async def _rollup(once: bool, every: float) -> rollups.Refreshed | None:
    settings = config.load()
    clock = SystemClock()
    silent_after = timedelta(seconds=settings.device_silent_after_s)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = redisclient.connect(
        settings.redis_url, cluster=settings.redis_cluster, socket_timeout=10
    )
    try:
        if once:
            return await rollups.refresh(
                pool, redis, now=clock.now(), silent_after=silent_after, progress=_progress
            )

        async def run() -> None:
            # PostgreSQL away: the marks stay (the run rolled back); tried next time.
            done = await rollups.refresh(
                pool, redis, now=clock.now(), silent_after=silent_after, progress=_progress
            )
            log.info(
                "rollup",
                hours=done.hours,
                days=done.days,
                marked=done.marked,
                sampled=done.sampled,
                seconds=round(done.seconds, 3),
            )

        await repeat(run, every=every, name="city-rollups")
        return None
    finally:
        await redis.aclose()
        await pool.close()


@city.command("rollup")
@click.option("--once", is_flag=True, help="Refresh once, print what was done and exit.")
@click.option(
    "--every",
    type=float,
    default=None,
    help="seconds between runs (default PARKING_ROLLUP_EVERY_S)",
)
def rollup(once: bool, every: float | None) -> None:
    """Refresh the hours that changed, this hour and the last, their days, and this
    hour's live samples; then again every PARKING_ROLLUP_EVERY_S until stopped."""
    settings = config.load()
    configure_logging(settings.log_level, settings.log_format, process="city-rollups")
    done = asyncio.run(_rollup(once, every or settings.rollup_every_s))
    if once and done is not None:
        click.echo(msgspec.json.encode(done).decode())


def _day(_: click.Context, __: click.Parameter, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not YYYY-MM-DD") from exc


@city.command("backfill")
@click.option("--from", "first", required=True, callback=_day, help="first business day")
@click.option("--to", "last", required=True, callback=_day, help="last business day")
def backfill(first: date, last: date) -> None:
    """Mark every hour of the business days FROM..TO for the next rollup run."""
    if last < first:
        click.echo("--to is before --from", err=True)
        sys.exit(2)

    async def mark() -> int:
        conn = await asyncpg.connect(config.load().database_url)
        try:
            start: datetime = logic.day_bucket(first)
            return await rollups.backfill(conn, start, logic.day_bucket(last) + timedelta(days=1))
        finally:
            await conn.close()

    click.echo(f"marked {asyncio.run(mark())} hours; the next `parking city rollup` counts them")
