"""Helpers of the cross-worker revocation tests: a TCP relay in front of Redis that a
test can cut or freeze (``kits.TcpRelay``), and a look at a worker's copy of the
denylist."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kits import TcpRelay
from litestar.testing import AsyncTestClient

from parking.accounts.denylist import DenylistMirror
from parking.api.infra import infra_of

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[Client, str], Awaitable[dict[str, Any]]]
StartWorker = Callable[..., Awaitable[Client]]


def denylist_of(client: Client) -> DenylistMirror:
    copy = infra_of(client.app).denylist
    assert copy is not None
    return copy


async def until(check: Callable[[], bool], *, within_s: float, what: str) -> float:
    """Poll ``check`` every 5 ms; the seconds it took to hold (AssertionError if it did not)."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not {what} within {within_s} s")
        await asyncio.sleep(0.005)


async def until_current(client: Client, within_s: float = 5.0) -> None:
    """Wait until the worker's copy of the denylist vouches for itself."""
    copy = denylist_of(client)
    await until(lambda: copy.current, within_s=within_s, what="current")


#: The relay in front of Redis (``kits.TcpRelay``).
RedisRelay = TcpRelay
