"""Helpers of the cross-worker revocation tests: a TCP relay in front of Redis that a
test can cut or freeze, and a look at a worker's copy of the denylist."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

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


class RedisRelay:
    """Forwards TCP to Redis; `cut` closes every connection, `freeze` stops relaying
    bytes while keeping the sockets open (a partition, not a crash)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, redis_w}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(client_r, redis_w), pump(redis_r, client_w))

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def drop_connections(self) -> None:
        """Close every relayed connection; new ones are still accepted."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def cut(self) -> None:
        """Stop accepting and close everything: Redis is gone."""
        assert self._server is not None
        self._server.close()
        self.drop_connections()
        self._flowing.set()
        await self._server.wait_closed()
