"""A worker's copy of something kept current over a Redis channel, and how it vouches
for being current (the denylist's copy, ``parking.accounts.denylist``; the copy of
each driver's plates and stays, ``parking.sessions.mine``).

How a copy stays current:

1. The writer changes the source of truth, then publishes on the channel; the
   change is acknowledged only once the publish returned.
2. The copy subscribes first, then loads (`_load`): a change acknowledged before
   the load is in what it loaded; one published after the subscription arrives as
   a message.
3. It sends PING on its subscription every ``ping_every_s``. Redis answers a
   connection in order, so when the PONG of a PING sent at ``t`` arrives, every
   change published before ``t`` has been applied here.

`current` holds only while the last answered PING was sent less than
``max_lag_s`` ago (1 s). Otherwise - not loaded yet, Redis slow or gone, the
event loop stalled - the copy cannot vouch for itself and its user asks the
source of truth. So a change acknowledged at ``t`` is seen by every worker
answering after ``t + max_lag_s``, normally within a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any, Final

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parking import redisclient

log = structlog.get_logger("parking.accounts")

#: How stale a copy may be and still answer alone: the promised bound for a
#: change to reach every worker. Each PING answered in time renews it.
MAX_LAG_S: Final = 1.0
#: Five PINGs per bound: a PONG late by a few event-loop stalls keeps the copy usable.
PING_EVERY_S: Final = 0.2
#: No PONG for this long and the subscription is taken for dead and reopened.
DEAD_AFTER_S: Final = 3.0
_RETRY_FIRST_S: Final = 0.1
_RETRY_MAX_S: Final = 5.0


class ChannelCopy:
    """Follows one channel; a subclass says what it loads (`_load`), what a message
    changes (`_apply`), what to do every PING (`_tick`) and on losing the
    subscription (`_lost`)."""

    #: the Redis channel followed
    channel: str = ""
    #: what the copy is, in logs and its task's name
    what: str = "copy"

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_lag_s: float = MAX_LAG_S,
        ping_every_s: float = PING_EVERY_S,
        dead_after_s: float = DEAD_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._max_lag_s = max_lag_s
        self._ping_every_s = ping_every_s
        self._dead_after_s = dead_after_s
        self._clock = clock
        # When the last PING answered was sent (clock): everything published
        # before it is applied here. -inf: the copy cannot vouch for anything.
        self._current_as_of = -math.inf
        self._pings: dict[int, float] = {}
        self._last_pong = -math.inf
        self._retry_s = _RETRY_FIRST_S
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- what subclasses say

    async def _load(self) -> None:
        """Load what the messages will keep current (subscribed already)."""

    def _apply(self, data: str) -> None:
        """One message published on the channel."""

    def _tick(self, seq: int) -> None:
        """After PING number ``seq`` was sent."""

    def _lost(self) -> None:
        """The subscription is gone: messages may be missed from now on."""
        self._current_as_of = -math.inf
        self._last_pong = -math.inf
        self._pings.clear()

    # ---------------------------------------------------------------- following

    @property
    def current(self) -> bool:
        return self._clock() - self._current_as_of < self._max_lag_s

    def start(self) -> None:
        """Follow the channel in a task of the running loop until `stop`."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=self.what)

    async def stop(self) -> None:
        """Stop following; the copy then cannot vouch for itself."""
        task, self._task = self._task, None
        if task is None:
            return
        # redis-py can swallow a cancellation that lands in a connection's
        # handshake (the task is left "cancelling" and runs on): ask again until
        # the task has ended.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)

    async def run(self) -> None:
        """Follow the channel until cancelled, reopening the subscription when it fails."""
        try:
            while True:
                try:
                    await self._follow()
                except (RedisError, OSError) as exc:
                    log.warning(
                        f"{self.what} lost its subscription", error=f"{type(exc).__name__}: {exc}"
                    )
                except Exception:
                    # A bug here must not end the task: requests would then ask
                    # the source for ever, silently. Log it loudly and start over.
                    log.exception(f"{self.what} failed")
                self._lost()
                _honour_cancellation()
                await asyncio.sleep(self._retry_s)
                self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)
        finally:
            self._lost()

    async def _follow(self) -> None:
        # A connection of its own, outside the pool: a subscribed connection
        # cannot run other commands, and redis-py's PubSub would reconnect
        # silently, losing what was published meanwhile without telling us.
        conn = redisclient.own_connection(self._redis)
        try:
            await conn.connect()
            _honour_cancellation()
            await conn.send_command("SUBSCRIBE", self.channel, check_health=False)
            reply = await conn.read_response(timeout=self._dead_after_s, push_request=True)
            if not (isinstance(reply, list) and reply and _text(reply[0]) == "subscribe"):
                raise RedisError(f"unexpected reply to SUBSCRIBE: {reply!r}")
            loading_from = self._clock()
            await self._load()
            _honour_cancellation()
            self._current_as_of = loading_from
            self._last_pong = loading_from
            self._retry_s = _RETRY_FIRST_S
            reader = asyncio.create_task(self._read(conn))
            pinger = asyncio.create_task(self._ping(conn))
            try:
                done, _ = await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                raise RedisError(f"{self.what}'s subscription ended")
            finally:
                for task in (reader, pinger):
                    task.cancel()
                await asyncio.gather(reader, pinger, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    async def _read(self, conn: Any) -> None:
        # Messages are push replies under RESP3 (redis-py's default) and plain
        # arrays under RESP2; a PING's answer is its argument under RESP3 and
        # ["pong", argument] under RESP2. Either way Redis keeps them in order.
        while True:
            reply = await conn.read_response(timeout=math.inf, push_request=True)
            if isinstance(reply, bytes | str):
                self._answered(_text(reply))
                continue
            if not isinstance(reply, list) or not reply:
                continue
            kind = _text(reply[0])
            if kind == "message" and len(reply) == 3:
                self._apply(_text(reply[2]))
            elif kind == "pong" and len(reply) == 2:
                self._answered(_text(reply[1]))

    def _answered(self, text: str) -> None:
        try:
            seq = int(text)
        except ValueError:
            return
        sent = self._pings.pop(seq, None)
        if sent is None:
            return
        for older in [s for s in self._pings if s < seq]:
            del self._pings[older]
        self._current_as_of = max(self._current_as_of, sent)
        self._last_pong = self._clock()

    async def _ping(self, conn: Any) -> None:
        seq = 0
        while True:
            _honour_cancellation()
            seq += 1
            self._pings[seq] = self._clock()
            await conn.send_command("PING", str(seq), check_health=False)
            await asyncio.sleep(self._ping_every_s)
            if self._clock() - self._last_pong > self._dead_after_s:
                raise RedisError(
                    f"no PONG on the {self.what}'s subscription for {self._dead_after_s} s"
                )
            self._tick(seq)


def _honour_cancellation() -> None:
    """Raise if this task was asked to stop while redis-py had it (see `stop`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
