"""The process's shared Redis line (parking.redisline) against the real Redis: replies
matched by order under concurrency, a request that gives up or times out never
shifts the replies of the others, and failures are redis-py's errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from kits import TcpRelay
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from parking import redisline
from parking.config import Settings
from parking.occupancy.store import Batch
from parking.redisline import Line, Reply, close_line, line_of, open_line, pack

#: Holds Redis for about ``ARGV[1]`` ms and answers 1 (a slow command without DEBUG).
_BUSY = (
    "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
    "while true do local n = redis.call('TIME') "
    "if n[1] * 1000000 + n[2] - s > tonumber(ARGV[1]) * 1000 then break end end return 1"
)


@pytest.fixture
async def lined(redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    """The test stack's client with its shared line open, as the API's workers have."""
    open_line(redis_client)
    yield redis_client
    close_line(redis_client)


def _get(key: str) -> Batch:
    batch = Batch()
    batch.command("GET", key)
    return batch


@pytest.mark.usefixtures("lined")
async def test_concurrent_requests_each_get_their_own_replies(redis_client: aioredis.Redis) -> None:
    await redis_client.mset({f"line:{n}": f"v{n}" for n in range(200)})

    async def read(n: int) -> list[Reply]:
        batch = _get(f"line:{n}")
        batch.command("EXISTS", f"line:{n}")
        batch.command("HGET", f"line:{n}", "x")  # an error reply, kept in its place
        return await batch.shared(redis_client)

    answers = await asyncio.gather(*(read(n) for n in range(200)))
    for n, (value, exists, wrong) in enumerate(answers):
        assert value == f"v{n}".encode()
        assert exists == 1
        assert isinstance(wrong, ResponseError)
    assert line_of(redis_client) is open_line(redis_client)


@pytest.mark.usefixtures("lined")
async def test_a_request_that_gives_up_does_not_shift_the_next_ones_replies(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.set("line:after", "mine")
    slow = Batch()
    slow.command("EVAL", _BUSY, 0, 200)
    slow.command("SET", "line:late", "1")
    waiting = asyncio.create_task(slow.shared(redis_client))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await _get("line:after").shared(redis_client) == [b"mine"]
    assert await redis_client.get("line:late") == b"1"  # it was sent: Redis ran it


@pytest.mark.usefixtures("lined")
async def test_past_its_deadline_a_request_fails_and_the_line_connects_again(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.set("line:after", "mine")
    slow = Batch()
    slow.command("EVAL", _BUSY, 0, 300)
    behind = _get("line:after")
    first = asyncio.create_task(slow.shared(redis_client, deadline_s=0.1))
    await asyncio.sleep(0)
    second = asyncio.create_task(behind.shared(redis_client, deadline_s=5.0))
    with pytest.raises(RedisTimeoutError):
        await first
    # The request queued behind it on the same connection fails with it.
    with pytest.raises(RedisTimeoutError):
        await second
    assert await _get("line:after").shared(redis_client) == [b"mine"]


async def test_a_redis_that_is_not_there_or_refuses_us_is_a_redis_error(
    settings: Settings,
) -> None:
    nowhere = Line({"host": "127.0.0.1", "port": 1})
    with pytest.raises(RedisConnectionError):
        await nowhere.execute(b"*1\r\n$4\r\nPING\r\n", 1)
    real = aioredis.Redis.from_url(settings.redis_url)
    wrong = Line({**real.connection_pool.connection_kwargs, "password": "not-the-password"})
    with pytest.raises(RedisConnectionError, match="refused"):
        await wrong.execute(b"*1\r\n$4\r\nPING\r\n", 1)
    await real.aclose()


async def test_a_client_without_a_line_reads_through_its_pool(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.set("line:after", "mine")
    assert line_of(redis_client) is None
    batch = _get("line:after")
    batch.command("HGET", "line:after", "x")
    value, wrong = await batch.shared(redis_client)
    assert value == b"mine"
    assert isinstance(wrong, ResponseError)
    assert line_of(redis_client) is None


@contextlib.contextmanager
def _full_listener() -> Iterator[socket.socket]:
    """A listening socket whose accept queue is full (backlog 0, one connection
    waiting): the kernel drops every further SYN, so a connect hangs, as when the
    machine stalls or a packet is lost."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    waiting = socket.create_connection(listener.getsockname())
    try:
        yield listener
    finally:
        waiting.close()
        listener.close()


async def test_a_connect_that_hangs_is_made_again_until_the_callers_deadline(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CI run's scan entry answered 500: the API's first connect did not complete
    in CONNECT_TIMEOUT_S (2 s) although the request allowed 10 s, and the next
    request connected at once. An attempt that hangs is now given up and made again
    until the caller's deadline (nothing was sent on it); past the deadline it fails."""
    monkeypatch.setattr(redisline, "CONNECT_TIMEOUT_S", 0.3)
    real = aioredis.Redis.from_url(settings.redis_url)
    kwargs = real.connection_pool.connection_kwargs
    await real.aclose()
    relay = TcpRelay(kwargs["host"], kwargs["port"])
    with _full_listener() as listener:
        line = Line({**kwargs, "host": "127.0.0.1", "port": listener.getsockname()[1]})

        async def accept_later() -> None:
            # after the first attempt gave up (0.3 s on the same loop's clock)
            await asyncio.sleep(0.8)
            await relay.start(sock=listener)

        accepting = asyncio.create_task(accept_later())
        assert await line.execute(pack("PING"), 1, deadline_s=10.0) == [b"PONG"]
        await accepting
        line.close()
        await relay.cut()

    with _full_listener() as listener:
        never = Line({**kwargs, "host": "127.0.0.1", "port": listener.getsockname()[1]})
        with pytest.raises(RedisTimeoutError, match="connecting to Redis timed out"):
            await never.execute(pack("PING"), 1, deadline_s=1.0)
