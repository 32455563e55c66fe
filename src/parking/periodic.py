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


async def until_stopped(stopping: asyncio.Event, essential: list[asyncio.Task[None]]) -> None:
    """Wait until ``stopping`` is set, or until one of a worker's ``essential`` loops
    ends (they never end on their own): then raise what ended it. A worker whose main
    loop died must exit and be restarted, never stay alive doing nothing."""
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({stopped, *essential}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if stopping.is_set():
        return
    for task in essential:
        if task.done():
            error = task.exception() if not task.cancelled() else None
            log.error("essential_loop_ended", task=task.get_name(), error=repr(error))
            stopping.set()
            raise error or RuntimeError(f"{task.get_name()} ended")
