"""``parking payments``: the sweeper process and finance's view of payment anomalies."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta

import asyncpg
import click
import httpx
import msgspec

from parking import config
from parking.clock import SystemClock
from parking.errors import ParkingError
from parking.money import format_yuan
from parking.observability import configure_logging
from parking.payments import anomalies as payment_anomalies
from parking.payments import providers as payment_providers
from parking.payments import sweeper
from parking.payments.model import Anomaly, AnomalyStatus, SweepReport


@click.group()
def payments() -> None:
    """The payment flow: sweeper, anomalies."""


async def _sweep(*, once: bool, interval: float, stuck_after: float) -> SweepReport | None:
    settings = config.load()
    clock = SystemClock()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
            providers = payment_providers.build_providers(settings, http=http, clock=clock)
            base = settings.notify_base_url
            if once:
                return await sweeper.sweep_once(
                    pool,
                    providers,
                    now=clock.now(),
                    notify_base_url=base,
                    stuck_after=timedelta(seconds=stuck_after),
                )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await sweeper.run(
                pool,
                providers,
                clock=clock,
                stop=stop,
                notify_base_url=base,
                interval=timedelta(seconds=interval),
                stuck_after=timedelta(seconds=stuck_after),
            )
            return None
    finally:
        await pool.close()


@payments.command()
@click.option("--once", is_flag=True, help="Sweep once, print what it did and exit.")
@click.option(
    "--interval",
    type=float,
    default=sweeper.INTERVAL.total_seconds(),
    show_default=True,
    help="seconds between sweeps",
)
@click.option(
    "--stuck-after",
    type=float,
    default=sweeper.STUCK_AFTER.total_seconds(),
    show_default=True,
    help="seconds a pending payment waits for its notification before it is queried",
)
def sweep(*, once: bool, interval: float, stuck_after: float) -> None:
    """Query payments stuck pending and settle or expire them; re-send unconfirmed refunds."""
    settings = config.load()
    configure_logging(settings.log_level, settings.log_format, process="payments-sweeper")
    report = asyncio.run(_sweep(once=once, interval=interval, stuck_after=stuck_after))
    if report is not None:
        click.echo(msgspec.json.encode(report).decode())


@payments.group()
def anomalies() -> None:
    """What providers reported that the flow could not simply apply."""


async def _anomalies(status: AnomalyStatus | None, limit: int) -> list[Anomaly]:
    conn = await asyncpg.connect(config.load().database_url)
    try:
        return await payment_anomalies.anomalies(conn, status=status, limit=limit)
    finally:
        await conn.close()


@anomalies.command("list")
@click.option(
    "--status",
    type=click.Choice(["open", "resolved", "all"]),
    default="open",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_anomalies(*, status: str, limit: int, as_json: bool) -> None:
    """Payment anomalies, newest first."""
    wanted = None if status == "all" else AnomalyStatus(status)
    found = asyncio.run(_anomalies(wanted, limit))
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(found), indent=2).decode())
        return
    for a in found:
        amount = "" if a.amount_fen is None else format_yuan(a.amount_fen)
        click.echo(
            f"{a.id}  {a.created_at:%Y-%m-%d %H:%M}  {a.status.value:<8}  {a.kind.value:<22}  "
            f"{a.provider:<8}  {a.out_trade_no or '-':<28}  {amount:>10}  {a.detail}"
        )


async def _resolve(anomaly_id: str, by: str, remark: str) -> Anomaly:
    conn = await asyncpg.connect(config.load().database_url)
    try:
        async with conn.transaction():
            return await payment_anomalies.resolve_anomaly(
                conn, anomaly_id, by=by, remark=remark, now=SystemClock().now()
            )
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


@anomalies.command("resolve")
@click.argument("anomaly_id")
@click.option("--by", required=True, help="who resolved it (a finance login)")
@click.option("--remark", required=True, help="why it is settled")
def resolve(*, anomaly_id: str, by: str, remark: str) -> None:
    """Mark an anomaly resolved, with who and why (audited)."""
    try:
        resolved = asyncio.run(_resolve(anomaly_id, by, remark))
    except ParkingError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(msgspec.json.encode(resolved).decode())
