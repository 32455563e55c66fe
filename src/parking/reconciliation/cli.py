"""``parking reconcile``: finance's daily check of the providers' statements.

``fetch`` downloads a day's statement through the provider adapter and imports
it; ``import`` imports a file a person downloaded from the merchant console;
``run`` matches a day; ``report`` prints what the last run found.
"""

from __future__ import annotations

import asyncio
import getpass
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import click
import httpx
import msgspec

from parking import config
from parking.clock import SystemClock
from parking.errors import ParkingError
from parking.observability import configure_logging
from parking.payments.port import ProviderError, TradeBillFile
from parking.payments.providers import build_providers
from parking.reconciliation import daily, service, statements
from parking.reconciliation.model import ImportResult, Run, StatementKind


def _who() -> str:
    return f"cli:{getpass.getuser()}"


def _day(_: click.Context, __: click.Parameter, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not YYYY-MM-DD") from exc


_provider = click.option("--provider", required=True, help="wechat or alipay")
_date = click.option(
    "--date", "day", required=True, callback=_day, help="the business day, YYYY-MM-DD"
)


@click.group("reconcile")
def reconcile() -> None:
    """Statements from the providers, matched against our payments and refunds."""


@contextmanager
def _bar(label: str, length: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; ``update(done)`` takes the running total."""
    if not length:
        yield lambda _: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        shown = 0

        def update(done: int) -> None:
            nonlocal shown
            step = min(done, length) - shown
            if step > 0:
                bar.update(step)
                shown += step

        yield update


async def _connect() -> asyncpg.Connection:
    return await asyncpg.connect(config.load().database_url)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


async def _import(
    provider: str,
    day: date,
    kind: StatementKind,
    file: Path,
    *,
    source: str,
    replace: bool,
    progress: Callable[[int], None],
) -> ImportResult:
    settings = config.load()
    conn = await _connect()
    try:
        async with conn.transaction():
            return await service.import_statement(
                conn,
                provider=provider,
                day=day,
                kind=kind,
                file=file,
                source=source,
                stack_dir=settings.stack_dir,
                by=_who(),
                now=SystemClock().now(),
                replace=replace,
                progress=progress,
            )
    finally:
        await conn.close()


def _print_import(result: ImportResult) -> None:
    s = result.statement
    if not result.created:
        click.echo(
            f"{s.provider} {s.business_date}: the same file was imported ({s.id}); no change"
        )
        return
    replaced = f", replacing {result.replaced}" if result.replaced else ""
    click.echo(f"{s.provider} {s.business_date}: imported {s.lines} lines as {s.id}{replaced}")


@reconcile.command("import")
@_provider
@_date
@click.option(
    "--file",
    "file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the statement as downloaded (WeChat: the trade bill CSV, gzip or not; Alipay: the zip)",
)
@click.option("--replace", is_flag=True, help="replace the day's statement imported before")
def import_command(provider: str, day: date, file: Path, replace: bool) -> None:
    """Import a statement file a person downloaded from the merchant console."""
    kind = StatementKind.ALIPAY if provider == "alipay" else StatementKind.WECHAT
    try:
        with _bar("importing", _line_estimate(file)) as update:
            result = asyncio.run(
                _import(
                    provider, day, kind, file, source="imported", replace=replace, progress=update
                )
            )
    except (ParkingError, config.ConfigError) as exc:
        raise _fail(exc) from exc
    _print_import(result)


def _line_estimate(file: Path) -> int | None:
    """About how many lines a plain text file has (for the bar); None for small files."""
    size = file.stat().st_size
    if size < 4 << 20:
        return None
    with file.open("rb") as handle:
        sample = handle.read(1 << 16)
    return max(1, size * max(1, sample.count(b"\n")) // max(1, len(sample)))


async def _download(provider: str, day: date) -> TradeBillFile:
    settings = config.load()
    async with httpx.AsyncClient(timeout=30.0) as http:
        adapters = build_providers(settings, http=http, clock=SystemClock())
        adapter = adapters.get(provider)
        if adapter is None:
            raise click.ClickException(
                f"no provider {provider!r} is configured (configured: {', '.join(adapters)})"
            )
        return await adapter.download_trade_bill(day)


@reconcile.command("fetch")
@_provider
@_date
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also write the statement, as downloaded, to this file",
)
@click.option("--replace", is_flag=True, help="replace the day's statement imported before")
def fetch(provider: str, day: date, out: Path | None, replace: bool) -> None:
    """Download a day's statement from the provider and import it."""
    try:
        downloaded = asyncio.run(_download(provider, day))
        kind = statements.statement_kind(downloaded.kind)
        if out is not None:
            out.write_bytes(downloaded.content)
        with tempfile.TemporaryDirectory() as folder:
            file = Path(folder) / "statement"
            file.write_bytes(downloaded.content)
            result = asyncio.run(
                _import(
                    provider, day, kind, file, source="fetched", replace=replace, progress=_none
                )
            )
    except (ParkingError, ProviderError) as exc:
        raise _fail(exc) from exc
    _print_import(result)


def _none(_: int) -> None:
    return None


async def _run(provider: str, day: date, progress: Callable[[int], None]) -> Run:
    settings = config.load()
    conn = await _connect()
    try:
        async with conn.transaction():
            return await service.run(
                conn,
                provider=provider,
                day=day,
                fee_rate_ppm=settings.fee_rate_ppm(provider),
                by=_who(),
                now=SystemClock().now(),
                progress=progress,
            )
    finally:
        await conn.close()


async def _statement_lines(provider: str, day: date) -> int:
    conn = await _connect()
    try:
        found = await service.current_statement(conn, provider, day)
        return found.lines if found is not None else 0
    finally:
        await conn.close()


@reconcile.command("run")
@_provider
@_date
def run_command(provider: str, day: date) -> None:
    """Match the day's imported statement against our payments and refunds, and settle."""
    try:
        lines = asyncio.run(_statement_lines(provider, day))
        with _bar("matching", lines if lines >= 100_000 else None) as update:
            done = asyncio.run(_run(provider, day, update))
    except (ParkingError, config.ConfigError) as exc:
        raise _fail(exc) from exc
    click.echo(_run_line(done))


def _run_line(run: Run) -> str:
    settled = "settled" if run.settled else "not settled"
    return (
        f"{run.provider} {run.business_date}: {run.lines} lines, {run.matched} matched "
        f"({run.matched_fen} fen, fees {run.fees_fen} fen, {run.refunds} refunds), "
        f"{run.discrepancies} discrepancies, {run.pending} pending, {settled} "
        f"[{run.duration_ms} ms, run {run.id}]"
    )


async def _report(provider: str, day: date) -> Any:
    conn = await _connect()
    try:
        return await service.report(conn, provider, day)
    finally:
        await conn.close()


@reconcile.command("report")
@_provider
@_date
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def report(provider: str, day: date, as_json: bool) -> None:
    """What the day's last run found: totals, discrepancies, what still waits, settled."""
    try:
        found = asyncio.run(_report(provider, day))
    except (ParkingError, config.ConfigError) as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    click.echo(
        f"{found.provider} {found.date}: {found.lines} lines, {found.matched} matched "
        f"({found.matched_fen} fen, fees {found.fees_fen} fen), "
        f"{'settled' if found.settled else 'not settled'}"
    )
    for d in found.discrepancies:
        click.echo(
            f"  {d.kind:<20} {d.status:<9} {d.out_trade_no or '':<32} "
            f"{d.out_refund_no or '':<24} ours {d.ours_fen} provider {d.provider_fen}  {d.id}"
        )
    for p in found.pending:
        click.echo(
            f"  pending {p.kind} {p.out_trade_no} {p.out_refund_no or ''} since {p.business_date}"
        )


async def _daily(once: bool, interval: float) -> list[daily.DayDone]:
    settings = config.load()
    clock = SystemClock()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        async with httpx.AsyncClient(timeout=60.0, trust_env=False) as http:
            providers = build_providers(settings, http=http, clock=clock)
            rates = dict(settings.fee_rates)
            if once:
                return await daily.reconcile_due(
                    pool,
                    providers,
                    fee_rates=rates,
                    at=settings.reconcile_at,
                    stack_dir=settings.stack_dir,
                    now=clock.now(),
                )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await daily.run_forever(
                pool,
                providers,
                clock=clock,
                stop=stop,
                fee_rates=rates,
                at=settings.reconcile_at,
                stack_dir=settings.stack_dir,
                interval=timedelta(seconds=interval),
            )
            return []
    finally:
        await pool.close()


@reconcile.command("daily")
@click.option("--once", is_flag=True, help="Look once, print what was done and exit.")
@click.option(
    "--interval",
    type=float,
    default=daily.INTERVAL.total_seconds(),
    show_default=True,
    help="seconds between looks",
)
def daily_command(once: bool, interval: float) -> None:
    """Each day after PARKING_RECONCILE_AT, fetch and reconcile yesterday for every provider."""
    settings = config.load()
    configure_logging(settings.log_level, settings.log_format, process="reconciler")
    done = asyncio.run(_daily(once, interval))
    if once:
        click.echo(msgspec.json.encode(done).decode())
