"""One Redis connection that every coroutine of a process shares for short reads.

A read through redis-py's pool checks a connection out (a lock, observability
recorders, a readability check), writes, and reads each reply through its
parser's coroutine layers: for the driver's current session that round trip was
about a third of the route's CPU (docs/performance.md). Here requests are
written in turn on one connection, packed (``occupancy.store.Batch.shared``), and
Redis answers in the order it read them, so replies are matched to requests by
order alone: hiredis parses what arrives in ``data_received`` and each request's
future is resolved with its replies. No checkout, no per-reply coroutine.

Only for commands that answer at once (no ``BLPOP``, ``XREAD BLOCK``, ``SUBSCRIBE``:
they would hold every request behind them). A request that gives up (cancelled)
leaves its entry in the queue, and its replies are read and dropped when they
arrive, so the order stays right. A request past its deadline, or a connection
that breaks, fails every request in flight on it and closes it (what was sent
may have been applied or not: a read is simply asked again); the next request
connects again. Failures are ``redis.exceptions`` errors, as from redis-py, so
callers keep one ``except``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any, Final

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Reply = list[Any] | bytes | int | Exception | None

#: Connecting (TCP and AUTH) gives up after this long.
CONNECT_TIMEOUT_S: Final = 2.0

_lines: weakref.WeakKeyDictionary[aioredis.Redis, Line] = weakref.WeakKeyDictionary()


def line_of(redis: aioredis.Redis) -> Line:
    """The process's shared line to the Redis this client talks to."""
    line = _lines.get(redis)
    if line is None:
        line = _lines[redis] = Line(redis.connection_pool.connection_kwargs)
    return line


async def close_line(redis: aioredis.Redis) -> None:
    line = _lines.pop(redis, None)
    if line is not None:
        line.close()


def _packed(command: tuple[str, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        raw = arg.encode("utf-8")
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)


class _Waiting:
    __slots__ = ("count", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Reply]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Reply] = []


class _Connection(asyncio.Protocol):
    """One TCP connection; its requests in flight, oldest first."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[_Waiting] = deque()
        self.closed = False
        self._reader = hiredis.Reader(replyError=ResponseError)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as error:
                self.fail(RedisConnectionError(f"Redis sent what is not RESP: {error}"))
                return
            if reply is False:
                return
            if not waiting:
                self.fail(RedisConnectionError("Redis answered a request nobody made"))
                return
            head = waiting[0]
            head.replies.append(reply)
            if len(head.replies) == head.count:
                waiting.popleft()
                if not head.future.done():
                    head.future.set_result(head.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by Redis'}"))

    def fail(self, error: Exception) -> None:
        self.closed = True
        while self.waiting:
            head = self.waiting.popleft()
            if not head.future.done():
                head.future.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class Line:
    """The shared connection, connected on first use and again after a failure."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._path: str | None = kwargs.get("path")
        self._host = kwargs.get("host", "127.0.0.1")
        self._port = int(kwargs.get("port", 6379))
        hello: list[tuple[str, ...]] = []
        password, username = kwargs.get("password"), kwargs.get("username")
        if password:
            hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if int(kwargs.get("db") or 0):
            hello.append(("SELECT", str(int(kwargs["db"]))))
        self._hello = b"".join(_packed(command) for command in hello), len(hello)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    if self._path:
                        _, conn = await loop.create_unix_connection(_Connection, self._path)
                    else:
                        _, conn = await loop.create_connection(_Connection, self._host, self._port)
                    if self._hello[1]:
                        for reply in await self._send(conn, *self._hello):
                            if isinstance(reply, Exception):
                                refused = RedisConnectionError(f"Redis refused us: {reply}")
                                conn.fail(refused)
                                raise refused
            except TimeoutError as exc:
                if conn is not None:
                    conn.fail(RedisTimeoutError("connecting to Redis timed out"))
                raise RedisTimeoutError("connecting to Redis timed out") from exc
            except OSError as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            self._conn = conn
            return conn

    @staticmethod
    def _send(conn: _Connection, packed: bytes, count: int) -> asyncio.Future[list[Reply]]:
        future: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()
        conn.waiting.append(_Waiting(future, count))
        assert conn.transport is not None
        conn.transport.write(packed)
        return future

    async def execute(self, packed: bytes, count: int, *, deadline_s: float = 2.0) -> list[Reply]:
        """The replies to ``count`` packed commands, in order (error replies as
        ``ResponseError`` values)."""
        if not count:
            return []
        conn = await self._connection()
        future = self._send(conn, packed, count)
        try:
            async with asyncio.timeout(deadline_s):
                # A cancelled wait cancels the future: its replies are dropped on arrival.
                return await future
        except TimeoutError as exc:
            error = RedisTimeoutError(f"Redis did not answer within {deadline_s} s")
            conn.fail(error)
            raise error from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.fail(RedisConnectionError("line closed"))
            self._conn = None
