"""``parking cases``: the clock job of 码上反映.

``tick`` escalates every case whose clock ran out and closes resolved cases nobody
answered, every PARKING_CASES_EVERY_S (``parking run`` supervises it), then sends the
notifications due through the channels PARKING_CASES_NOTIFY_CONFIG configures (SMS,
WeChat template messages; ``cases/notifiers.py``); ``--once`` runs once and prints
what it did."""

from __future__ import annotations

import asyncio
from typing import Final, cast

import asyncpg
import click
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parking import config, redisclient
from parking.cases import clocks, notifiers, service
from parking.clock import SystemClock
from parking.observability import configure_logging
from parking.periodic import repeat

log = structlog.get_logger("parking.cases")
#: notifications one tick sends at most (the rest wait for the next tick): bounds a
#: tick's length when a provider answers slowly
DELIVERY_BATCH: Final = 200


@click.group("cases")
def cases() -> None:
    """码上反映: the cases' clocks."""


async def _tick_once(pool: asyncpg.Pool, redis: aioredis.Redis) -> dict[str, int]:
    notifier = service.LocalNotifier()
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        done = await clocks.tick(conn, notifier, now=SystemClock().now())
        try:
            devices = await clocks.watch_devices(conn, redis, notifier, now=SystemClock().now())
            full = await clocks.watch_full_lots(conn, redis, notifier, now=SystemClock().now())
        except (RedisError, OSError) as exc:
            log.warning("cases_devices_unwatched", error=f"{type(exc).__name__}: {exc}")
            devices = {"opened": 0, "closed": 0}
            full = {"opened": 0, "closed": 0, "full": 0}
        disputes = await clocks.watch_disputes(conn, notifier, now=SystemClock().now())
        recorded = await clocks.watch_anomalies(conn, notifier, now=SystemClock().now())
    return {
        **done,
        **{f"devices_{k}": v for k, v in devices.items()},
        **{f"full_lots_{k}": v for k, v in full.items()},
        **{f"disputes_{k}": v for k, v in disputes.items()},
        **{f"anomalies_{k}": v for k, v in recorded.items()},
    }


async def _deliver(pool: asyncpg.Pool, outbound: notifiers.Outbound) -> dict[str, int]:
    """Send what the tick (and the API) said, outside any transaction."""
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        done = await outbound.deliver(conn, now=SystemClock().now(), limit=DELIVERY_BATCH)
    return {f"notifications_{k}": v for k, v in done.items() if k != "pending"} | {
        "notifications_retrying": done["pending"]
    }


async def _ticks(once: bool, every: float) -> dict[str, int] | None:
    settings = config.load()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = redisclient.connect(
        settings.redis_url, cluster=settings.redis_cluster, socket_timeout=10
    )
    try:
        async with notifiers.outbound(settings.cases_notify_config) as outbound:

            async def run_once() -> dict[str, int]:
                done = await _tick_once(pool, redis)
                if outbound is not None:
                    done |= await _deliver(pool, outbound)
                return done

            if once:
                return await run_once()

            async def run() -> None:
                done = await run_once()
                if any(done.values()):
                    log.info("cases_tick", **done)

            await repeat(run, every=every, name="cases-clock")
            return None
    finally:
        await redis.aclose()
        await pool.close()


@cases.command("tick")
@click.option("--once", is_flag=True, help="Run once, print what was done and exit.")
@click.option(
    "--every", type=float, default=None, help="seconds between runs (default PARKING_CASES_EVERY_S)"
)
def tick(once: bool, every: float | None) -> None:
    """Escalate the cases whose clocks ran out; close resolved ones after 72 hours; open a
    case for a device reported silent (closed when it is heard again) and for a disputed
    bill (closed when finance decides); then, when PARKING_CASES_NOTIFY_CONFIG names
    channels, send the notifications due by SMS and WeChat template message."""
    settings = config.load()
    configure_logging(settings.log_level, settings.log_format, process="cases-clock")
    try:
        done = asyncio.run(_ticks(once, every or settings.cases_every_s))
    except config.ConfigError as exc:  # a notify.json that is missing or wrong
        raise click.ClickException(str(exc)) from None
    if once and done is not None:
        click.echo(msgspec.json.encode(done).decode())
