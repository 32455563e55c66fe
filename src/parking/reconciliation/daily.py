"""The daily reconciler (``parking reconcile daily``, supervised by ``parking run``): each
day after PARKING_RECONCILE_AT (Asia/Shanghai) it fetches the day before's statement from
every configured provider, imports it and runs the day, which also re-checks what waits in
the holding pool. A day already run is left alone; a statement the provider is still
making is tried again at the next tick."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final, cast

import asyncpg
import msgspec
import structlog

from parking.clock import SHANGHAI, Clock
from parking.payments.port import BillNotReady, PaymentProvider, ProviderError
from parking.reconciliation import service, statements

log = structlog.get_logger("parking.reconciliation")

#: how often the reconciler looks whether a day is due
INTERVAL: Final = timedelta(minutes=5)


class DayDone(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    day: date
    #: ran | already | not_ready | failed | no_rate
    outcome: str
    run_id: str | None = None
    lines: int = 0
    discrepancies: int = 0
    detail: str = ""


def due_day(now: datetime, at: tuple[int, int]) -> date | None:
    """The day to reconcile at ``now``: yesterday (Asia/Shanghai), once the local time is
    past ``at``; None before."""
    local = now.astimezone(SHANGHAI)
    if (local.hour, local.minute) < at:
        return None
    return local.date() - timedelta(days=1)


async def reconcile_due(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    *,
    fee_rates: Mapping[str, int],
    at: tuple[int, int],
    stack_dir: Path,
    now: datetime,
) -> list[DayDone]:
    """One tick: fetch, import and run yesterday for each provider not yet run."""
    day = due_day(now, at)
    if day is None:
        return []
    return [
        await _one(pool, providers[name], day, fee_rates.get(name), stack_dir=stack_dir, now=now)
        for name in sorted(providers)
    ]


async def _one(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    day: date,
    rate: int | None,
    *,
    stack_dir: Path,
    now: datetime,
) -> DayDone:
    name = provider.name
    if rate is None:
        return DayDone(
            provider=name, day=day, outcome="no_rate", detail="no PARKING_FEE_RATES entry"
        )
    async with pool.acquire() as proxy:
        if await service.find_last_run(cast(asyncpg.Connection, proxy), name, day) is not None:
            return DayDone(provider=name, day=day, outcome="already")
    try:
        downloaded = await provider.download_trade_bill(day)
    except BillNotReady as exc:
        return DayDone(provider=name, day=day, outcome="not_ready", detail=str(exc))
    except ProviderError as exc:
        log.warning("statement not fetched", provider=name, day=str(day), error=str(exc))
        return DayDone(provider=name, day=day, outcome="failed", detail=str(exc))
    kind = statements.statement_kind(downloaded.kind)
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "statement"
        await asyncio.to_thread(file.write_bytes, downloaded.content)
        async with pool.acquire() as proxy, proxy.transaction():
            conn = cast(asyncpg.Connection, proxy)
            await service.import_statement(
                conn,
                provider=name,
                day=day,
                kind=kind,
                file=file,
                source="fetched",
                stack_dir=stack_dir,
                by="reconciler",
                now=now,
                replace=False,
            )
            run = await service.run(
                conn, provider=name, day=day, fee_rate_ppm=rate, by="reconciler", now=now
            )
    log.info(
        "day reconciled",
        provider=name,
        day=str(day),
        lines=run.lines,
        matched=run.matched,
        discrepancies=run.discrepancies,
        pending=run.pending,
        settled=run.settled,
        ms=run.duration_ms,
    )
    return DayDone(
        provider=name,
        day=day,
        outcome="ran",
        run_id=run.id,
        lines=run.lines,
        discrepancies=run.discrepancies,
    )


async def run_forever(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    *,
    clock: Clock,
    stop: asyncio.Event,
    fee_rates: Mapping[str, int],
    at: tuple[int, int],
    stack_dir: Path,
    interval: timedelta = INTERVAL,
) -> None:
    while not stop.is_set():
        try:
            await reconcile_due(
                pool, providers, fee_rates=fee_rates, at=at, stack_dir=stack_dir, now=clock.now()
            )
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("reconciler tick failed; trying again", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval.total_seconds())
