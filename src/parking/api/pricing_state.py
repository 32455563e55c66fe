"""A per-worker Pricer snapshot for the API, refreshed when it gets old.

API workers do not share memory, so a change made through one worker reaches
the others within ``_MAX_AGE_S``; the worker that made it refreshes at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import asyncpg

from parking.pricing import Pricer

_MAX_AGE_S = 10.0


class PricerCache:
    def __init__(self) -> None:
        self._pricer: Pricer | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    async def get(self, pool: asyncpg.Pool) -> Pricer:
        if self._pricer is not None and time.monotonic() - self._loaded_at < _MAX_AGE_S:
            return self._pricer
        async with self._lock:
            if self._pricer is None or time.monotonic() - self._loaded_at >= _MAX_AGE_S:
                async with pool.acquire() as proxy:
                    conn = cast(asyncpg.Connection, proxy)
                    if self._pricer is None:
                        self._pricer = await Pricer.load(conn)
                    else:
                        await self._pricer.refresh(conn)
                self._loaded_at = time.monotonic()
        return self._pricer
