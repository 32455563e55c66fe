"""A job that runs every so often until the process is told to stop (SIGINT/SIGTERM):
the city's rollups, 码上反映's clocks. One loop, so each job says only what one run does."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

log = structlog.get_logger("parking.periodic")


async def repeat(run: Callable[[], Awaitable[None]], *, every: float, name: str) -> None:
    """``run()`` now and then every ``every`` seconds until SIGINT/SIGTERM. A run that
    fails because PostgreSQL or the network is away is logged and tried next time."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set():
        try:
            await run()
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("periodic_run_failed", job=name, error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
