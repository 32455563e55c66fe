"""One Redis connection that every coroutine of a process shares for short reads.

A read through redis-py's pool checks a connection out (a lock, observability
recorders, a readability check), writes, and reads each reply through its
parser's coroutine layers: for the driver's current session that round trip was
about a third of the route's CPU (docs/performance.md). Here requests are
written in turn on one connection, packed (``occupancy.store.Batch.shared``, or
``pack``), and
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
#: How often a connection with requests in flight checks their deadlines.
WATCH_EVERY_S: Final = 0.05

_lines: weakref.WeakKeyDictionary[aioredis.Redis, Line] = weakref.WeakKeyDictionary()


def open_line(redis: aioredis.Redis) -> Line:
    """Give this client a shared line (the API does at start-up; ``close_line`` at
    shutdown). Until a client has one, ``shared`` reads go through its pool."""
    line = _lines.get(redis)
    if line is None:
        line = _lines[redis] = Line(redis.connection_pool.connection_kwargs)
    return line


def line_of(redis: aioredis.Redis) -> Line | None:
    """The shared line opened for this client, if any."""
    return _lines.get(redis)


def close_line(redis: aioredis.Redis) -> None:
    line = _lines.pop(redis, None)
    if line is not None:
        line.close()


def pack(*command: str) -> bytes:
    """One command in RESP, as the line sends it."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        raw = arg.encode("utf-8")
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)


class _Waiting:
    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Reply]], count: int, deadline: float) -> None:
        self.future = future
        self.count = count
        self.deadline = deadline
        self.replies: list[Reply] = []


class _Connection(asyncio.Protocol):
    """One TCP connection; its requests in flight, oldest first.

    Requests made in the same turn of the event loop leave in one write at the end
    of it (a send is a system call, ~15 us here, more than packing a read). One
    watchdog per connection checks the deadlines every ``WATCH_EVERY_S`` instead of
    a timer per request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[_Waiting] = deque()
        self.closed = False
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._unsent: list[bytes] = []
        self._watching: asyncio.TimerHandle | None = None

    def send(self, packed: bytes, count: int, deadline_s: float) -> asyncio.Future[list[Reply]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Reply]] = loop.create_future()
        self.waiting.append(_Waiting(future, count, loop.time() + deadline_s))
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append(packed)
        if self._watching is None:
            self._watching = loop.call_later(WATCH_EVERY_S, self._watch)
        return future

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(unsent))

    def _watch(self) -> None:
        self._watching = None
        if self.closed or not self.waiting:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for waiting in self.waiting:
            if waiting.deadline <= now:
                self.fail(RedisTimeoutError("Redis did not answer in time"))
                return
        self._watching = loop.call_later(WATCH_EVERY_S, self._watch)

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
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None
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
        self._hello = b"".join(pack(*command) for command in hello), len(hello)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self, deadline: float) -> _Connection:
        """The open connection, or a new one. An attempt that does not connect within
        ``CONNECT_TIMEOUT_S`` is given up and made again until the caller's
        ``deadline`` (loop time): nothing was sent on it, so another try is always
        safe, and a moment's stall (the process not scheduled, a SYN dropped) costs
        the request that moment, not a failure. Refused is final at once."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        loop = asyncio.get_running_loop()
        async with self._connecting:
            while (conn := self._conn) is None or conn.closed:
                left = max(deadline - loop.time(), 0.0)
                try:
                    self._conn = await self._connect(min(CONNECT_TIMEOUT_S, left))
                except RedisTimeoutError:
                    if loop.time() >= deadline:
                        raise
            return conn

    async def _connect(self, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                if self._path:
                    _, conn = await loop.create_unix_connection(_Connection, self._path)
                else:
                    _, conn = await loop.create_connection(_Connection, self._host, self._port)
                if self._hello[1]:
                    hello = conn.send(*self._hello, deadline_s=timeout_s)
                    for reply in await hello:
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
        return conn

    async def execute(self, packed: bytes, count: int, *, deadline_s: float = 2.0) -> list[Reply]:
        """The replies to ``count`` packed commands, in order (error replies as
        ``ResponseError`` values). Past ``deadline_s`` (checked every
        ``WATCH_EVERY_S``) it fails with everything in flight on the connection;
        connecting again counts against the same deadline.
        A cancelled wait cancels the future: its replies are dropped on arrival."""
        if not count:
            return []
        conn = self._conn
        if conn is None or conn.closed:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + deadline_s
            conn = await self._connection(deadline)
            deadline_s = max(deadline - loop.time(), WATCH_EVERY_S)
        return await conn.send(packed, count, deadline_s)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.fail(RedisConnectionError("line closed"))
            self._conn = None
